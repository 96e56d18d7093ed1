"""Events pushed to listeners: lifecycle and phase transitions, control actions, output."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from runtools.model.durations import iso
from runtools.model.run import RunRecord


@dataclass
class Event:
    """`event` names the transition: created, pending, queued, waiting, executing, ended,
    released, approved, denied, stopped, warning, progress."""

    event: str
    run: RunRecord
    timestamp: float = field(default_factory=time.time)
    detail: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
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
