"""Timeouts and warnings of a cue: pending deadlines per work unit, and the stall clock.

Deadlines come in submission order, so each kind sits in a deque whose head is
the next to fire, and one timer serves them all. The stall clock is a single
timestamp updated on progress; its timer re-arms lazily, so progress itself
costs one assignment.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtools.cue.models import WorkState, WorkUnit

if TYPE_CHECKING:
    from runtools.cue.engine import Cue
    from runtools.cue.queues import Entry

_log = logging.getLogger("runcue")
PENDING = WorkState.PENDING


class Watchdog:
    """Fires pending warnings/timeouts and stall warnings/timeouts for one Cue."""

    def __init__(self, cue: Cue) -> None:
        self.cue = cue
        self.warn_q: deque[tuple[float, Entry]] = deque()
        self.timeout_q: deque[tuple[float, Entry]] = deque()
        self.deadline_handle: asyncio.TimerHandle | None = None
        self.last_progress = 0.0
        self.stall_warned_for: float | None = None
        self.stall_handle: asyncio.TimerHandle | None = None

    def start(self, now: float) -> None:
        """Begin watching: the stall clock starts now, deadlines already run from submission."""
        self.last_progress = now
        self.arm_deadlines()
        self.arm_stall()

    def stop(self) -> None:
        """Cancel the timers (the deadline queues stay, to be armed again by start)."""
        for handle in (self.deadline_handle, self.stall_handle):
            if handle is not None:
                handle.cancel()
        self.deadline_handle = self.stall_handle = None

    def submitted(self, entry: Entry, now: float) -> None:
        """Start the pending clocks of newly submitted work."""
        cue = self.cue
        if cue.pending_warn_after is not None:
            self.warn_q.append((now + cue.pending_warn_after, entry))
        if cue.pending_timeout is not None:
            self.timeout_q.append((now + cue.pending_timeout, entry))
        if self.deadline_handle is None and (self.warn_q or self.timeout_q):
            self.arm_deadlines()

    def became_pending(self, nothing_was_pending: bool, now: float) -> None:
        """Work turned pending; time with nothing pending is not a stall."""
        if nothing_was_pending:
            self.last_progress = now
        if self.stall_handle is None and self.cue._started:
            self.arm_stall()

    # -------------------------------------------------------------- deadlines

    def arm_deadlines(self) -> None:
        loop = self.cue._loop
        if self.deadline_handle is not None or loop is None:
            return
        heads = [q[0][0] for q in (self.warn_q, self.timeout_q) if q]
        if heads:
            self.deadline_handle = loop.call_at(min(heads), self._on_deadline)

    def _on_deadline(self) -> None:
        self.deadline_handle = None
        cue = self.cue
        now = cue._now()
        warn_q, timeout_q = self.warn_q, self.timeout_q
        while warn_q and warn_q[0][0] <= now:
            entry = warn_q.popleft()[1]
            if entry.work.state is PENDING and not entry.started:
                self._pending_warning(entry.work, now - entry.submitted)
        while timeout_q and timeout_q[0][0] <= now:
            entry = timeout_q.popleft()[1]
            if entry.work.state is PENDING and not entry.started:
                waited = now - entry.submitted  # the original's words first, then which work
                cue._fail_pending(entry, TimeoutError(
                    f"Pending timeout: waited {waited:.1f}s (limit: {cue.pending_timeout}s) "
                    f"without starting: work {entry.work.id} ({entry.work.task})"
                ))
        self.arm_deadlines()

    def _pending_warning(self, work: WorkUnit, seconds: float) -> None:
        callback = self.cue._on_pending_warning
        if callback is None:
            print(f"runcue: warning: work {work.id} ({work.task}) pending for {seconds:.1f}s", file=sys.stderr)
        else:
            self._call(callback, work, seconds)

    # ------------------------------------------------------------------ stall

    def arm_stall(self) -> None:
        cue = self.cue
        warn, limit = cue.stall_warn_after, cue.stall_timeout
        if self.stall_handle is not None or cue._loop is None or cue._pending == 0:
            return
        if warn is None and limit is None:
            return
        now = cue._loop.time()
        last = self.last_progress
        at = float("inf")
        if warn is not None:  # once warned for this stall, look again later to notice progress
            at = last + warn if self.stall_warned_for != last else now + warn
        if limit is not None:
            at = min(at, last + limit)
        self.stall_handle = cue._loop.call_at(max(at, now + 0.001), self._on_stall_timer)

    def _on_stall_timer(self) -> None:
        self.stall_handle = None
        cue = self.cue
        if cue._pending == 0 or not cue._started:
            return
        last = self.last_progress
        idle = cue._now() - last
        warn, limit = cue.stall_warn_after, cue.stall_timeout
        if warn is not None and idle >= warn and self.stall_warned_for != last:
            self.stall_warned_for = last
            if cue._on_stall_warning is None:
                print(
                    f"runcue: warning: no progress for {idle:.1f}s with {cue._pending} work pending",
                    file=sys.stderr,
                )
            else:
                self._call(cue._on_stall_warning, idle, cue._pending)
        if limit is not None and idle >= limit:
            error = f"Stall timeout: no progress for {idle:.1f}s (limit: {limit}s) while work was pending"
            for entry in [e for e in cue._entries.values() if e.work.state is PENDING]:
                cue._fail_pending(entry, TimeoutError(error))
        self.arm_stall()

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a warning callback from a timer: inline if sync, as a tracked task if async."""
        try:
            res = fn(*args)
        except Exception:
            _log.exception("runcue callback %s failed", getattr(fn, "__name__", fn))
            return
        if inspect.isawaitable(res):
            self.cue._spawn(self.cue._await_then_finish(None, res))
