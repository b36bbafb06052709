"""The RLVR loop: build the components, optionally cold-start them with SFT, then sample -> score -> update -> sync.

The rollout source decides how fresh each step's rollouts are (rlvr/rollout/source.py): from the weights of
the step before (train.max_staleness = 0, on-policy), or generated while the learner trains, from weights
up to max_staleness updates old. Naming: P prompts per step, G completions per prompt.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from rlvr.config import Config, to_dict
from rlvr.data.curriculum import build_prompt_source, build_tracker, curriculum_state
from rlvr.data.sources import load_splits
from rlvr.evaluate.greedy import evaluate
from rlvr.evaluate.sampled import SampledEval
from rlvr.learner.build import build_learner, build_stage
from rlvr.models.builtin import resolve_run_models
from rlvr.observe.console import RewardFailures
from rlvr.observe.metrics import MetricsLogger, failure_totals, rollout_metrics
from rlvr.observe.trackers import build_trackers
from rlvr.rollout.build import build_rollout_workers
from rlvr.rollout.source import build_source
from rlvr.rollout.worker import SamplingSpec
from rlvr.runtime.checkpoint import write_json_atomic
from rlvr.runtime.cluster import ray_cluster
from rlvr.runtime.interrupt import Interrupted, StopSignals
from rlvr.runtime.opening import Components, choose_opening
from rlvr.runtime.placement import engines_asleep, place
from rlvr.runtime.precision import resolve_dtype
from rlvr.runtime.remote import wait_all
from rlvr.runtime.resume import Checkpoints, Parts
from rlvr.scoring.correctness import Correctness, correctness_label
from rlvr.scoring.service import ShaperStates, build_reward_service
from rlvr.sync.build import build_weight_sync


def train(cfg: Config, output_dir: str | Path, console: Console | None = None, *, resume: bool = False,
          max_steps: int | None = None, interrupt: StopSignals | None = None) -> dict:
    """Run SFT (if configured), evaluation and RL; `console` receives our progress lines (default: stderr).

    resume: continue from the newest complete checkpoint in output_dir (rlvr/runtime/resume.py), skipping SFT and
    the evaluation before RL. max_steps: stop after that many RL steps of the train.steps-long run (the
    schedules still span train.steps, so a stopped run resumes into exactly the full run). interrupt: the CLI's
    SIGINT/SIGTERM handlers (rlvr/runtime/interrupt.py); a signal during RL ends the step, checkpoints it and raises
    Interrupted; before RL it raises at once.
    """
    started = time.perf_counter()
    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    cfg, precision = resolve_dtype(cfg)  # "auto" (the CLI has settled it already)
    if precision:
        console.print(precision)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoints(out, cfg.train, cfg.cluster.call_timeout_s)
    resumed = ckpt.latest(to_dict(cfg)) if resume else None  # before Ray: no checkpoint or a changed config fails fast
    stop = cfg.train.steps if max_steps is None else min(max_steps, cfg.train.steps)
    write_json_atomic(out / "run_config.json", to_dict(cfg))  # config.json is the model's
    d = cfg.data
    console.print(f"reading the data ({d.source})")
    splits = load_splits(
        d.source, prompt_key=d.prompt_key, answer_key=d.answer_key, answer_format=d.answer_format,
        task_kwargs=d.task_kwargs, train_size=d.train_size, eval_source=d.eval_source, eval_size=cfg.eval.size,
        seed=d.seed, sft_size=cfg.sft.steps * cfg.sft.batch_size,
    )
    correctness = Correctness(correctness_label(cfg.reward.terms, cfg.reward.correctness))
    eval_tokens = cfg.eval.max_tokens or cfg.rollout.max_tokens
    opening = choose_opening(resumed, cfg, splits, eval_tokens, correctness)  # afresh (SFT, greedy eval) or resumed
    start = opening.step
    model_path = resolve_run_models(cfg, say=console.print)  # a builtin is built now, saying so
    tracker = build_tracker(cfg.curriculum, correctness)  # per-prompt pass rates: the driver owns them
    interrupt = interrupt or StopSignals()  # not entered: no handlers, never requested

    console.print("starting Ray")
    with ray_cluster(cfg, say=console.print):
        interrupt.retake()  # ray.init installed its own SIGTERM handler (sys.exit)
        plan = place(cfg)  # disaggregated or colocated GPUs, reserved up front
        learner = build_learner(cfg, model_path, plan.learners)  # the learner group: learner.ranks actors
        workers = build_rollout_workers(cfg, model_path, plan.engines)
        reward_service = build_reward_service(cfg.reward)
        stage = build_stage(cfg, model_path, learner, plan)  # advantages: a table estimator, or PPO's critic; a teacher
        console.print(f"loading the model ({model_path}) into {len(learner)} learner rank(s) and {len(workers)} "
                      "vLLM engine(s)")
        loading = time.perf_counter()
        start_timeout_s = cfg.cluster.start_timeout_s or cfg.cluster.call_timeout_s
        learner.ready(start_timeout_s)
        wait_all([w.ready.remote() for w in workers], roles=[f"rollout engine {i}" for i in range(len(workers))],
                 call="ready (engine start)", timeout_s=start_timeout_s)
        learner.connect()
        weight_sync = build_weight_sync(cfg, learner, workers)
        console.print(f"loaded in {time.perf_counter() - loading:.0f} s")
        e = cfg.eval  # every-N evaluation: n samples per held-out prompt -> eval/pass@k, eval/avg@n, ...
        periodic_eval = SampledEval(workers, reward_service, splits.held_out,
                                    SamplingSpec(e.n, eval_tokens, e.temperature, seed=cfg.rollout.seed), correctness, e.k)
        prompts = build_prompt_source(cfg.curriculum, splits.train, cfg.data.batch_size, cfg.train.seed, tracker)
        source = build_source(cfg, workers, reward_service, prompts, tracker, correctness, stop)  # sync or async
        trackers = build_trackers(cfg.train.loggers, out, to_dict(cfg), start_step=start)
        logger = MetricsLogger(out, total_steps=stop, trackers=trackers, console=console, start_step=start)
        failures = RewardFailures(logger.print, cfg.reward.max_failed_frac)
        try:
            shapers = ShaperStates(reward_service, cfg.cluster.call_timeout_s)  # the reward shapers' resumable state
            # A checkpoint records the prompt position and pass rates of what was trained, not of what is in flight.
            parts = Parts(learner, stage, shapers, source.tracker, source.prompts)
            components = Components(learner, stage, workers, reward_service, weight_sync, plan, parts)
            progress = opening.open(components, {"model": model_path, "output_dir": str(out)}, logger)

            interrupt.defer()  # from here a first Ctrl-C or SIGTERM ends the run after the step in progress
            logger.stage("RL", max(0, stop - start))
            for step in range(start, stop):
                step_start = time.perf_counter()
                sampled = source.next_batch(step)  # scored groups; the pass-rate tracker has seen them
                times = sampled.times
                step_rewards = failures.check_step(step, sampled.all_PG, logger)  # raises if too many failed
                batch = stage.make_batch(sampled.train_PG)
                train_start = time.perf_counter()
                with engines_asleep(workers, plan, cfg.cluster.call_timeout_s):  # colocated: vLLM frees the GPUs
                    critic_metrics = stage.update(batch)  # PPO's critic trains beside the policy
                    metrics = learner.train_step(batch) | critic_metrics()
                train_s = time.perf_counter() - train_start
                sync_s = weight_sync.push(version=step + 1)
                if cfg.eval.every and (step + 1) % cfg.eval.every == 0:
                    with source.paused():  # asynchronous: the batches in flight finish first
                        metrics |= periodic_eval.metrics()
                step_s = time.perf_counter() - step_start
                metrics |= step_rewards | rollout_metrics(sampled.all_PG, step) | sampled.metrics() | {
                    "timing/generate_s": times.generate_s, "timing/reward_s": times.reward_s,
                    "timing/train_s": train_s, "timing/sync_s": sync_s, "timing/step_s": step_s,
                    "timing/wait_for_rollouts_s": sampled.wait_s,
                } | sampled.curriculum | sampled.extra
                metrics["throughput/tokens_per_s"] = (metrics["tokens/prompt"] + metrics["tokens/completion"]) / step_s
                logger.log(step, metrics)
                progress.rewards_per_step.append(metrics["reward/mean"])
                progress.summary |= failure_totals(progress.summary, step_rewards)  # per term, over the run and resumes
                stopping = interrupt.requested  # read once: a signal arriving below waits for the next step
                if ckpt.due(step + 1) or stopping:  # after the step's metrics line: a resumed run neither repeats nor skips one
                    saved = ckpt.save(step + 1, parts, progress.records())
                    write_json_atomic(out / "curriculum_state.json", curriculum_state(source.tracker, source.prompts))
                    if stopping:
                        raise Interrupted(step + 1, saved)

            source.close()  # nothing is in flight after the last step: batches stop at train.steps
            if stop:
                after = evaluate(workers, reward_service, splits.held_out, eval_tokens, correctness)
                logger.print(f"held-out greedy accuracy after RL: {after['eval/accuracy']:.3f}")
            else:  # summary.json gets nulls, not NaN, for what was not run
                after = {"eval/accuracy": None}
                logger.print("train.steps = 0: no RL steps; the evaluation above is the run's result")
            logger.print(f"saving the final weights in {out}, then stopping Ray")
            learner.save(str(out))
            write_json_atomic(out / "curriculum_state.json", curriculum_state(source.tracker, source.prompts))
        finally:
            source.close()
            logger.close()

    summary = progress.final(after, wall_s=time.perf_counter() - started)
    write_json_atomic(out / "summary.json", summary)
    return summary

