"""The run record: everything stored about one run, and its JSON shape (docs/json.md).

A plain class rather than a dataclass: `dataclasses` pulls in `inspect`, which alone costs
`run job` more than all of its own work.
"""

from __future__ import annotations

import time

from runtools.model.status import Stage, State, Status

TYPE_CHECKING = False  # `typing` costs ms to import; annotations stay strings
if TYPE_CHECKING:
    from typing import Any

# field name -> default; callables make fresh mutable defaults
_FIELDS: dict[str, object] = {
    "job_id": None,
    "run_id": None,
    "created_at": None,
    "stage": Stage.CREATED,
    "state": None,
    "detail": None,  # why the run is in its state, for people: "QUEUED 3rd of 5 in group backup"
    "status": None,
    "exit_code": None,
    "started_at": None,  # the program (or function) began executing
    "ended_at": None,
    "tags": list,
    "host": None,
    "user": None,
    "pid": None,  # the wrapper: the process holding the lease
    "child_pid": None,  # the command, once launched
    "child_start": None,  # start time of child_pid (clock ticks), to refuse signalling a reused pid
    "cwd": None,
    "command": None,
    "run_key": None,
    "attempt_no": None,
    "rerun_of": None,
    "warnings": list,
    "progress": None,
    "coord": dict,  # coordination settings of this run: excl_group, queue_group, max_concurrent, latch...
    "actions": list,  # who did what to the run from outside: [{"action", "by", "at", "reason"}]
    "error": None,
    "stdout_path": None,
    "stderr_path": None,
    "extra": dict,  # free-form data of the surface that started the run (orchesjob keeps its fields here)
}
_ENUMS = {"stage": Stage, "state": State, "status": Status}


class RunRecord:
    """One run of a job. Times are epoch seconds; `to_json` renders them as ISO 8601."""

    __slots__ = tuple(_FIELDS)

    job_id: str
    run_id: str
    created_at: float
    stage: Stage
    state: State | None
    detail: str | None
    status: Status | None
    exit_code: int | None
    started_at: float | None
    ended_at: float | None
    tags: list[str]
    host: str | None
    user: str | None
    pid: int | None
    child_pid: int | None
    child_start: float | None
    cwd: str | None
    command: list[str] | None
    run_key: str | None
    attempt_no: int | None
    rerun_of: str | None
    warnings: list[str]
    progress: dict[str, Any] | None
    coord: dict[str, Any]
    actions: list[dict[str, Any]]
    error: str | None
    stdout_path: str | None
    stderr_path: str | None
    extra: dict[str, Any]

    def __init__(self, job_id: str, run_id: str, created_at: float, **kw: Any) -> None:
        self.job_id = job_id
        self.run_id = run_id
        self.created_at = created_at
        for name, default in _FIELDS.items():
            if name in ("job_id", "run_id", "created_at"):
                continue
            if name in kw:
                value = kw.pop(name)
            else:
                value = default() if callable(default) else default
            setattr(self, name, value)
        if kw:
            raise TypeError(f"unknown run record fields: {', '.join(kw)}")

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
        end = self.ended_at if self.ended_at is not None else time.time()
        return max(0.0, end - self.started_at)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunRecord) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # records are mutable

    def __repr__(self) -> str:
        return f"RunRecord({self.instance_id}, {self.stage}, state={self.state}, status={self.status})"

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Storage form: plain values, epoch times (round-trips through `from_dict`)."""
        d = {}
        for name in _FIELDS:
            v = getattr(self, name)
            if isinstance(v, list | dict):
                v = _copy(v)
            elif v is not None and name in _ENUMS:
                v = str.__str__(v)
            d[name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        kw = {k: _copy(v) if isinstance(v, list | dict) else v for k, v in d.items() if k in _FIELDS}
        for name, enum in _ENUMS.items():
            if kw.get(name) is not None:
                kw[name] = enum(kw[name])
        if not kw.get("stage"):
            kw["stage"] = Stage.CREATED
        return cls(**kw)

    def copy(self) -> RunRecord:
        return RunRecord.from_dict(self.to_dict())

    def to_json(self) -> dict[str, Any]:
        """The documented public JSON shape (docs/json.md): ISO times, derived keys."""
        from runtools.model.durations import iso

        ended = self.stage is Stage.ENDED
        duration = self.duration
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
            "duration_s": None if duration is None else round(duration, 3),
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
            "coordination": _copy(self.coord),
            "actions": _copy(self.actions),
            "error": self.error,
            "stdout_path": self.stdout_path,
            "stderr_path": self.stderr_path,
        }


def _copy(v: Any) -> Any:
    if isinstance(v, list):
        return [_copy(x) for x in v]
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    return v
