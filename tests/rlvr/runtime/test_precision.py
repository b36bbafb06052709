import pytest

from rlvr.config import load_config
from rlvr.runtime.precision import Hardware, bf16_warning, cpu_flags, resolve_dtype

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})  # this project's machine: no bf16 instructions
SAPPHIRE_RAPIDS = AVX2 | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
CPU_RUN = ["model.dtype=auto"]
GPU_RUN = ["model.dtype=auto", "learner.gpus=1", "rollout.gpus_per_engine=1"]


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert cpu_flags(x86) == {"fpu", "avx2", "avx512_bf16"}  # the first CPU's
    assert Hardware(cpu_flags(arm), None).cpu_bf16 is True
    assert cpu_flags(tmp_path / "none") is None and Hardware(None, None).cpu_bf16 is None


@pytest.mark.parametrize(("overrides", "hw", "dtype", "why"), [
    (CPU_RUN, Hardware(AVX2, None), "float32", "the CPU has no bf16 instructions"),
    (CPU_RUN, Hardware(SAPPHIRE_RAPIDS, None), "bfloat16", "the CPU has bf16 instructions"),
    (CPU_RUN, Hardware(None, None), "float32", "the CPU's flags are unknown"),
    (GPU_RUN, Hardware(AVX2, True), "bfloat16", "the GPU has bf16"),
    (GPU_RUN, Hardware(AVX2, False), "float32", "the GPU has no bf16"),  # V100, T4
    (GPU_RUN, Hardware(AVX2, None), "bfloat16", "no GPU visible here"),  # a CPU driver of a GPU cluster
    # a GPU learner beside CPU engines: both must have it
    (CPU_RUN + ["learner.gpus=1"], Hardware(AVX2, True), "float32", "the CPU has no bf16 instructions; the GPU has bf16"),
])
def test_auto_picks_bf16_only_where_every_device_of_the_run_has_it(overrides, hw, dtype, why):
    cfg, line = resolve_dtype(load_config("examples/tiny_arith_grpo.toml", overrides), hw)
    assert cfg.model.dtype == dtype
    assert line.startswith(f'model.dtype = "auto": {dtype} (') and why in line


def test_an_explicit_dtype_is_kept_and_bf16_on_an_emulating_cpu_is_a_warning():
    bf16 = load_config("examples/tiny_arith_grpo.toml", ["model.dtype=bfloat16"])
    assert resolve_dtype(bf16, Hardware(AVX2, None)) == (bf16, None)
    warning = bf16_warning(bf16, Hardware(AVX2, None))
    assert warning.startswith('model.dtype = "bfloat16" on a CPU without bf16 instructions') and "302 s" in warning
    assert bf16_warning(bf16, Hardware(SAPPHIRE_RAPIDS, None)) is None
    assert bf16_warning(bf16, Hardware(None, None)) is None  # unknown: no claim
    on_gpus = load_config("examples/tiny_arith_grpo.toml", ["model.dtype=bfloat16", "learner.gpus=1",
                                                             "rollout.gpus_per_engine=1"])
    assert bf16_warning(on_gpus, Hardware(AVX2, True)) is None  # the CPU computes nothing there
