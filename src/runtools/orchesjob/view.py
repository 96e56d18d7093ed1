"""How a run looks to orchesjob users: the job object of seed 004, key for key.

A run started by `orchesjob` is an ordinary run of the environment; this module only maps
its record onto orchesjob's words (DESIGN §2): STARTING=CREATED (or not yet executing),
RUNNING, SUCCEEDED=COMPLETED, FAILED=FAILED/ERROR, ABORTED=STOPPED, LOST, CANCELLED.
orchesjob's own fields (strict, rerun_reason, abort_reason, aborted_at) live in `run.extra`.
"""

from __future__ import annotations

import time

from runtools.model.run import RunRecord
from runtools.model.status import Stage, Status

TYPE_CHECKING = False  # keep `typing` off the hot path
if TYPE_CHECKING:
    from typing import Any

JOB = "orchesjob"  # the job id of runs started by orchesjob; the run id is the orchesjob job_id (a UUID)
ACTIVE = ("STARTING", "RUNNING")

_ENDED = {
    Status.COMPLETED: "SUCCEEDED",
    Status.SKIPPED: "SUCCEEDED",
    Status.FAILED: "FAILED",
    Status.ERROR: "FAILED",
    Status.TIMEOUT: "FAILED",
    Status.STOPPED: "ABORTED",
    Status.INTERRUPTED: "ABORTED",
    Status.LOST: "LOST",
}


def status_of(r: RunRecord) -> str:
    if r.extra.get("aborted_at") is not None:
        return "ABORTED"  # marked before any signal was sent, whatever the processes do next
    if r.stage is Stage.CREATED:
        return "STARTING"
    if r.stage is Stage.RUNNING:
        return "RUNNING" if r.child_pid is not None else "STARTING"
    return _ENDED.get(r.status, "CANCELLED") if r.status is not None else "LOST"


def secs(ts: float | None) -> int | None:
    return None if ts is None else int(ts)


_LAST_SHOWN = 253402300799  # 9999-12-31T23:59:59Z: a date stored out of range is shown as this


def iso(ts: float | int | None) -> str | None:
    """Local time with offset, whole seconds: 2026-05-01T02:00:00+09:00 (+00:00 in UTC)."""
    if ts is None:
        return None
    try:
        t = time.localtime(int(ts))
    except (OverflowError, OSError, ValueError):  # a stored date past what the platform shows
        t = time.localtime(_LAST_SHOWN if ts > 0 else 0)
    off = t.tm_gmtoff or 0
    sign = "-" if off < 0 else "+"
    off = abs(off)
    zone = f"{sign}{off // 3600:02d}:{off % 3600 // 60:02d}"
    if off % 60:
        zone += f":{off % 60:02d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + zone


def job_id_of(instance_id: str | None) -> str | None:
    if instance_id is None:
        return None
    return instance_id.partition("@")[2] or instance_id


def format_job(r: RunRecord) -> dict[str, Any]:
    x = r.extra
    status = status_of(r)
    aborted_at = x.get("aborted_at")
    if status == "ABORTED":  # as the original: the abort time, and no exit code
        finished = aborted_at if aborted_at is not None else r.ended_at
        exit_code = None
    else:
        finished = r.ended_at
        exit_code = -1 if r.status is Status.ERROR else r.exit_code  # ERROR: could not launch
        if r.started_at is None and r.status is not Status.ERROR:
            exit_code = None  # never executed: the original has no code (the run's record keeps 100-106)
    times = [t for t in (r.created_at, r.started_at, r.ended_at, aborted_at) if t is not None]
    pid_kind = "target" if r.child_pid is not None else ("worker" if r.pid is not None else None)
    out: dict[str, Any] = {
        "job_id": r.run_id,
        "run_key": r.run_key,
        "command": r.command,
        "pid": r.child_pid if r.child_pid is not None else r.pid,
        "pid_kind": pid_kind,
        "worker_pid": r.pid,
        "target_pid": r.child_pid,
        "status": status,
        "exit_code": exit_code,
        "stdout_file": r.stdout_path,
        "stderr_file": r.stderr_path,
        "attempt_no": r.attempt_no,
        "strict": bool(x.get("strict")),
        "rerun_of_job_id": job_id_of(r.rerun_of),
        "rerun_reason": x.get("rerun_reason"),
        "abort_reason": x.get("abort_reason"),
    }
    for key, ts in (
        ("started_at", r.created_at),
        ("finished_at", finished),
        ("updated_at", max(times)),
        ("aborted_at", aborted_at),
    ):
        out[key] = secs(ts)
        out[f"{key}_iso"] = iso(ts)
    return out


def format_override(o: dict[str, Any] | None) -> dict[str, Any] | None:
    if o is None:
        return None
    return {
        "allowed_at": secs(o.get("allowed_at")),
        "allowed_at_iso": iso(o.get("allowed_at")),
        "used_at": None,
        "used_at_iso": None,
        "reason": o.get("reason"),
        "expires_at": secs(o.get("expires_at")),
        "expires_at_iso": iso(o.get("expires_at")),
    }


def start_response(
    r: RunRecord, *, existing: bool, mode: str, strict: bool, override_used: bool = False
) -> dict[str, Any]:
    out = format_job(r)
    out.update(accepted=not existing, existing=existing, mode=mode, strict=strict, strict_override_used=override_used)
    return out
