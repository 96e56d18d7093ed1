"""Per-job statistics over run records (pure)."""

from __future__ import annotations

from typing import Any

from runtools.model.run import RunRecord
from runtools.model.status import Outcome


def _pct(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1))))
    return round(sorted_values[k], 3)


def job_stats(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """Runs are given newest first; output is one row per job sorted by job id."""
    by_job: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_job.setdefault(r.job_id, []).append(r)
    out = []
    for job_id in sorted(by_job):
        rs = by_job[job_id]
        ended = [r for r in rs if not r.active]
        durations = sorted(r.duration for r in ended if r.duration is not None)
        ok = sum(1 for r in ended if r.status and r.status.outcome is Outcome.SUCCESS)
        last = max(rs, key=lambda r: r.created_at)
        out.append(
            {
                "job_id": job_id,
                "runs": len(rs),
                "active": len(rs) - len(ended),
                "ended": len(ended),
                "succeeded": ok,
                "failed": sum(1 for r in ended if r.status and r.status.outcome is Outcome.FAULT),
                "success_rate": round(ok / len(ended), 4) if ended else None,
                "last_status": last.status.value if last.status else None,
                "last_created_at": last.created_at,
                "p50_s": _pct(durations, 50),
                "p95_s": _pct(durations, 95),
                "max_s": round(durations[-1], 3) if durations else None,
            }
        )
    return out
