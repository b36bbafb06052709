"""rlvr's vLLM plugin (rlvr/rollout/vllm_plugin.py): what it installs, and an engine core that dies with its actor."""

import signal
import subprocess
import sys

import psutil

from rlvr.rollout import vllm_plugin


def test_register_installs_the_cpu_fix_and_the_gloo_backend_once():
    import vllm.model_executor.layers.utils as layer_utils
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    vllm_plugin.register()
    dispatch = layer_utils.dispatch_cpu_unquantized_gemm
    vllm_plugin.register()  # vLLM may call it again: nothing is wrapped twice
    assert layer_utils.dispatch_cpu_unquantized_gemm is dispatch and dispatch.keeps_weights
    assert "rlvr_gloo" in WeightTransferEngineFactory._registry


OWNER = """
import multiprocessing, os, time
from rlvr.rollout import vllm_plugin

os.environ[vllm_plugin.OWNER_ENV] = str(os.getpid())


def core():
    vllm_plugin._die_with_owner()
    print(os.getpid(), flush=True)
    time.sleep(120)


multiprocessing.get_context("fork").Process(target=core, name="EngineCore").start()
time.sleep(120)
"""


def test_an_engine_core_is_killed_with_its_owner_even_when_stopped():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    core = psutil.Process(int(owner.stdout.readline()))
    try:
        core.send_signal(signal.SIGSTOP)
        owner.kill()  # SIGKILL: no clean-up runs in the owner
        owner.wait()
        core.wait(timeout=10)
    finally:
        if core.is_running():
            core.kill()
