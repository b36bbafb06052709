"""Peak memory of a learner step: the process's resident high-water mark on CPU, allocator peak on GPU."""

from __future__ import annotations

from pathlib import Path

import torch


class PeakMemory:
    """`reset()` before a step, `metrics()` after it: memory/learner_peak_gb is the step's peak.

    On CPU, Linux keeps a process's peak resident set (VmHWM) and resets it when "5" is written to
    /proc/self/clear_refs; where that is not allowed the peak is the process's lifetime peak (said once
    on the console)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.lifetime = False

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            if not self.lifetime:
                print("learner: /proc/self/clear_refs is not writable here: memory/learner_peak_gb is the "
                      "process's lifetime peak, not each step's", flush=True)
            self.lifetime = True

    def metrics(self) -> dict[str, float]:
        if self.device.type == "cuda":
            return {"memory/learner_peak_gb": torch.cuda.max_memory_allocated() / 2**30}
        return {"memory/learner_peak_gb": _status_kb("VmHWM") / 2**20, "memory/learner_rss_gb": _status_kb("VmRSS") / 2**20}


def _status_kb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return 0.0
