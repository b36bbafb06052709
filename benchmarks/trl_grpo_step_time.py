"""Median step time of TRL's GRPOTrainer at our step-time settings: the reference for benchmarks/step_time.py.

Runs in its own venv, not ours (TRL pins its own stack):
    python3 -m venv /work/trl-venv
    /work/trl-venv/bin/pip install torch==2.13.0 trl==1.16.0 'transformers==5.19.*' datasets reasoning-gym==0.1.25
    nice -n 15 /work/trl-venv/bin/python benchmarks/trl_grpo_step_time.py --dtype float32 --warmup 2 --steps 2

`nice -n 15` because Ray starts its workers (our engines and learner) at niceness 15: on a shared machine
both sides then get the same share of a busy CPU.

The model is the folder rlvr converts `builtin:smollm2-135m-instruct` into (rlvr/models/smollm2.py). The settings
are examples/smollm2_chain_sum.toml's: reasoning-gym chain_sum (its question wording, 1000 rows, seed 0) under
the chat template, 4 prompts x 4 completions per step, at most 64 new tokens, temperature 1.0, lr 1e-6, beta 0
(no reference model), one optimizer step per generation batch, reasoning-gym's own scorer as the reward.
Generation is TRL's default on CPU, transformers' `generate` (no vLLM). Where TRL's defaults differ from ours we
take ours: no gradient checkpointing (TRL's default recomputes every layer in the backward).
--dtype bfloat16 loads the weights in bf16 and sets `bf16=True`, so generation and training compute in bf16
(without fp32 master weights, unlike our learner). A step is timed from `on_step_begin` to `on_step_end`:
generation, scoring, the forward/backward and the optimizer step.

Measured on 2 cores of an AMD EPYC with AVX2 only, shared with other developers, the command above (TRL 1.16.0,
transformers 5.19.0, torch 2.13.0+cpu): fp32 steps 115.9, 91.7, 30.6, 68.6 s, median of the last two 49.6 s
(69.6 CPU s), load average 8.3 before and 3.4 after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import reasoning_gym
import torch
import transformers
import trl
from datasets import Dataset
from reasoning_gym.utils import extract_answer
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

TASK = "chain_sum"


def chain_sum_dataset(size: int, seed: int) -> Dataset:
    rows = reasoning_gym.create_dataset(TASK, size=size, seed=seed)
    return Dataset.from_list([{"prompt": [{"role": "user", "content": e["question"]}], "question": e["question"],
                               "answer": e["answer"]} for e in rows])


def correctness(completions: list, question: list[str], answer: list[str], **_) -> list[float]:
    """reasoning-gym's chain_sum score of the `<answer>` content, or of the whole completion when it has none."""
    score = reasoning_gym.get_score_answer_fn(TASK)
    rewards = []
    for completion, q, a in zip(completions, question, answer):
        text = completion[-1]["content"]
        found = extract_answer(text)
        rewards.append(float(score(answer=(text if found is None else found).strip(), entry={"question": q, "answer": a})))
    return rewards


class StepTimer(TrainerCallback):
    """Wall and CPU seconds of each optimizer step (with this config, one generation batch per step).

    CPU seconds count every thread of this process, not time spent waiting for a core: on a shared machine
    they are the steadier measure.
    """

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu_start)
        # A line per step, so that a run stopped early still leaves its figures.
        print(json.dumps({"step": state.global_step, "step_s": round(self.seconds[-1], 2),
                          "cpu_s": round(self.cpu_seconds[-1], 2), "load_1min": round(os.getloadavg()[0], 2)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.expanduser("~/.cache/rlvr/smollm2-135m-instruct"))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the median (default: 2)")
    parser.add_argument("--steps", type=int, default=6, help="steps in the median (default: 6)")
    parser.add_argument("--prompts", type=int, default=4, help="P, prompts per step (default: 4)")
    parser.add_argument("--group-size", type=int, default=4, help="G, completions per prompt (default: 4)")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_completion_length (default: 64)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    bf16 = args.dtype == "bfloat16"
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.prompts * args.group_size,
            gradient_accumulation_steps=1,
            num_generations=args.group_size,
            steps_per_generation=1,
            num_iterations=1,
            max_completion_length=args.max_tokens,
            temperature=1.0,
            learning_rate=1e-6,
            lr_scheduler_type="constant",  # ours has no decay; TRL's default is linear to 0 over max_steps
            beta=0.0,
            max_steps=args.warmup + args.steps,
            gradient_checkpointing=False,
            bf16=bf16,
            use_cpu=not torch.cuda.is_available(),  # transformers refuses bf16=True on CPU without it
            model_init_kwargs={"dtype": args.dtype},
            use_vllm=False,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=0,
        )
        timer = StepTimer()
        trainer = GRPOTrainer(model=args.model, reward_funcs=correctness, args=config,
                              train_dataset=chain_sum_dataset(1000, seed=0), callbacks=[timer])
        trainer.train()
    measured = timer.seconds[args.warmup:]
    logged = [r for r in trainer.state.log_history if "reward" in r]  # one record per step (logging_steps=1)
    print(json.dumps({
        "trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
        "dtype": args.dtype, "P": args.prompts, "G": args.group_size, "max_tokens": args.max_tokens,
        "threads": torch.get_num_threads(), "steps_measured": len(measured),
        "step_s_median": round(statistics.median(measured), 3), "step_s_all": [round(s, 2) for s in timer.seconds],
        "cpu_s_median": round(statistics.median(timer.cpu_seconds[args.warmup:]), 3),
        "response_length_all": [round(r["completions/mean_length"], 1) for r in logged],
        "reward_mean": round(statistics.fmean(r["reward"] for r in logged), 3) if logged else None,
        "load_1min_before": round(load_before, 2), "load_1min_after": round(os.getloadavg()[0], 2),
    }), flush=True)


if __name__ == "__main__":
    main()
