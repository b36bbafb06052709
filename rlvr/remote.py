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
