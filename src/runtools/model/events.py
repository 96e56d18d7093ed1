"""Events pushed to listeners: lifecycle and phase transitions, control actions, output."""

from __future__ import annotations

import time

from runtools.model.run import RunRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Event:
    """`event` names the transition: created, pending, queued, waiting, executing, ended,
    released, approved, denied, stopped, warning, progress, overlap, ..."""

    __slots__ = ("detail", "event", "run", "timestamp")

    def __init__(
        self, event: str, run: RunRecord, timestamp: float | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        self.event = event
        self.run = run
        self.timestamp = time.time() if timestamp is None else timestamp
        self.detail = detail

    def __repr__(self) -> str:
        return f"Event({self.event}, {self.run.instance_id})"

    def to_json(self) -> dict[str, Any]:
        from runtools.model.durations import iso

        r = self.run
        return {
            "event": self.event,
            "instance_id": r.instance_id,
            "job_id": r.job_id,
            "run_id": r.run_id,
            "stage": r.stage.value,
            "state": r.state.value if r.state and r.active else None,
            "status": r.status.value if r.status else None,
            "timestamp": iso(self.timestamp),
            "detail": self.detail,
            "run": r.to_json(),
        }

    def to_wire(self) -> dict[str, Any]:
        return {"event": self.event, "timestamp": self.timestamp, "detail": self.detail, "run": self.run.to_dict()}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Event:
        return cls(d["event"], RunRecord.from_dict(d["run"]), d["timestamp"], d.get("detail"))
