"""Ctrl-C and SIGTERM (rlvr/runtime/interrupt.py): the handlers, the console's last line, and SIGTERM through `rlvr train`.

The real Ctrl-C, sent to a run's whole process group in the middle of RL and resumed from, is
tests/rlvr/runtime/test_resume.py::test_a_stopped_and_resumed_run_equals_the_uninterrupted_run.
"""

import shlex
import signal
import sys
import types

import pytest

from rlvr.runtime.interrupt import Interrupted, StopSignals, stopped_line
from rlvr.runtime.resume import atomic_dir, step_dir


def test_before_rl_a_signal_stops_at_once_and_the_handlers_are_given_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals() as interrupt:
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGTERM)
        assert interrupt.signum == signal.SIGTERM and interrupt.exit_code == 143
        signal.raise_signal(signal.SIGINT)  # ignored while the stop unwinds (Ray's shutdown)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_during_rl_the_first_signal_asks_and_the_second_stops_at_once():
    said = []
    with StopSignals(say=said.append) as interrupt:
        interrupt.defer()
        signal.raise_signal(signal.SIGTERM)
        assert interrupt.requested and said == [
            "SIGTERM: stopping after the RL step in progress, with a checkpoint (a second signal stops at once)"]
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGINT)
        assert interrupt.exit_code == 143  # the first signal's
    with StopSignals(say=said.append) as interrupt:
        interrupt.defer()
        signal.raise_signal(signal.SIGINT)
        assert interrupt.exit_code == 130 and said[-1].startswith("SIGINT") and "Ctrl-C again stops at once" in said[-1]


def test_retake_wins_back_sigterm_from_ray_init_and_a_bare_object_touches_nothing():
    with StopSignals() as interrupt:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # what ray.init installs
        interrupt.retake()
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGTERM)
    bare, handler = StopSignals(), signal.getsignal(signal.SIGINT)
    bare.retake()
    bare.defer()
    assert signal.getsignal(signal.SIGINT) is handler and not bare.requested


def test_the_last_line_names_the_checkpoint_and_the_command_to_go_on(tmp_path):
    resume = ["rlvr", "train", "--output-dir", str(tmp_path / "my run"), "--resume", "--max-steps", "9"]
    afresh = ["rlvr", "train", "my config.toml", "--output-dir", str(tmp_path / "my run"), "--resume=auto",
              "--max-steps", "9", 'reward.terms=[{name="math"}]']
    line = stopped_line(Interrupted(3, step_dir(tmp_path / "checkpoints", 3)), signal.SIGINT, tmp_path, resume, afresh)
    head, command, tail = line.split("`")
    assert head == (f"rlvr: interrupted (SIGINT) at step 3; checkpoint written to {tmp_path}/checkpoints/step_000003; "
                    "continue with ") and tail == ""
    assert shlex.split(command) == resume  # a shell gives the command back as it was typed

    # at once (a second Ctrl-C, or before RL): the newest complete checkpoint, or none
    line = stopped_line(KeyboardInterrupt(), signal.SIGTERM, tmp_path, resume, afresh)
    head, command, _ = line.split("`")
    assert head == ("rlvr: interrupted (SIGTERM) before the first RL checkpoint, stopped at once: nothing to resume "
                    "from; start again with ")
    assert shlex.split(command) == afresh  # the config as given: DIR/run_config.json may not be written yet
    for step in (2, 4):
        with atomic_dir(step_dir(tmp_path / "checkpoints", step)):
            pass
    line = stopped_line(KeyboardInterrupt(), None, tmp_path, resume, afresh)
    assert line.startswith(f"rlvr: interrupted (SIGINT), stopped at once; the newest checkpoint is "
                           f"{tmp_path}/checkpoints/step_000004 (step 4); continue with `")


def test_sigterm_during_rl_ends_rlvr_train_with_143_and_the_resume_command(tmp_path, capsys, monkeypatch):
    """The CLI's side of a SIGTERM: the loop (here a stand-in for train(), which needs Ray and vLLM) gets the stop
    request, checkpoints and raises; the CLI prints one line and exits 143."""
    from rlvr.cli import main

    def train(cfg, out, console, *, resume, max_steps, interrupt):
        interrupt.retake()
        interrupt.defer()
        signal.raise_signal(signal.SIGTERM)
        assert interrupt.requested  # the step in progress goes on
        with atomic_dir(step_dir(out / "checkpoints", 5)) as tmp:
            (tmp / "driver.json").write_text("{}")
        raise Interrupted(5, step_dir(out / "checkpoints", 5))

    monkeypatch.setitem(sys.modules, "rlvr.train", types.SimpleNamespace(train=train))  # importing the real one: ~10 s
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    code = main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(out), "data.train_size=50"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 143 and signal.getsignal(signal.SIGTERM) is before
    assert "SIGTERM: stopping after the RL step in progress" in err[-2]
    assert err[-1] == (f"rlvr: interrupted (SIGTERM) at step 5; checkpoint written to {out}/checkpoints/step_000005; "
                       f"continue with `rlvr train --output-dir {out} --resume`")  # the config: DIR/run_config.json
    assert "Traceback" not in "\n".join(err)
