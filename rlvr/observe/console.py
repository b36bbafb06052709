"""What the person at the terminal sees: our own lines, not vLLM's and Ray's, and reward failures where they look.

    with run_log(out / "run.log") as console:      # fds 1 and 2 -> run.log; `console` is the real terminal
        train(cfg, out, console=console)

    failures = RewardFailures(console.print, max_failed_frac=0.5)
    metrics = failures.check_step(step, sampled.all_PG, logger)   # prints each term's first failure once; a step
                                                                   # with too few rewards is logged, then raises

Why redirect file descriptors rather than Python loggers: the start-up noise (~30 lines in ~65 s before
our first line) comes from C++ (Ray's core worker, vLLM's CPU backend), from Ray's log forwarding of
actor output, and from third-party loggers configured at import; only the descriptors catch them all.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rich.console import Console

from rlvr.observe.metrics import MetricsLogger, rollout_metrics
from rlvr.scoring.service import RewardError, reward_metrics
from rlvr.types import ScoredRollout

_STATUS_KEYS = {"timeout": "timeouts", "error": "errors", "crash": "crashes"}


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[Console]:
    """Send everything written to fds 1 and 2 (this process and Ray's forwarded actor output) to `path`.

    Yields a console on the real stderr for our own lines; the descriptors are restored on exit.
    When stderr is not fd 2 (a test's capture), the console writes to it directly.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    real = sys.stderr
    owned = None
    if _fileno(real) == 2:
        owned = real = os.fdopen(os.dup(2), "w", buffering=1)
    saved = os.dup(1), os.dup(2)
    with path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield Console(file=real, highlight=False, soft_wrap=True)  # a log line stays one line
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if owned is not None:
                owned.close()


def unexpected(e: BaseException, log: Path) -> str:
    """The console's line for an unexpected failure; its traceback goes to fd 2 (`log`, inside `run_log`)."""
    import traceback

    traceback.print_exc()
    text = str(e).strip().splitlines()
    return f"rlvr: error: {type(e).__name__}: {text[0] if text else ''} (traceback in {log})"


def report_failure(error: str, log: Path, show_log: bool = True) -> None:
    """Print a failure's line last; above it, for an unexpected one, the log's last lines (what vLLM or Ray
    said last may explain it), else (show_log) where the log is."""
    if error.startswith("rlvr: error:"):
        print(f"rlvr: the last lines of {log}:", *("  " + line for line in tail(log, 15)), sep="\n", file=sys.stderr)
    elif show_log:
        print(f"rlvr: run log (vLLM, Ray): {log}", file=sys.stderr)
    print(error, file=sys.stderr)


def tail(path: Path, lines: int = 20) -> list[str]:
    """The last `lines` lines of a text file (empty when it does not exist)."""
    if not path.exists():
        return []
    with path.open(errors="replace") as f:
        return [line.rstrip("\n") for line in collections.deque(f, maxlen=lines)]


def _fileno(stream) -> int:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # a capture buffer has no descriptor
        return -1


class RewardFailures:
    """Prints the first failure of each reward term once (term, kind, message, sample id).

    Later failures are only counted (reward/<term>/errors, .../timeouts, .../crashes in metrics.jsonl
    and on the step's console line): a reward that fails on 8% of rollouts is seen at once, without
    a line per rollout.
    """

    def __init__(self, say: Callable[[str], None], max_failed_frac: float = 1.0) -> None:
        self.say, self.max_failed_frac = say, max_failed_frac
        self._seen: set[tuple[str, str]] = set()

    def observe(self, scored_PG: Sequence[Sequence[ScoredRollout]]) -> None:
        for group in scored_PG:
            for s in group:
                for label, result in s.terms.items():
                    if result.status == "ok" or "/" in label or (label, result.status) in self._seen:
                        continue
                    self._seen.add((label, result.status))
                    self.say(
                        f"reward term {label!r}: {result.status} on sample {s.rollout.sample.id!r}: {result.error} "
                        f"(shown once; further ones are counted in reward/{label}/{_STATUS_KEYS[result.status]})"
                    )

    def check_step(self, step: int, scored_PG: Sequence[Sequence[ScoredRollout]], logger: MetricsLogger) -> dict:
        """The step's reward metrics; when the share of rollouts without a reward exceeds max_failed_frac (or
        none got one), log the step's failure counts and raise RewardError."""
        self.observe(scored_PG)
        try:
            return reward_metrics(scored_PG, self.max_failed_frac)
        except RewardError:
            flat = [s for group in scored_PG for s in group]
            counts: collections.Counter[str] = collections.Counter(
                f"reward/{label}/{_STATUS_KEYS[r.status]}"
                for s in flat for label, r in s.terms.items() if r.status != "ok" and "/" not in label
            )
            logger.log(step, rollout_metrics(scored_PG) | {"reward/failed": float(sum(not s.ok for s in flat))}
                       | {k: float(v) for k, v in counts.items()})
            raise

