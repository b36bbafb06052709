"""MetricsLogger: metrics.jsonl records, and timeouts said out loud on the console."""

import io
import json

from rich.console import Console

from rlvr.observe.metrics import MetricsLogger, failure_totals


def test_reward_timeouts_are_printed_on_the_console(tmp_path):
    out = io.StringIO()
    logger = MetricsLogger(tmp_path, total_steps=2, console=Console(file=out, width=200))  # no trackers
    logger.log(0, {"reward/mean": 0.5, "reward/math/timeouts": 0.0})
    logger.log(1, {"reward/mean": 0.5, "reward/math/timeouts": 3.0, "reward/format/timeouts": 0.0})
    logger.close()
    lines = [line for line in out.getvalue().splitlines() if "timed out" in line]
    assert lines == ["step 1: reward calls timed out (math 3); scored reward.timeout_value"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward/math/timeouts"] for r in records] == [0.0, 3.0]


def test_failure_totals_add_each_steps_counts_to_the_runs():
    step = {"reward/mean": 0.5, "reward/failed": 2.0, "reward/math/errors": 2.0, "reward/math/timeouts": 1.0,
            "reward/math/crashes": 0.0, "reward/math/mean": 0.4, "reward/math/call_s_max": 0.1}
    totals = failure_totals({"wall_s": 3.0}, step)
    assert totals == {"reward/failed": 2, "reward/math/errors": 2, "reward/math/timeouts": 1, "reward/math/crashes": 0}
    assert failure_totals(totals, step)["reward/math/errors"] == 4
