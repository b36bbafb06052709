"""Ctrl-C and SIGTERM: the run stops at the end of the RL step in progress, with a checkpoint; asked twice, at once.

    with StopSignals(say=console.print) as interrupt:    # rlvr/cli.py: SIGINT and SIGTERM are ours from here
        train(cfg, out, console, interrupt=interrupt)
    interrupt.retake()                    # train(), after ray.init (it installs its own SIGTERM handler)
    interrupt.defer()                     # RL begins: from here a first signal only asks for a stop ...
    if interrupt.requested:               # ... which the loop makes at the end of the step, checkpointed
        raise Interrupted(step + 1, checkpoint)

Before `defer()` (start-up, SFT, the evaluation before RL: nothing a checkpoint would keep) a signal raises
`Interrupted` at once; after it, the second one does, and a first one after the last step lets the run finish
(the final evaluation and weights). Signals after the raise are ignored, so that the unwinding (Ray's shutdown)
runs to its end. `Interrupted` is a KeyboardInterrupt: Ray's blocking calls turn a KeyboardInterrupt raised by a
handler while they wait into a plain one, so the signal's number is kept here (`signum`), not on the exception.

The rest of the run's processes: a terminal sends SIGINT to its whole foreground process group, but Ray 2.60
starts its daemons (GCS, raylet, agents, log monitor) with SIGINT blocked (ray/_private/services.py,
`start_ray_process`), and the raylet starts each worker (each actor, with the vLLM engine and the reward pool it
forks) in a process group of its own. Only the driver sees the Ctrl-C; the step in progress finishes, and
`ray.shutdown` then ends the cluster. A SIGTERM sent to the whole group (`kill -TERM -PGID`, a scheduler that
signals every process of a job) does reach the GCS and the raylet, which shut down on it: the actors go on, and
the step in progress may fail where it needs them (the object store is the raylet's).
"""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Self

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run stopped for a signal: at a step boundary (`step` RL steps done, `checkpoint` written) or at once."""

    def __init__(self, step: int | None = None, checkpoint: Path | None = None) -> None:
        super().__init__(f"interrupted at step {step}" if step is not None else "interrupted")
        self.step, self.checkpoint = step, checkpoint


class StopSignals:
    """SIGINT and SIGTERM handlers for a run, installed while the object is entered (main thread only).

    Not entered (train() called from Python), it never installs anything and `requested` stays False.
    """

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.say = say  # the acknowledgement of a first signal
        self.signum: int | None = None  # the first signal received
        self._deferring = False
        self._stopping = False  # Interrupted was raised: ignore the rest
        self._saved: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process killed by it: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + (self.signum or signal.SIGINT)

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():  # signal.signal raises elsewhere
            self._saved = {s: signal.getsignal(s) for s in SIGNALS}
            self.retake()
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: one installed from C, not restorable
        self._saved = {}

    def retake(self) -> None:
        """Install the handlers again: `ray.init` replaces SIGTERM's with its own (`sys.exit`). No-op when not entered."""
        for s in self._saved:
            signal.signal(s, self._handle)

    def defer(self) -> None:
        """From now on a first signal sets `requested` (and says so) instead of raising."""
        self._deferring = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            return
        first = self.signum is None
        if first:
            self.signum = signum
        if first and self._deferring:
            self._acknowledge(signum)
            return
        self._stopping = True
        raise Interrupted()

    def _acknowledge(self, signum: int) -> None:
        if self.say is None:
            return
        again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
        try:
            self.say(f"{signal.Signals(signum).name}: stopping after the RL step in progress, with a checkpoint "
                     f"({again} stops at once)")
        except RuntimeError:  # the signal came inside a write to the same stream ("reentrant call"): the stop still holds
            pass


def stopped_line(e: KeyboardInterrupt, signum: int | None, out: Path, resume: list[str], afresh: list[str]) -> str:
    """The console's last line after a stop: where the run stopped, its checkpoint, and the command to go on.

    resume: `rlvr train --output-dir DIR --resume [--max-steps N]` (the config is DIR/run_config.json). afresh,
    offered where there is no checkpoint: the command as given, with --resume=auto (it starts afresh over this
    attempt; a stop before train() wrote DIR/run_config.json leaves only the given config to start from).
    """
    from rlvr.runtime.resume import complete_checkpoints

    name = signal.Signals(signum or signal.SIGINT).name
    again = shlex.join(resume)
    if isinstance(e, Interrupted) and e.checkpoint is not None:
        return f"rlvr: interrupted ({name}) at step {e.step}; checkpoint written to {e.checkpoint}; continue with `{again}`"
    found = complete_checkpoints(out / "checkpoints")
    if found:
        step, path = found[-1]
        return (f"rlvr: interrupted ({name}), stopped at once; the newest checkpoint is {path} (step {step}); "
                f"continue with `{again}`")
    return (f"rlvr: interrupted ({name}) before the first RL checkpoint, stopped at once: nothing to resume from; "
            f"start again with `{shlex.join(afresh)}`")
