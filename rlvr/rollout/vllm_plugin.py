"""rlvr's vLLM general plugin (entry point `vllm.general_plugins` in pyproject.toml).

vLLM calls `register()` in every process that builds or serves an engine, among them the engine-core
process that `AsyncLLM` spawns (rlvr/rollout/async_worker.py): a patch applied in the actor does not reach
that process, so what the core needs is installed here.

1. The CPU linear-weight fix (rlvr/rollout/vllm_cpu.py, `keep_linear_weights`), on CPU only.
2. The `rlvr_gloo` weight-transfer backend (rlvr/sync/gloo_transfer.py).
3. In an engine core whose parent is an rlvr rollout actor (the actor exports its pid as OWNER_ENV): die with
   it. A killed actor (`ray.kill`, SIGKILL from Ray's shutdown) runs no clean-up, and vLLM's core does
   not watch its parent, so the core would live on, holding its memory; PR_SET_PDEATHSIG makes the
   kernel SIGKILL it when the actor dies, also when the core is stopped (SIGKILL ends a stopped process).

Idempotent (vLLM may call it more than once per process) and a no-op where a part does not apply.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal

OWNER_ENV = "RLVR_ENGINE_OWNER_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def register() -> None:
    _die_with_owner()
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        from rlvr.rollout import vllm_cpu

        vllm_cpu.keep_linear_weights()
    from rlvr.sync import gloo_transfer

    gloo_transfer.register()


def _die_with_owner() -> None:
    owner = os.environ.get(OWNER_ENV)
    if not owner or not multiprocessing.current_process().name.startswith("EngineCore"):
        return
    if os.getppid() != int(owner):
        return  # a process further down (a worker of a multi-process executor): its own parent watches it
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed in the rollout engine core")
    if os.getppid() != int(owner):  # the actor died before the prctl: no signal will come
        os._exit(1)
