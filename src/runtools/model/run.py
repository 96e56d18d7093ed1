"""The run record: everything stored about one run, and its JSON shape (docs/json.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from runtools.model.durations import iso
from runtools.model.status import Stage, State, Status


@dataclass
class RunRecord:
    """One run of a job. Times are epoch seconds; `to_json` renders them ISO 8601."""

    job_id: str
    run_id: str
    created_at: float
    stage: Stage = Stage.CREATED
    state: State | None = None
    #: why the run is in its state, for people: "QUEUED 3rd of 5 in group backup"
    detail: str | None = None
    status: Status | None = None
    exit_code: int | None = None
    started_at: float | None = None  # the program (or function) began executing
    ended_at: float | None = None
    tags: list[str] = field(default_factory=list)
    host: str | None = None
    user: str | None = None
    pid: int | None = None  # the wrapper (the process holding the lease)
    child_pid: int | None = None  # the command, once launched
    child_start: float | None = None  # start time of child_pid, to refuse signalling a reused pid
    cwd: str | None = None
    command: list[str] | None = None
    run_key: str | None = None
    attempt_no: int | None = None
    rerun_of: str | None = None
    warnings: list[str] = field(default_factory=list)
    progress: dict[str, Any] | None = None
    #: coordination settings of this run: excl_group, queue_group, max_concurrent, latch, ...
    coord: dict[str, Any] = field(default_factory=dict)
    #: who did what to the run from outside: [{"action", "by", "at", "reason"}]
    actions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    #: free-form data of the surface that started the run (orchesjob keeps its fields here)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def instance_id(self) -> str:
        return f"{self.job_id}@{self.run_id}"

    @property
    def active(self) -> bool:
        return self.stage is not Stage.ENDED

    @property
    def outcome(self) -> str | None:
        return self.status.outcome.value if self.status else None

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        if self.ended_at is None:
            import time

            return max(0.0, time.time() - self.started_at)
        return max(0.0, self.ended_at - self.started_at)

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Storage form: plain values, epoch times (round-trips through `from_dict`)."""
        d = asdict(self)
        for k in ("stage", "state", "status"):
            if d[k] is not None:
                d[k] = d[k].value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["stage"] = Stage(kw.get("stage", "CREATED"))
        if kw.get("state"):
            kw["state"] = State(kw["state"])
        if kw.get("status"):
            kw["status"] = Status(kw["status"])
        return cls(**kw)

    def to_json(self) -> dict[str, Any]:
        """The documented public JSON shape (docs/json.md): ISO times, derived keys."""
        ended = self.stage is Stage.ENDED
        return {
            "instance_id": self.instance_id,
            "job_id": self.job_id,
            "run_id": self.run_id,
            "stage": self.stage.value,
            "state": None if ended or self.state is None else self.state.value,
            "detail": None if ended else self.detail,
            "status": self.status.value if self.status else None,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_s": None if self.duration is None else round(self.duration, 3),
            "tags": list(self.tags),
            "host": self.host,
            "user": self.user,
            "pid": self.pid,
            "child_pid": self.child_pid,
            "cwd": self.cwd,
            "command": self.command,
            "run_key": self.run_key,
            "attempt_no": self.attempt_no,
            "rerun_of": self.rerun_of,
            "warnings": list(self.warnings),
            "progress": self.progress,
            "coordination": dict(self.coord),
            "actions": list(self.actions),
            "error": self.error,
            "stdout_path": self.stdout_path,
            "stderr_path": self.stderr_path,
        }
