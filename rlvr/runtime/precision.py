"""The run's precision: `model.dtype = "auto"` resolved, and a warning for bf16 where the hardware only emulates it.

    cfg, line = resolve_dtype(cfg)      # "auto" -> "bfloat16" or "float32", and a line saying which and why
    warning = bf16_warning(cfg)         # an explicit bfloat16 on a CPU without bf16 instructions, else None

bf16 pays only where the hardware computes in it: x86 CPUs with AVX512-bf16 or AMX (`avx512_bf16`,
`amx_bf16` in /proc/cpuinfo), Arm CPUs with the `bf16` feature, CUDA GPUs from compute capability 8.0
(Ampere). Elsewhere torch converts every operand to fp32 and back: on a 2-core AMD EPYC with AVX2 only,
SmolLM2-135M's first GRPO step (examples/smollm2_gsm8k_grpo.toml) took 302 s in bf16 against 24 s in fp32
(learner 269 s against 13 s, generation 33 s against 10 s).

Which hardware: the devices the placement gives the learner and the engines (GPUs where learner.gpus or
rollout.gpus_per_engine > 0, CPUs otherwise); "auto" picks bf16 only when every one of them has it. The
CPUs are judged by this machine's flags, which are the run's for a local cluster and stand in for the
nodes' on a remote one. The GPUs by this machine's first GPU; a driver without one (a GPU cluster driven
from a CPU host) assumes bf16, which every GPU since Ampere has (on older ones vLLM refuses bf16 at engine
start: set "float32" there).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from rlvr.config import Config

BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 AVX512-bf16, AMX; Arm's FEAT_BF16
# Measured on this project's 2-core AVX2 machine, examples/smollm2_gsm8k_grpo.toml's first step.
EMULATED_COST = "SmolLM2-135M's first step took 302 s in bf16 against 24 s in fp32 on a 2-core AVX2 CPU"


@dataclass(frozen=True)
class Hardware:
    """What decides the precision: the CPU's flags (None: unknown, not Linux) and whether the GPU does bf16
    (None: no GPU visible here)."""

    cpu_flags: frozenset[str] | None
    gpu_bf16: bool | None

    @classmethod
    def probe(cls, cfg: Config) -> Hardware:
        """This machine's; the GPU only when the run uses GPUs (importing torch costs seconds)."""
        gpu = None
        if "cuda" in _devices(cfg):
            import torch

            gpu = torch.cuda.is_bf16_supported(including_emulation=False) if torch.cuda.is_available() else None
        return cls(cpu_flags(), gpu)

    @property
    def cpu_bf16(self) -> bool | None:
        return None if self.cpu_flags is None else bool(self.cpu_flags & BF16_CPU_FLAGS)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The first CPU's feature flags (x86 `flags`, Arm `Features`); None where the file is not there."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _devices(cfg: Config) -> set[str]:
    return {"cuda" if cfg.learner.gpus else "cpu", "cuda" if cfg.rollout.gpus_per_engine else "cpu"}


def resolve_dtype(cfg: Config, hw: Hardware | None = None) -> tuple[Config, str | None]:
    """`cfg` with model.dtype = "auto" replaced by what the hardware computes fast, and a line saying so
    (None when the dtype was set)."""
    if cfg.model.dtype != "auto":
        return cfg, None
    hw, devices = hw or Hardware.probe(cfg), _devices(cfg)
    why = []
    if "cpu" in devices:
        why.append({True: "the CPU has bf16 instructions", False: "the CPU has no bf16 instructions",
                    None: "the CPU's flags are unknown"}[hw.cpu_bf16])
    if "cuda" in devices:
        why.append({True: "the GPU has bf16", False: "the GPU has no bf16",
                    None: "no GPU visible here: the cluster's are assumed to have bf16"}[hw.gpu_bf16])
    fast = ("cpu" not in devices or hw.cpu_bf16 is True) and ("cuda" not in devices or hw.gpu_bf16 is not False)
    dtype = "bfloat16" if fast else "float32"
    model = dataclasses.replace(cfg.model, dtype=dtype)
    return dataclasses.replace(cfg, model=model), f'model.dtype = "auto": {dtype} ({"; ".join(why)})'


def bf16_warning(cfg: Config, hw: Hardware | None = None) -> str | None:
    """One line when an explicit bfloat16 run computes on a CPU that has no bf16 instructions."""
    if cfg.model.dtype != "bfloat16" or "cpu" not in _devices(cfg):
        return None
    hw = hw or Hardware.probe(cfg)
    if hw.cpu_bf16 is not False:
        return None
    return ('model.dtype = "bfloat16" on a CPU without bf16 instructions (no avx512_bf16 or amx_bf16 in '
            f'/proc/cpuinfo): torch emulates it, {EMULATED_COST}; use "float32" (or "auto") here')
