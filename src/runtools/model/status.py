"""Stages, states and termination statuses of a run (DESIGN §2)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # type checkers see ordinary str enums: members are instances of their class
    from enum import StrEnum as Names
else:
    from runtools.model._names import Names


class Stage(Names):
    """Lifecycle of a run: CREATED -> RUNNING -> ENDED."""

    CREATED = "CREATED"
    RUNNING = "RUNNING"
    ENDED = "ENDED"


class State(Names):
    """What a RUNNING run is doing right now, from its current phase."""

    PENDING = "PENDING"  # waiting at a gate (latch, approval)
    QUEUED = "QUEUED"  # waiting for a slot in an execution queue
    WAITING = "WAITING"  # waiting for another run (dependency, await, service)
    EXECUTING = "EXECUTING"


class Outcome(Names):
    SUCCESS = "SUCCESS"
    ABORTED = "ABORTED"
    REJECTED = "REJECTED"
    FAULT = "FAULT"


class Status(Names):
    """Termination status of an ended run."""

    COMPLETED = "COMPLETED"
    SKIPPED = "SKIPPED"
    STOPPED = "STOPPED"
    INTERRUPTED = "INTERRUPTED"
    CANCELLED = "CANCELLED"
    OVERLAP = "OVERLAP"
    UNSATISFIED = "UNSATISFIED"
    DENIED = "DENIED"
    TIMEOUT = "TIMEOUT"
    DISABLED = "DISABLED"
    DUPLICATE = "DUPLICATE"
    FAILED = "FAILED"
    ERROR = "ERROR"
    LOST = "LOST"

    @property
    def outcome(self) -> Outcome:
        return _OUTCOMES[self]

    @classmethod
    def parse(cls, text: str) -> Status:
        try:
            return cls(text.upper())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            from runtools.errors import UsageError

            raise UsageError(f"unknown status {text!r}: use one of {names}") from None


_OUTCOMES = {
    Status.COMPLETED: Outcome.SUCCESS,
    Status.SKIPPED: Outcome.SUCCESS,
    Status.STOPPED: Outcome.ABORTED,
    Status.INTERRUPTED: Outcome.ABORTED,
    Status.CANCELLED: Outcome.ABORTED,
    Status.OVERLAP: Outcome.REJECTED,
    Status.UNSATISFIED: Outcome.REJECTED,
    Status.DENIED: Outcome.REJECTED,
    Status.TIMEOUT: Outcome.REJECTED,
    Status.DISABLED: Outcome.REJECTED,
    Status.DUPLICATE: Outcome.REJECTED,
    Status.FAILED: Outcome.FAULT,
    Status.ERROR: Outcome.FAULT,
    Status.LOST: Outcome.FAULT,
}

# The wrapper itself failed (storage unusable, internal error): coreutils' code for it.
EXIT_WRAPPER_FAILED = 125

# Exit codes of `run job` for runs that never executed their program (DESIGN §5).
# Chosen outside the coreutils range (124-127), shell signal range (128+) and 0-2.
NOT_EXECUTED_EXIT = {
    Status.OVERLAP: 100,
    Status.DISABLED: 101,
    Status.DENIED: 102,
    Status.UNSATISFIED: 103,
    Status.CANCELLED: 104,
    Status.DUPLICATE: 105,
    Status.TIMEOUT: 106,  # a gate (--pending-timeout) or --after-timeout gave up; executed timeouts exit 124
    Status.SKIPPED: 0,
}
