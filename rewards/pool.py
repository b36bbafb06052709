"""A process pool that runs reward calls under a hard wall-clock deadline and survives anything a call does.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot cancel a running call, and one worker that
dies breaks the whole pool. Why not library timeouts: math-verify's `signal.alarm` only works in a main
thread (verl #3407, TRL #5281), and a C-level sympy loop ignores Python signals anyway.

How it works. One supervisor thread owns every worker's pipe. It hands an idle worker a chunk of
calls, and the worker sends results back in batches (at least every 20 ms), so a verifier call of
~0.3 ms is not dominated by pipe round trips. The worker records which call of its chunk is running,
and since when, in a small shared-memory array, so the supervisor knows each call's start without a
message. A call still running at `start + timeout_s` gets its worker SIGKILLed: the call is `timeout`,
the rest of the chunk goes back to the front of the queue (finished but unsent ones run again) and a
fresh worker is forked. A worker that dies by itself (a plugin calling `os._exit`, a segfault, the OOM
killer) marks its running call `crash` and is replaced the same way. An exception inside a call is
`error`. No signals are used, so callers may be any thread or event loop. Because a finished call
can run again after its worker is killed, rewards must be free of side effects.

Optionally each worker is held to an address-space limit (`memory_mb`: a runaway allocation becomes a
`MemoryError` in its call) and replaced when idle after `recycle_after` calls (what its rewards cached
goes with it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import inspect
import math
import multiprocessing
import multiprocessing.connection
import numbers
import os
import pickle
import resource
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

from rlvr.rewards.protocol import RewardResult
from rlvr.types import Rollout

# (status, value, parts, error, seconds) as sent back by a worker for each call; seconds is the call's
# wall time (for a timeout or crash: from its start until the parent gave up on it).
Outcome = tuple[str, float, dict[str, float], str, float]

_STARTUP_FAILURES_BEFORE_GIVING_UP = 3  # a worker that cannot even import its rewards will not next time either
_KILL_JOIN_S = 1.0
_FLUSH_S = 0.02  # a worker sends finished results at least this often, so a long chunk holds no group back


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")[:500]


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a process without multiprocessing re-running the parent's main script in it.

    By default a spawned or fork-server child re-imports `__main__` (the `rlvr` CLI, a training script,
    Ray's worker), which would load torch or vLLM into every reward worker: seconds of start-up and
    gigabytes each. Rewards must live in importable modules anyway, so the child gets no main module.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _module_of(fn: Any) -> str:
    target = getattr(fn, "func", fn)  # functools.partial
    return getattr(target, "__module__", None) or type(target).__module__


def run_call(fn: Callable[[Rollout], Any], rollout: Rollout) -> Outcome:
    """Run one reward call in this process and turn whatever happens into an outcome."""
    start = time.perf_counter()
    try:
        out = fn(rollout)
        if inspect.isawaitable(out):
            out = asyncio.run(_awaited(out))
        if isinstance(out, RewardResult):
            value = _real(fn, out.value, "RewardResult.value")
            parts = {k: _real(fn, v, f"part {k!r}") for k, v in out.parts.items()}
        else:
            value, parts = _real(fn, out, "value"), {}
        return ("ok", value, parts, "", time.perf_counter() - start)
    except BaseException as e:  # noqa: BLE001 - SystemExit from a plugin is an error too, never a dead worker
        return ("error", math.nan, {}, _first_line(e), time.perf_counter() - start)


def _real(fn: Any, value: Any, what: str) -> float:
    """`value` as a float when it is a finite real number; a bool, a string or None is a bug, not a score.

    Silently converting `"1.0"` or `True` would hide a reward that returns the wrong thing; numpy
    scalars are `numbers.Real` and pass.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"reward {_name(fn)} returned {type(value).__name__} {value!r:.60} as its {what}; "
                        "return a finite real number (float/int) or a RewardResult")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"reward {_name(fn)} returned {value} as its {what}; return a finite number")
    return value


def _name(fn: Any) -> str:
    target = getattr(fn, "func", fn)  # functools.partial
    return getattr(target, "__qualname__", None) or type(target).__qualname__


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _worker_main(
    conn: multiprocessing.connection.Connection, fns_blob: bytes, progress: Any, memory_mb: int = 0
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes us
    if memory_mb:
        # A runaway sympy expansion then raises MemoryError inside its call (status `error`) instead of
        # swapping the node or drawing the OOM killer onto the learner.
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, hard))
    try:
        fns = pickle.loads(fns_blob)
    except BaseException as e:  # noqa: BLE001
        hint = " (rewards defined in __main__ cannot be loaded by workers: move them to a module)" if (
            "__main__" in str(e)) else ""
        conn.send(("startup_error", _first_line(e) + hint))
        return
    conn.send(("ready",))
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return  # the parent went away
        if chunk is None:
            return
        done: list[Outcome] = []
        flushed = time.monotonic()
        for i, (term, rollout) in enumerate(chunk):
            progress[0] = i  # which call of the chunk is running, and since when: the parent's deadline
            progress[1] = time.monotonic()
            done.append(run_call(fns[term], rollout))
            if time.monotonic() - flushed >= _FLUSH_S and i + 1 < len(chunk):
                conn.send(done)
                done, flushed = [], time.monotonic()
        progress[1] = 0.0
        conn.send(done)


@dataclasses.dataclass
class _Batch:
    future: Future
    outcomes: list[Outcome | None]
    left: int


@dataclasses.dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    progress: Any  # shared [index in chunk, start time] of the running call; start 0.0 when idle
    ready: bool = False
    inflight: collections.deque = dataclasses.field(default_factory=collections.deque)
    sent: float = 0.0  # when the current chunk was sent
    delivered: int = 0  # results of the current chunk received so far
    calls: int = 0  # results received over its life

    def call_started(self) -> float:
        return max(self.progress[1], self.sent)  # before the worker picks the chunk up: the send time

    def running(self) -> int:
        """Position in `inflight` of the call that was running (0 when unknown)."""
        i = int(self.progress[0]) - self.delivered
        return i if self.progress[1] > 0 and 0 <= i < len(self.inflight) else 0


class DeadlinePool:
    """Runs `fns[term](rollout)` calls in `workers` processes, each call under `timeout_s` seconds.

    `submit([(term, rollout), ...])` returns a Future of one outcome per call, in order.
    """

    def __init__(
        self,
        fns: Sequence[Callable[[Rollout], Any]],
        *,
        workers: int,
        timeout_s: float,
        max_chunk: int = 64,
        memory_mb: int = 0,
        recycle_after: int = 0,
    ) -> None:
        if workers < 1 or timeout_s <= 0 or memory_mb < 0 or recycle_after < 0:
            raise ValueError(f"need workers >= 1, timeout_s > 0, memory_mb >= 0 and recycle_after >= 0 "
                             f"(got {workers}, {timeout_s}, {memory_mb}, {recycle_after})")
        try:
            self._fns_blob = pickle.dumps(tuple(fns))
        except Exception as e:
            raise TypeError(f"rewards must pickle to run in worker processes (use module-level functions "
                            f"or frozen dataclasses, not closures or lambdas): {_first_line(e)}") from None
        self.timeout_s = timeout_s
        self._max_chunk = max_chunk
        self._memory_mb = memory_mb
        self._recycle_after = recycle_after
        # fork is unsafe in a threaded (Ray) process. A fork server is a clean single-threaded process
        # that imports the rewards' modules once and forks workers from there: a replacement for a
        # killed worker is ready in milliseconds instead of re-importing sympy for a second or more.
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["rlvr.rewards.pool", *sorted({_module_of(fn) for fn in fns})])
        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()  # (batch, index, term, rollout)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closing = False
        self._broken = ""  # set when workers cannot start at all
        self._startup_failures = 0
        self._all_ready = threading.Event()
        self.stats = {"workers_started": 0, "workers_replaced": 0, "workers_recycled": 0, "timeouts": 0, "crashes": 0}
        self._workers = [self._spawn() for _ in range(workers)]
        self._thread = threading.Thread(target=self._supervise, name="reward-pool", daemon=True)
        self._thread.start()

    def submit(self, calls: Sequence[tuple[int, Rollout]]) -> Future:
        future: Future = Future()
        batch = _Batch(future, [None] * len(calls), len(calls))
        if not calls:
            future.set_result([])
            return future
        with self._lock:
            if self._closing or self._broken:
                future.set_exception(RuntimeError(self._broken or "reward pool is closed"))
                return future
            self._queue.extend((batch, i, term, rollout) for i, (term, rollout) in enumerate(calls))
        self._wake()
        return future

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Block until every worker has started (imports done), e.g. before timing; False on timeout."""
        return self._all_ready.wait(timeout_s)

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._wake()
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # the pipe is full of wake-ups already, or the pool closed meanwhile

    # --- everything below runs on the supervisor thread -------------------------------------------

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        progress = self._ctx.RawArray("d", 2)  # shared memory: no message per call, no lock
        process = self._ctx.Process(target=_worker_main, args=(child, self._fns_blob, progress, self._memory_mb),
                                    daemon=True)
        with _main_module_hidden():
            process.start()
        child.close()  # keep only the parent's end, so a dead worker reads as EOF
        self.stats["workers_started"] += 1
        return _Worker(process, parent, progress)

    def _supervise(self) -> None:
        while not self._closing:
            self._dispatch()
            now = time.monotonic()
            deadlines = [w.call_started() + self.timeout_s - now for w in self._workers if w.inflight]
            wait_s = max(0.0, min(deadlines)) if deadlines else None
            conns = [w.conn for w in self._workers]
            ready = multiprocessing.connection.wait([*conns, self._wake_r], timeout=wait_s)
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 65536)
                except BlockingIOError:
                    pass
            for worker in list(self._workers):
                if worker.conn in ready:
                    self._receive(worker)
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.inflight and now >= worker.call_started() + self.timeout_s:
                    self.stats["timeouts"] += 1
                    self._retire(worker, "timeout", f"no result within the {self.timeout_s:g} s deadline: killed")
        self._shutdown()

    def _dispatch(self) -> None:
        sends = []
        with self._lock:
            for worker in self._workers:
                if not self._queue:
                    break
                if worker.ready and not worker.inflight:
                    share = -(-len(self._queue) // len(self._workers))  # spread a small queue over all workers
                    chunk = [self._queue.popleft() for _ in range(min(self._max_chunk, share))]
                    worker.inflight.extend(chunk)
                    sends.append((worker, [(term, rollout) for _, _, term, rollout in chunk]))
        for worker, payload in sends:
            worker.sent, worker.delivered = time.monotonic(), 0
            try:
                worker.conn.send(payload)
            except (OSError, ValueError):
                pass  # it died; its EOF is seen on the next wait and the chunk is handled there

    def _receive(self, worker: _Worker) -> None:
        while True:
            try:
                msg = worker.conn.recv()
            except (EOFError, OSError):
                worker.process.join(_KILL_JOIN_S)  # reap it, for the exit code
                code = worker.process.exitcode
                if not worker.ready:
                    self._startup_failures += 1
                self.stats["crashes"] += bool(worker.inflight)
                self._retire(worker, "crash", f"worker process died (exit code {code}) during this call")
                return
            if isinstance(msg, list):
                for outcome in msg:
                    batch, index, _, _ = worker.inflight.popleft()
                    self._resolve(batch, index, outcome)
                worker.delivered += len(msg)
                worker.calls += len(msg)
                if self._recycle_after and worker.calls >= self._recycle_after and not worker.inflight:
                    self._recycle(worker)
                    return
            elif msg[0] == "ready":
                worker.ready = True
                self._startup_failures = 0
                if all(w.ready for w in self._workers):
                    self._all_ready.set()
            elif msg[0] == "startup_error":
                self._fail_everything(f"reward workers cannot start: {msg[1]}")
                return
            if not worker.conn.poll():
                return

    def _retire(self, worker: _Worker, status: str, error: str) -> None:
        """Kill a worker, fail its running call with `status`, requeue the rest, and start a replacement.

        Calls of the chunk that finished but whose results were not sent yet run again elsewhere.
        """
        self._kill(worker)
        if worker.inflight:
            culprit = worker.running()
            batch, index, _, _ = worker.inflight[culprit]
            del worker.inflight[culprit]
            self._resolve(batch, index, (status, math.nan, {}, error, time.monotonic() - worker.call_started()))
            with self._lock:
                self._queue.extendleft(reversed(worker.inflight))
        self._workers.remove(worker)
        if self._startup_failures >= _STARTUP_FAILURES_BEFORE_GIVING_UP and not self._broken:
            self._fail_everything(
                f"reward workers died {self._startup_failures} times while starting (their stderr says why)"
            )
        if self._broken:
            return
        self.stats["workers_replaced"] += 1
        self._all_ready.clear()
        self._workers.append(self._spawn())

    def _recycle(self, worker: _Worker) -> None:
        """Replace an idle worker that has served `recycle_after` calls, and with it whatever its rewards
        accumulated (sympy's caches grow for as long as a process lives)."""
        self._kill(worker)
        self._workers.remove(worker)
        self.stats["workers_recycled"] += 1
        self._all_ready.clear()
        self._workers.append(self._spawn())

    @staticmethod
    def _kill(worker: _Worker) -> None:
        worker.process.kill()
        worker.process.join(_KILL_JOIN_S)
        worker.conn.close()

    def _fail_everything(self, reason: str) -> None:
        with self._lock:
            self._broken = reason
            pending = list(self._queue)
            self._queue.clear()
        for worker in self._workers:
            pending.extend(worker.inflight)
            worker.inflight.clear()
        for batch, index, _, _ in pending:
            self._resolve(batch, index, ("error", math.nan, {}, reason, 0.0))

    @staticmethod
    def _resolve(batch: _Batch, index: int, outcome: Outcome) -> None:
        batch.outcomes[index] = outcome
        batch.left -= 1
        if batch.left == 0:
            batch.future.set_result(batch.outcomes)

    def _shutdown(self) -> None:
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except (OSError, ValueError):
                pass
        for worker in self._workers:
            worker.process.join(_KILL_JOIN_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(_KILL_JOIN_S)
            worker.conn.close()
        self._fail_everything("reward pool is closed")
