"""A call past its deadline is an error naming the role, the actor and the call, not a hang."""

import time

import pytest
import ray

from rlvr.runtime.remote import CallTimeout, wait

pytestmark = pytest.mark.ray


@ray.remote
class Slow:
    def values(self, seconds: float) -> str:
        time.sleep(seconds)
        return "done"


def test_a_stuck_call_names_role_actor_and_call(ray_cluster):
    actor = Slow.remote()
    assert wait(actor.values.remote(0.0), role="critic", call="values", timeout_s=30) == "done"
    started = time.perf_counter()
    with pytest.raises(CallTimeout, match=r"critic \(actor [0-9a-f]{12}\): values did not return within 1 s"):
        wait(actor.values.remote(60.0), role="critic", call="values", timeout_s=1)
    assert time.perf_counter() - started < 10
    ray.kill(actor)
