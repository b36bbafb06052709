"""`exact`: normalised string equality."""

import pytest

from rlvr.rewards.exact import exact
from rlvr.types import Rollout, Sample


def rollout(completion: str, answer: str, metadata=None, prompt: str = "q") -> Rollout:
    return Rollout(Sample("t", prompt, answer, metadata or {}), completion, "stop", (), (), (), 0)


EXACT = [(" -14282 ", "-14282", 1.0), ("<answer>Paris.</answer>", "paris", 1.0), ("1,234", "1234", 1.0),
         (r"\boxed{7}", "7", 1.0), ("14282", "-14282", 0.0)]


@pytest.mark.parametrize(("completion", "answer", "expected"), EXACT)
def test_exact(completion, answer, expected):
    assert exact(rollout(completion, answer)) == expected
