"""Waiting on another process with a deadline: a stuck actor becomes an error naming it, never a hang."""

from __future__ import annotations

import socket
import time

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


def wait_all(refs: list, *, roles: list[str], call: str, timeout_s: float,
             setting: str = "cluster.call_timeout_s") -> list:
    """`ray.get` of several calls (one per actor of a group, `roles[i]` naming refs[i]'s) within one
    deadline. Past it, a `CallTimeout` naming the actors that had not returned; an actor's own error is
    raised as soon as it arrives, as a RuntimeError naming the actor and the call (so a rank that fails is
    not hidden behind the others waiting for it in a collective)."""
    deadline = time.monotonic() + timeout_s
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            late = [roles[i] for i, r in enumerate(refs) if r in pending]
            raise CallTimeout(f"{', '.join(late)}: {call} did not return within {timeout_s:.0f} s ({setting})")
        try:
            ray.get(done[0])
        except ray.exceptions.RayError as e:
            raise RuntimeError(f"{roles[refs.index(done[0])]}: {call} failed: {e}") from e
    return ray.get(refs)


def free_port() -> int:
    """A TCP port free on every interface of this host now: the rendezvous of a process group that
    processes on other nodes connect to."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
