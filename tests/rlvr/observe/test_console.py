"""The console: run.log catches what third-party code writes to fds 1 and 2; reward failures shown once."""

import io
import json
import math
import os

import pytest
from rich.console import Console

from rlvr.observe.console import RewardFailures, run_log, tail
from rlvr.observe.metrics import MetricsLogger, reward_failure_counts
from rlvr.scoring.service import RewardError
from rlvr.types import Rollout, Sample, ScoredRollout, TermResult


def test_run_log_takes_fd_output_and_the_console_keeps_ours(tmp_path, capsys):
    log = tmp_path / "run" / "run.log"
    with run_log(log) as console:
        os.write(1, b"vLLM: a C++ warning\n")  # as a C extension or a forwarded actor writes
        os.write(2, b"Ray: started a local instance\n")
        console.print("starting Ray")
    console_text = capsys.readouterr()
    assert "starting Ray" in console_text.err and "warning" not in console_text.err + console_text.out
    assert tail(log) == ["vLLM: a C++ warning", "Ray: started a local instance"]
    os.write(2, b"after the run\n")  # the descriptors are restored: no longer into the log
    assert tail(log)[-1] == "Ray: started a local instance"
    assert tail(tmp_path / "missing.log") == []


def scored(sample_id: str, **terms: TermResult) -> ScoredRollout:
    rollout = Rollout(Sample(sample_id, "q", "1"), "c", "stop", (1, 2), (0.0, 0.0), (7,), 0)
    ok = all(t.status == "ok" for t in terms.values())
    return ScoredRollout(rollout, 1.0 if ok else math.nan, terms)


ERR = TermResult(math.nan, "error", "ValueError: boom")
OK = TermResult(1.0)


def test_first_failure_of_each_term_is_shown_once():
    lines = []
    failures = RewardFailures(lines.append)
    failures.observe([[scored("s1", math=OK, fmt=ERR), scored("s2", math=OK, fmt=ERR)]])
    failures.observe([[scored("s3", math=TermResult(math.nan, "timeout", "deadline 10 s"), fmt=ERR)]])
    assert lines == [
        "reward term 'fmt': error on sample 's1': ValueError: boom (shown once; further ones are counted in "
        "reward/fmt/errors)",
        "reward term 'math': timeout on sample 's3': deadline 10 s (shown once; further ones are counted in "
        "reward/math/timeouts)",
    ]


def test_a_step_with_too_few_rewards_is_logged_then_raises(tmp_path):
    logger = MetricsLogger(tmp_path, total_steps=3, console=Console(file=io.StringIO()))
    failures = RewardFailures(lambda line: None, max_failed_frac=0.5)
    assert failures.check_step(0, [[scored("s1", boom=OK), scored("s2", boom=ERR)]], logger)["reward/boom/errors"] == 1
    with pytest.raises(RewardError, match=r"^2 of 3 rollouts .*\(66\.7%\).*: term 'boom' error on 2/3 \(ValueError"):
        failures.check_step(1, [[scored("s1", boom=ERR), scored("s2", boom=ERR), scored("s3", boom=OK)]], logger)
    with pytest.raises(RewardError, match=r"^2 of 2 rollouts"):
        RewardFailures(lambda line: None).check_step(2, [[scored("s1", boom=ERR), scored("s2", boom=ERR)]], logger)
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["reward/boom/errors"], r["reward/failed"]) for r in rows] == [(1, 2.0, 2.0), (2, 2.0, 2.0)]
    assert rows[0]["response_length/mean"] == 2.0


def test_step_line_shows_failure_counts_only_when_non_zero():
    metrics = {"reward/math/errors": 3.0, "reward/math/timeouts": 0.0, "reward/fmt/crashes": 1.0, "reward/mean": 0.5}
    assert reward_failure_counts(metrics) == ["fmt crashes 1", "math errors 3"]
    assert reward_failure_counts({"reward/math/errors": 0.0}) == []
