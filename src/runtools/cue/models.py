"""The nouns of runcue: work units, their states, task types and the priority context.

Kept free of scheduling logic so applications (and `runcue.models`) can import
them without pulling in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class WorkState(StrEnum):
    """Where a work unit is in its life; the values are the strings users compare against."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class WorkUnit:
    """One submitted piece of work.

    `error` holds the failure's message (the exception object itself goes to
    `on_failure`); `attempt` counts up from 1 when a task retries. Work skipped
    because `is_stale` said no ends COMPLETED with `started_at` None.
    """

    id: str
    task: str
    params: dict[str, Any] = field(default_factory=dict)
    state: WorkState = WorkState.PENDING
    created_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    result: Any = None
    error: str | None = None
    attempt: int = 1


@dataclass
class TaskType:
    """A registered task: its handler, the service it uses and how many attempts it gets."""

    name: str
    service: str | None = None
    handler: Any = None
    retry: int = 1


@dataclass
class PriorityContext:
    """What a `priority` callback sees: the work, how long it has waited, and how much is pending."""

    work: WorkUnit
    wait_time: float
    queue_depth: int
