"""The engine's bookkeeping: per-service queues and the per-work entry.

Kept apart from the scheduler so the data it moves around is visible at a glance.
A pending entry lives in exactly one place, named by `Entry.where`; heap records
of entries that moved on are dropped lazily when popped.
"""

from __future__ import annotations

import asyncio

from runtools.cue.models import TaskType, WorkUnit
from runtools.cue.rates import RateWindow

# Where a pending entry lives (plain ints: compared on the hot path).
AT_INBOX, AT_QUEUED, AT_WAITING, AT_ORPHAN, AT_BACKOFF, AT_RUNNING, AT_DONE = range(7)


class ServiceState:
    """Limits and queues of one service."""

    __slots__ = ("concurrent", "last_reprio", "name", "queue", "rate", "rate_handle", "running", "waiting")

    def __init__(self, name: str | None, concurrent: int | None, rate: RateWindow | None) -> None:
        self.name = name
        self.concurrent = concurrent
        self.rate = rate
        self.running = 0
        self.queue: list[tuple[float, int, Entry]] = []
        self.waiting: dict[str, Entry] = {}
        self.rate_handle: asyncio.TimerHandle | None = None
        self.last_reprio = 0.0

    def can_start(self, now: float) -> bool:
        """Whether one more work unit may start now (a free slot and room in the rate window)."""
        if self.concurrent is not None and self.running >= self.concurrent:
            return False
        return self.rate is None or self.rate.available(now)


class Entry:
    """Engine-side bookkeeping of one work unit (kept off the public WorkUnit)."""

    __slots__ = (
        "entered",
        "finished",
        "handle",
        "prio",
        "seq",
        "started",
        "submitted",
        "svc",
        "t0",
        "task",
        "thread_busy",
        "tt",
        "where",
        "work",
    )

    def __init__(self, work: WorkUnit, seq: int, submitted: float) -> None:
        self.work = work
        self.seq = seq
        self.submitted = submitted
        self.prio = 0.0
        self.where = AT_INBOX
        self.svc: ServiceState | None = None
        self.tt: TaskType | None = None
        self.task: asyncio.Task[None] | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.t0 = 0.0
        self.started = False
        self.thread_busy = False
        self.entered = False  # the handler task has begun running (and will release its slot)
        self.finished = False
