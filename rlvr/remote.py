"""Waiting on another process with a deadline: a stuck actor becomes an error naming it, never a hang."""

from __future__ import annotations

import ray


class CallTimeout(TimeoutError):
    pass


def wait(ref, *, role: str, call: str, timeout_s: float, setting: str = "cluster.call_timeout_s"):
    """`ray.get(ref)` within `timeout_s`; past it, an error naming the role, the actor, the call and the
    config key that sets the deadline."""
    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        actor = getattr(ref, "task_id", lambda: None)()
        actor_id = actor.actor_id().hex()[:12] if actor is not None else "?"
        raise CallTimeout(f"{role} (actor {actor_id}): {call} did not return within {timeout_s:.0f} s "
                          f"({setting})") from None


def wait_all(refs: list, *, roles: list[str], call: str, timeout_s: float) -> list:
    """`ray.get` of several calls (one per actor of a group) within one deadline; past it, an error naming
    the actors that had not returned. An actor's own error is raised as soon as it arrives, so a rank
    that fails is not hidden behind the others waiting for it in a collective."""
    import time

    deadline = time.monotonic() + timeout_s
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            late = [roles[i] for i, r in enumerate(refs) if r in pending]
            raise CallTimeout(f"{', '.join(late)}: {call} did not return within {timeout_s:.0f} s "
                              "(cluster.call_timeout_s)")
        ray.get(done[0])  # raises the actor's error, if it had one
    return ray.get(refs)
