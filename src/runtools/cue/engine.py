"""The runcue engine: an in-process asyncio scheduler for rate-limited services.

The application says *what* runs (task handlers) and whether work can run
(`is_ready`) or needs to (`is_stale`); the Cue decides *when*.

Dispatch is driven by events - work arrives, a slot frees, a rate window
opens, a timer fires - never by sweeping the whole queue. Each service keeps
its own priority heap, so the cost of one dispatch does not depend on how
much work waits elsewhere. Work whose inputs are missing parks in the
service's waiting set and is re-asked only while the service could run it.
"""

from __future__ import annotations

import asyncio
import builtins
import heapq
import inspect
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from runtools.cue.models import PriorityContext, TaskType, WorkState, WorkUnit
from runtools.cue.queues import (
    AT_BACKOFF,
    AT_DONE,
    AT_INBOX,
    AT_ORPHAN,
    AT_QUEUED,
    AT_RUNNING,
    AT_WAITING,
    Entry,
    ServiceState,
)
from runtools.cue.rates import RateWindow, parse_rate
from runtools.cue.watch import Watchdog

__all__ = ["Cue"]

_log = logging.getLogger("runcue")

F = TypeVar("F", bound=Callable[..., Any])

PENDING = WorkState.PENDING
RUNNING = WorkState.RUNNING
COMPLETED = WorkState.COMPLETED
FAILED = WorkState.FAILED
CANCELLED = WorkState.CANCELLED

_YIELD_EVERY = 500  # scheduler yields to the loop after this many queue pops in a row
_UNLIMITED_POOL = 32  # threads for sync handlers on services without a concurrency limit


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a late thread result as seen so asyncio does not log it as lost."""
    if not fut.cancelled():
        fut.exception()


class Cue:
    """An embedded scheduler: services with limits, tasks that use them, work that runs when ready.

    `pending_warn_after` / `pending_timeout` (seconds) watch each work unit from
    its submission; `stall_warn_after` / `stall_timeout` watch the whole cue for
    time without a dispatch, completion or skip while work is pending.
    `retry_delay` is the first backoff of a retrying task (doubled per attempt)
    and `recheck_interval` how often not-ready work is asked again.
    `keep_finished` bounds how many ended work units stay known to `get`/`list`
    (oldest forgotten first), so a cue that runs for days does not grow without end.
    """

    def __init__(
        self,
        *,
        pending_warn_after: float | None = None,
        pending_timeout: float | None = None,
        stall_warn_after: float | None = None,
        stall_timeout: float | None = None,
        retry_delay: float = 0.1,
        recheck_interval: float = 0.05,
        keep_finished: int = 100_000,
        env: Any = None,
    ) -> None:
        self.pending_warn_after = pending_warn_after
        self.pending_timeout = pending_timeout
        self.stall_warn_after = stall_warn_after
        self.stall_timeout = stall_timeout
        self.retry_delay = retry_delay
        self.recheck_interval = recheck_interval
        if keep_finished < 0:
            raise ValueError(f"keep_finished must be >= 0, not {keep_finished!r}")
        self.keep_finished = keep_finished
        self._finished_ids: deque[str] = deque()

        self._services: dict[str, ServiceState] = {}
        self._unlimited = ServiceState(None, None, None)
        self._task_types: dict[str, TaskType] = {}
        self._task_async: dict[str, bool] = {}
        self._entries: dict[str, Entry] = {}
        self._orphans: dict[str, dict[str, Entry]] = {}
        self._inbox: builtins.list[Entry] = []
        self._dirty: set[ServiceState] = set()
        self._in_hand: Entry | None = None  # popped from a heap, not yet placed
        self._seq = 0

        self._is_ready: Callable[..., Any] | None = None
        self._is_stale: Callable[..., Any] | None = None
        self._priority: Callable[..., Any] | None = None
        self._on_start: Callable[..., Any] | None = None
        self._on_complete: Callable[..., Any] | None = None
        self._on_failure: Callable[..., Any] | None = None
        self._on_skip: Callable[..., Any] | None = None
        self._on_pending_warning: Callable[..., Any] | None = None
        self._on_stall_warning: Callable[..., Any] | None = None

        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._sched_task: asyncio.Task[None] | None = None
        self._started = False
        self._accepting = False
        self._executor: ThreadPoolExecutor | None = None
        self._executor_size = 0
        self._bg: set[asyncio.Task[Any]] = set()
        self._joiners: list[asyncio.Future[None]] = []

        self._pending = 0  # work in PENDING state
        self._running = 0  # work in RUNNING state
        self._unfinished = 0  # work not yet ended *and* through its final callback
        self._waiting_total = 0

        self._recheck_handle: asyncio.TimerHandle | None = None
        self._recheck_at = 0.0
        self._recheck_due = False
        self._last_recheck = float("-inf")
        self._recheck_gap = 0.005

        self._watch = Watchdog(self)
        self._env = env  # Cue(env="local" | name | path | postgresql:// URL | Environment): shared services
        self._shared: Any = None  # runtools.cue.shared._Client, once a service is shared

    # ------------------------------------------------------------------ setup

    def service(self, name: str, *, rate: str | None = None, concurrent: int | None = None,
                shared: bool = False) -> None:
        """Declare (or redefine the limits of) a service that tasks can use.

        `shared=True`: the limits are the environment's service `name` (Cue(env=...)), counted
        together with every `run job --service name` and every other cue (docs/services.md)."""
        if shared:
            self._share(name, rate, concurrent)
            return
        window = RateWindow(*parse_rate(rate)) if rate is not None else None
        if concurrent is not None and (not isinstance(concurrent, int) or concurrent < 1):
            raise ValueError(f"invalid concurrent={concurrent!r} for service {name!r}: must be an int >= 1")
        svc = self._services.get(name)
        if svc is None:
            self._services[name] = ServiceState(name, concurrent, window)
        else:
            svc.concurrent = concurrent
            svc.rate = window
            self._mark(svc)

    def _share(self, name: str, rate: str | None, concurrent: int | None) -> None:
        if rate is not None or concurrent is not None:
            raise ValueError(f"service {name!r} is shared: its limits come from the environment "
                             f"(taro service set {name} ...), not from rate=/concurrent=")
        if self._env is None:
            raise ValueError(f"service {name!r} is shared, but the cue has no environment: Cue(env='local')")
        if self._shared is None:
            from runtools.cue.shared import _Client

            self._shared = _Client(self._env)
        sr = self._shared.define(name)
        svc = self._services.get(name)
        if svc is None:
            svc = self._services[name] = ServiceState(name, None, sr)
        else:
            svc.concurrent, svc.rate = None, sr
            self._mark(svc)
        sr.svc = svc
        if self._started and self._loop is not None:
            self._shared.start(self._loop, self._mark)

    def task(self, name: str, uses: str | None = None, retry: int = 1) -> Callable[[F], F]:
        """Register the decorated function (sync or async) as the handler of task `name`."""
        if uses is not None and uses not in self._services:
            raise ValueError(  # the original's words first: "Unknown service: NAME"
                f"Unknown service: {uses}. Task {name!r} uses it: declare it first with cue.service({uses!r}, ...)"
            )
        if not isinstance(retry, int) or retry < 1:
            raise ValueError(f"invalid retry={retry!r} for task {name!r}: must be an int >= 1 (attempts)")

        def register(fn: F) -> F:
            self._task_types[name] = TaskType(name=name, service=uses, handler=fn, retry=retry)
            self._task_async[name] = inspect.iscoroutinefunction(fn)
            orphans = self._orphans.pop(name, None)
            if orphans:
                for entry in orphans.values():
                    entry.where = AT_INBOX
                    self._inbox.append(entry)
                self._kick()
            return fn

        return register

    def get_task(self, name: str) -> TaskType | None:
        """The registered task type called `name`, or None."""
        return self._task_types.get(name)

    def is_ready(self, fn: F) -> F:
        """Decorator: `fn(work) -> bool`, can this work start now (are its inputs there)?"""
        self._is_ready = fn
        self._mark_all()
        return fn

    def is_stale(self, fn: F) -> F:
        """Decorator: `fn(work) -> bool`, does this work need to run (is its output missing or old)?"""
        self._is_stale = fn
        return fn

    def priority(self, fn: F) -> F:
        """Decorator: `fn(PriorityContext) -> float` in 0..1; higher runs first, FIFO among equals."""
        self._priority = fn
        return fn

    def on_start(self, fn: F) -> F:
        """Decorator: `fn(work)` before each attempt's handler runs."""
        self._on_start = fn
        return fn

    def on_complete(self, fn: F) -> F:
        """Decorator: `fn(work, result, duration)` after a handler succeeds."""
        self._on_complete = fn
        return fn

    def on_failure(self, fn: F) -> F:
        """Decorator: `fn(work, error)` once work has failed for good (error is the exception)."""
        self._on_failure = fn
        return fn

    def on_skip(self, fn: F) -> F:
        """Decorator: `fn(work)` when work is skipped because `is_stale` said no."""
        self._on_skip = fn
        return fn

    def on_pending_warning(self, fn: F) -> F:
        """Decorator: `fn(work, pending_seconds)` once per work pending past `pending_warn_after`."""
        self._on_pending_warning = fn
        return fn

    def on_stall_warning(self, fn: F) -> F:
        """Decorator: `fn(seconds_since_progress, pending_count)` once per stall."""
        self._on_stall_warning = fn
        return fn

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start scheduling in the running event loop (call it from async code)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "Cue.start() needs a running event loop: call it from async code (e.g. under asyncio.run)"
            ) from None
        if self._started:
            return
        self._loop = loop
        self._wake = asyncio.Event()
        self._started = True
        self._accepting = True
        self._sched_task = loop.create_task(self._schedule_loop(), name="runcue-scheduler")
        if self._shared is not None:
            self._shared.start(loop, self._mark)
        self._mark_all()
        self._request_recheck(0.0)
        self._watch.start(loop.time())

    async def stop(self, timeout: float | None = None) -> None:
        """Stop dispatching and wait for running work; after `timeout` seconds abandon it.

        Abandoned work ends FAILED with a TimeoutError (and `on_failure`); pending
        work stays PENDING and runs if the cue is started again.
        """
        if not self._started:
            return
        self._accepting = False
        self._started = False
        sched, self._sched_task = self._sched_task, None
        if sched is not None:
            sched.cancel()
            await asyncio.gather(sched, return_exceptions=True)
        if self._recheck_handle is not None:
            self._recheck_handle.cancel()
            self._recheck_handle = None
        self._watch.stop()
        for svc in self._all_services():
            if svc.rate_handle is not None:
                svc.rate_handle.cancel()
                svc.rate_handle = None
        for entry in self._entries.values():
            if entry.where == AT_BACKOFF and entry.handle is not None:
                entry.handle.cancel()
                entry.handle = None
                entry.where = AT_INBOX
                self._inbox.append(entry)

        running = [e.task for e in self._entries.values() if e.where == AT_RUNNING and e.task is not None]
        if running:
            _, not_done = await asyncio.wait(running, timeout=timeout)
            abandoned = [e for e in self._entries.values() if e.where == AT_RUNNING]
            exc = TimeoutError(f"cue stopped after waiting {timeout}s; work abandoned while running")
            for entry in abandoned:
                self._end(entry, FAILED, error=exc)
                self._cancel_task(entry)
            if not_done:
                await asyncio.wait(not_done, timeout=1.0)
            for entry in abandoned:
                await self._emit(self._on_failure, entry.work, exc)
                self._finish(entry)
        if self._bg:
            await asyncio.wait(list(self._bg), timeout=timeout)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            self._executor_size = 0
        if self._shared is not None:
            self._shared.stop()
        for fut in self._joiners:
            if not fut.done():
                fut.set_result(None)
        self._joiners.clear()

    async def join(self, timeout: float | None = None) -> None:
        """Wait until every submitted work unit has ended (or the cue stops).

        Raises TimeoutError if that takes longer than `timeout` seconds.
        """
        if self._unfinished == 0:
            return
        if not self._started:
            raise RuntimeError("join() on a cue that is not started: call cue.start() first")
        fut = asyncio.get_running_loop().create_future()
        self._joiners.append(fut)
        try:
            if timeout is None:
                await fut
            else:
                await asyncio.wait_for(fut, timeout)
        finally:
            if fut in self._joiners:
                self._joiners.remove(fut)

    async def __aenter__(self) -> Cue:
        self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                await self.join()
            finally:
                await self.stop()
        else:
            await self.stop(timeout=0)

    # ------------------------------------------------------------------- work

    async def submit(self, task: str, params: dict[str, Any] | None = None) -> str:
        """Queue work for `task` and return its id; dispatch happens later, never inside this call.

        Raises ValueError("Unknown task: ...") when no handler is registered for `task`, as
        the original runcue does."""
        if task not in self._task_types:
            raise ValueError(
                f"Unknown task: {task}. Register its handler first with @cue.task({task!r}, ...)"
            )
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
        entries = self._entries
        wid = os.urandom(6).hex()
        while wid in entries:
            wid = os.urandom(6).hex()
        work = WorkUnit(wid, task, params if params is not None else {}, PENDING, time.time())
        now = loop.time()
        self._seq += 1
        entry = Entry(work, self._seq, now)
        entries[wid] = entry
        self._became_pending(now)
        self._unfinished += 1
        self._inbox.append(entry)
        self._watch.submitted(entry, now)
        if self._wake is not None:
            self._wake.set()
        return wid

    async def get(self, work_id: str) -> WorkUnit | None:
        """The work unit with this id, or None."""
        entry = self._entries.get(work_id)
        return entry.work if entry is not None else None

    async def list(
        self, state: WorkState | str | None = None, task: str | None = None, limit: int = 100
    ) -> list[WorkUnit]:
        """Work units in submission order, filtered by state and task, at most `limit`."""
        wanted = WorkState(state) if state is not None else None
        out: list[WorkUnit] = []
        for entry in self._entries.values():
            work = entry.work
            if (wanted is None or work.state is wanted) and (task is None or work.task == task):
                out.append(work)
                if len(out) >= limit:
                    break
        return out

    async def cancel(self, work_id: str) -> bool:
        """Cancel pending or running work; False if it is unknown or already ended.

        A running async handler is cancelled; a running sync handler cannot be
        interrupted, so its result is discarded and its service slot is freed
        when the thread returns.
        """
        entry = self._entries.get(work_id)
        if entry is None:
            return False
        state = entry.work.state
        if state is PENDING:
            self._detach_pending(entry)
            self._end(entry, CANCELLED)
            self._finish(entry)
            return True
        if state is RUNNING:
            self._end(entry, CANCELLED)
            self._cancel_task(entry)
            self._finish(entry)
            return True
        return False

    def _cancel_task(self, entry: Entry) -> None:
        """Cancel a launched handler task; one cancelled before its first step never runs to release."""
        if entry.task is not None:
            entry.task.cancel()
            if not entry.entered:
                entry.entered = True
                self._release(entry)

    def debug_blocked(self) -> builtins.list[dict[str, Any]]:
        """Why pending work is not running: `not_ready`, `service_full`, `rate_limited`, `unknown_task`."""
        now = self._now()
        out: list[dict[str, Any]] = []
        for entry in self._entries.values():
            work = entry.work
            if work.state is not PENDING:
                continue
            waited = now - entry.submitted
            if entry.where == AT_ORPHAN or work.task not in self._task_types:
                out.append(
                    {
                        "work": work,
                        "reason": "unknown_task",
                        "details": f"no handler registered for task {work.task!r}",
                    }
                )
            elif entry.where == AT_WAITING:
                out.append(
                    {
                        "work": work,
                        "reason": "not_ready",
                        "details": f"is_ready returned False for {work.task!r} (pending {waited:.1f}s)",
                    }
                )
            elif entry.where in (AT_QUEUED, AT_INBOX):
                svc = entry.svc or self._svc_for(self._task_types[work.task])
                if svc.concurrent is not None and svc.running >= svc.concurrent:
                    out.append(
                        {
                            "work": work,
                            "reason": "service_full",
                            "details": f"service {svc.name!r} at capacity "
                            f"({svc.running}/{svc.concurrent} running, {len(svc.queue)} queued)",
                        }
                    )
                elif svc.rate is not None and svc.rate.shared and not svc.rate.available(now):
                    out.append({"work": work, **svc.rate.blocked()})  # type: ignore[attr-defined]
                elif svc.rate is not None and not svc.rate.available(now):
                    wait = svc.rate.next_free(now) - now
                    out.append(
                        {
                            "work": work,
                            "reason": "rate_limited",
                            "details": f"service {svc.name!r} used {svc.rate.count} starts per "
                            f"{svc.rate.period:g}s; next start in {wait:.1f}s",
                        }
                    )
        return out

    # -------------------------------------------------------------- scheduler

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    def _all_services(self) -> builtins.list[ServiceState]:
        return [*self._services.values(), self._unlimited]

    def _svc_for(self, tt: TaskType) -> ServiceState:
        return self._services[tt.service] if tt.service is not None else self._unlimited

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _mark(self, svc: ServiceState) -> None:
        self._dirty.add(svc)
        self._kick()

    def _mark_all(self) -> None:
        for svc in self._all_services():
            if svc.queue:
                self._dirty.add(svc)
        self._kick()

    async def _schedule_loop(self) -> None:
        wake = self._wake
        assert wake is not None and self._loop is not None
        loop_time = self._loop.time
        while True:
            await wake.wait()
            wake.clear()
            try:
                if self._inbox:
                    await self._drain_inbox()
                recheck_started = None
                if self._recheck_due:
                    self._recheck_due = False
                    recheck_started = loop_time()
                    self._move_waiting_back(recheck_started)
                dirty = self._dirty
                while dirty and self._accepting:
                    await self._dispatch(dirty.pop())
                if recheck_started is not None:
                    spent = loop_time() - recheck_started
                    self._recheck_gap = min(max(0.005, 2 * spent), 1.0)
                if self._waiting_total:
                    self._request_recheck(self.recheck_interval)
            except Exception:  # a bug here must not silently stop all scheduling
                _log.exception("runcue scheduler error")

    async def _drain_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        try:
            await self._drain(inbox)
        except asyncio.CancelledError:  # stopped mid-way: keep what was not placed yet
            self._inbox[:0] = [e for e in inbox if e.where == AT_INBOX]
            raise

    async def _drain(self, inbox: builtins.list[Entry]) -> None:
        task_types = self._task_types
        prio_cb = self._priority
        dirty = self._dirty
        push = heapq.heappush
        for entry in inbox:
            work = entry.work
            if entry.where != AT_INBOX or work.state is not PENDING:
                continue
            tt = task_types.get(work.task)
            if tt is None:
                entry.where = AT_ORPHAN
                self._orphans.setdefault(work.task, {})[work.id] = entry
                continue
            svc = self._svc_for(tt)
            entry.svc = svc
            entry.tt = tt
            if prio_cb is not None:
                entry.prio = await self._ask_priority(prio_cb, entry)
                if entry.where != AT_INBOX or work.state is not PENDING:
                    continue
            entry.where = AT_QUEUED
            push(svc.queue, (-entry.prio, entry.seq, entry))
            dirty.add(svc)

    async def _ask_priority(self, prio_cb: Callable[..., Any], entry: Entry) -> float:
        ctx = PriorityContext(entry.work, self._now() - entry.submitted, self._pending)
        try:
            value = prio_cb(ctx)
            if inspect.isawaitable(value):
                value = await value
            return min(1.0, max(0.0, float(value)))
        except Exception:
            _log.exception("runcue priority callback failed for %s; using 0", entry.work.id)
            return 0.0

    async def _reprioritize(self, svc: ServiceState, prio_cb: Callable[..., Any]) -> None:
        """Re-ask priorities of queued work so waiting time can age it upwards."""
        entries = [item[2] for item in svc.queue if item[2].where == AT_QUEUED]
        for entry in entries:
            entry.prio = await self._ask_priority(prio_cb, entry)
        svc.queue = [(-e.prio, e.seq, e) for e in entries if e.where == AT_QUEUED]
        heapq.heapify(svc.queue)

    async def _dispatch(self, svc: ServiceState) -> None:
        """Start work from this service's queue while it has capacity."""
        try:
            await self._dispatch_queue(svc)
        except asyncio.CancelledError:  # stopped while asking a callback: put the work back in line
            entry = self._in_hand
            if entry is not None and entry.where == AT_QUEUED:
                heapq.heappush(svc.queue, (-entry.prio, entry.seq, entry))
            raise
        finally:
            self._in_hand = None

    async def _dispatch_queue(self, svc: ServiceState) -> None:
        loop_time = self._loop.time  # type: ignore[union-attr]
        pop = heapq.heappop
        ready_cb = self._is_ready
        stale_cb = self._is_stale
        prio_cb = self._priority
        if prio_cb is not None and len(svc.queue) > 1 and loop_time() - svc.last_reprio >= 1.0:
            svc.last_reprio = loop_time()
            await self._reprioritize(svc, prio_cb)
        popped = 0
        while svc.queue and self._accepting:
            if svc.concurrent is not None and svc.running >= svc.concurrent:
                return
            rate = svc.rate
            if rate is not None:
                now = loop_time()
                if not rate.available(now):
                    self._arm_rate(svc, rate.next_free(now))
                    return
            entry = self._in_hand = pop(svc.queue)[2]
            if entry.where != AT_QUEUED:
                continue
            popped += 1
            if popped % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
                if entry.where != AT_QUEUED or not self._accepting:
                    if entry.where == AT_QUEUED:
                        heapq.heappush(svc.queue, (-entry.prio, entry.seq, entry))
                    continue
            work = entry.work
            if ready_cb is not None:
                try:
                    ok = ready_cb(work)
                    if inspect.isawaitable(ok):
                        ok = await ok
                except Exception:
                    _log.debug("runcue is_ready raised for %s; treating as not ready", work.id, exc_info=True)
                    ok = False
                if entry.where != AT_QUEUED:
                    continue
                if not ok:
                    entry.where = AT_WAITING
                    svc.waiting[work.id] = entry
                    self._waiting_total += 1
                    continue
            if stale_cb is not None:
                try:
                    stale = stale_cb(work)
                    if inspect.isawaitable(stale):
                        stale = await stale
                except Exception:
                    _log.debug("runcue is_stale raised for %s; treating as stale", work.id, exc_info=True)
                    stale = True
                if entry.where != AT_QUEUED:
                    continue
                if not stale:
                    self._skip(entry)
                    continue
            if not self._accepting or not svc.can_start(loop_time()):
                heapq.heappush(svc.queue, (-entry.prio, entry.seq, entry))
                continue
            self._launch(entry, svc, loop_time())

    def _launch(self, entry: Entry, svc: ServiceState, now: float) -> None:
        svc.running += 1
        if svc.rate is not None:
            svc.rate.record(now)
        work = entry.work
        work.state = RUNNING
        work.started_at = time.time()
        entry.where = AT_RUNNING
        entry.started = True
        entry.t0 = now
        self._pending -= 1
        self._running += 1
        self._watch.last_progress = now
        entry.task = self._loop.create_task(self._execute(entry, svc))  # type: ignore[union-attr]

    def _skip(self, entry: Entry) -> None:
        self._end(entry, COMPLETED)
        self._progress()
        self._emit_then_finish(entry, self._on_skip, entry.work)

    def _arm_rate(self, svc: ServiceState, at: float) -> None:
        if svc.rate_handle is None:
            # a hair late rather than early: the loop may fire timers up to its clock resolution early
            svc.rate_handle = self._loop.call_at(at + 0.0005, self._rate_open, svc)  # type: ignore[union-attr]

    def _rate_open(self, svc: ServiceState) -> None:
        svc.rate_handle = None
        self._mark(svc)

    # ---------------------------------------------------- not-ready rechecks

    def _request_recheck(self, delay: float) -> None:
        if not self._waiting_total or not self._accepting or self._loop is None:
            return
        now = self._loop.time()
        at = max(now + delay, self._last_recheck + self._recheck_gap)
        if self._recheck_handle is not None:
            if self._recheck_at <= at:
                return
            self._recheck_handle.cancel()
        self._recheck_at = at
        self._recheck_handle = self._loop.call_at(at, self._on_recheck)

    def _on_recheck(self) -> None:
        self._recheck_handle = None
        self._recheck_due = True
        self._kick()

    def _move_waiting_back(self, now: float) -> None:
        """Put not-ready work back in line, only for services that could run it now."""
        self._last_recheck = now
        push = heapq.heappush
        for svc in self._all_services():
            if not svc.waiting or not svc.can_start(now):
                continue
            for entry in svc.waiting.values():
                entry.where = AT_QUEUED
                push(svc.queue, (-entry.prio, entry.seq, entry))
            self._waiting_total -= len(svc.waiting)
            svc.waiting = {}
            self._dirty.add(svc)

    # -------------------------------------------------------------- execution

    def _executor_for(self) -> ThreadPoolExecutor:
        need = max(8, sum(s.concurrent or 0 for s in self._services.values()) + _UNLIMITED_POOL)
        if self._executor is None or self._executor_size < need:
            old = self._executor
            self._executor = ThreadPoolExecutor(max_workers=need, thread_name_prefix="runcue")
            self._executor_size = need
            if old is not None:
                old.shutdown(wait=False)
        return self._executor

    async def _run_sync(self, entry: Entry, fn: Callable[..., Any], work: WorkUnit) -> Any:
        cfut = self._executor_for().submit(fn, work)
        afut = asyncio.wrap_future(cfut)
        try:
            return await asyncio.shield(afut)
        except asyncio.CancelledError:
            if not cfut.cancel():
                # the thread cannot be interrupted: keep its slot until it returns
                entry.thread_busy = True
                afut.add_done_callback(lambda f: self._thread_returned(entry, f))
            raise

    def _thread_returned(self, entry: Entry, fut: asyncio.Future[Any]) -> None:
        _consume(fut)
        entry.thread_busy = False
        self._release(entry)

    def _release(self, entry: Entry) -> None:
        svc = entry.svc
        if svc is not None:
            svc.running -= 1
            if svc.rate is not None and svc.rate.shared:
                svc.rate.released()  # type: ignore[attr-defined]
            self._dirty.add(svc)
            self._kick()
            if self._waiting_total:
                self._request_recheck(0.0)

    async def _execute(self, entry: Entry, svc: ServiceState) -> None:
        entry.entered = True
        work = entry.work
        tt = entry.tt
        assert tt is not None
        try:
            if self._on_start is not None:
                await self._emit(self._on_start, work)
            if self._task_async.get(tt.name, False):
                result = await tt.handler(work)
            else:
                result = await self._run_sync(entry, tt.handler, work)
            if inspect.isawaitable(result):
                result = await result
        except asyncio.CancelledError:
            if not entry.thread_busy:
                self._release(entry)
            if work.state is RUNNING:  # cancelled from outside the cue (e.g. loop shutdown)
                self._end(entry, CANCELLED)
                self._finish(entry)
                raise
            return
        except Exception as exc:
            self._release(entry)
            if work.state is not RUNNING:  # cancelled or abandoned meanwhile
                return
            self._progress()
            if work.attempt < tt.retry and self._accepting:
                self._retry_later(entry, exc)
                return
            self._end(entry, FAILED, error=exc)
            await self._emit(self._on_failure, work, exc)
            self._finish(entry)
            return
        self._release(entry)
        if work.state is not RUNNING:
            return
        work.result = result
        work.error = None
        self._end(entry, COMPLETED)
        self._progress()
        if self._on_complete is not None:
            await self._emit(self._on_complete, work, result, self._loop.time() - entry.t0)  # type: ignore[union-attr]
        self._finish(entry)

    def _retry_later(self, entry: Entry, exc: Exception) -> None:
        work = entry.work
        delay = min(self.retry_delay * 2 ** (work.attempt - 1), 60.0)
        self._running -= 1
        work.error = str(exc)
        work.state = PENDING
        work.started_at = None
        work.attempt += 1
        self._became_pending(self._loop.time())  # type: ignore[union-attr]
        entry.where = AT_BACKOFF
        entry.handle = self._loop.call_later(delay, self._requeue, entry)  # type: ignore[union-attr]

    def _requeue(self, entry: Entry) -> None:
        entry.handle = None
        if entry.where == AT_BACKOFF and entry.work.state is PENDING:
            entry.where = AT_INBOX
            self._inbox.append(entry)
            self._kick()

    # ------------------------------------------------------------ accounting

    def _became_pending(self, now: float) -> None:
        self._pending += 1
        self._watch.became_pending(self._pending == 1, now)

    def _progress(self) -> None:
        if self._loop is not None:
            self._watch.last_progress = self._loop.time()

    def _end(self, entry: Entry, state: WorkState, error: BaseException | None = None) -> None:
        """Move work into a final state and fix the counters (callbacks come after)."""
        work = entry.work
        if work.state is PENDING:
            self._pending -= 1
        elif work.state is RUNNING:
            self._running -= 1
        work.state = state
        work.completed_at = time.time()
        if error is not None:
            work.error = str(error) or type(error).__name__
        entry.where = AT_DONE

    def _finish(self, entry: Entry) -> None:
        """The work and its final callback are done: count it for join()."""
        if entry.finished:
            return
        entry.finished = True
        self._unfinished -= 1
        done = self._finished_ids
        done.append(entry.work.id)
        while len(done) > self.keep_finished:
            self._entries.pop(done.popleft(), None)
        if self._unfinished == 0 and self._joiners:
            for fut in self._joiners:
                if not fut.done():
                    fut.set_result(None)
            self._joiners.clear()

    def _detach_pending(self, entry: Entry) -> None:
        """Take pending work out of wherever it waits (heap entries are dropped lazily)."""
        where = entry.where
        if where == AT_WAITING and entry.svc is not None:
            if entry.svc.waiting.pop(entry.work.id, None) is not None:
                self._waiting_total -= 1
        elif where == AT_ORPHAN:
            self._orphans.get(entry.work.task, {}).pop(entry.work.id, None)
        elif where == AT_BACKOFF and entry.handle is not None:
            entry.handle.cancel()
            entry.handle = None
        entry.where = AT_DONE

    def _fail_pending(self, entry: Entry, exc: BaseException) -> None:
        self._detach_pending(entry)
        self._end(entry, FAILED, error=exc)
        self._emit_then_finish(entry, self._on_failure, entry.work, exc)

    # -------------------------------------------------------------- callbacks

    async def _emit(self, fn: Callable[..., Any] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            res = fn(*args)
            if inspect.isawaitable(res):
                await res
        except Exception:
            _log.exception("runcue callback %s failed", getattr(fn, "__name__", fn))

    def _emit_then_finish(self, entry: Entry, fn: Callable[..., Any] | None, *args: Any) -> None:
        """Run a callback from sync code: inline if it is sync, as a tracked task if it is async."""
        if fn is None:
            self._finish(entry)
            return
        try:
            res = fn(*args)
        except Exception:
            _log.exception("runcue callback %s failed", getattr(fn, "__name__", fn))
            self._finish(entry)
            return
        if inspect.isawaitable(res):
            self._spawn(self._await_then_finish(entry, res))
        else:
            self._finish(entry)

    async def _await_then_finish(self, entry: Entry | None, aw: Awaitable[Any]) -> None:
        try:
            await aw
        except Exception:
            _log.exception("runcue callback failed")
        finally:
            if entry is not None:
                self._finish(entry)

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)  # type: ignore[union-attr]
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
