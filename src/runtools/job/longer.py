""""Longer than usual": a run executing longer than k x the p95 duration of its job's recent
successful runs gets a warning (shown by `taro ps`, notifiable as `longer_than_usual`).

On by default (`[longer_than_usual] enabled = false` turns it off; `k` default 2, `min_runs`
default 10). Lazy, so that it costs a run next to nothing: when the run starts executing, one
thread waits CHECK_AFTER_S on a lock the run's end releases. A run that ends before that (most
`run job` calls of a busy machine) never queries anything. Past it, the thread reads the job's
last (up to 100) ended runs — one query on the (job_id, created_at) index — and, with at least
`min_runs` COMPLETED among them, warns at k x p95 if the run still executes. So a run is never flagged within its first
CHECK_AFTER_S: a sub-second job that takes 0.9 s instead of 0.1 s is not "longer than usual".
"""

from __future__ import annotations

import _thread
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LONGER = "longer than usual"
#: a run is looked at once it has executed this long (no query at all for shorter runs)
CHECK_AFTER_S = 1.0
#: at most this many past successful runs make the p95
PAST_RUNS = 100


class LongerWatch:
    """One run's watch. `start()` when it begins executing, `close()` when it ends."""

    def __init__(self, job: Any, k: float = 2.0, min_runs: int = 10) -> None:
        self.job = job
        self.k = k
        self.min_runs = min_runs
        self.ended = _thread.allocate_lock()  # held until the run ends
        self.ended.acquire()
        self.started = False

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        _thread.start_new_thread(self._watch, ())

    def close(self) -> None:
        if self.ended.locked():
            try:
                self.ended.release()
            except RuntimeError:  # released by a concurrent close
                pass

    def _wait(self, seconds: float) -> bool:
        """True if the run ended within `seconds`."""
        from runtools.model.durations import wait_slice

        deadline = time.monotonic() + seconds
        while True:
            if self.ended.acquire(timeout=wait_slice(deadline - time.monotonic()) or 0.0):
                self.ended.release()
                return True
            if time.monotonic() >= deadline:
                return False

    def _watch(self) -> None:
        try:
            if self._wait(CHECK_AFTER_S):
                return
            limit, text = self.limit()
            if limit is None:
                return
            r = self.job.record
            started = r.started_at or time.time()
            if self._wait(max(0.0, started + limit - time.time())):
                return
            if r.active:
                self.job.ctx.add_warning(text)
        except Exception:  # a warning is a courtesy: never a reason to disturb the run
            pass

    def limit(self) -> tuple[float | None, str]:
        """(k x p95 of the job's last successful runs, the warning's text), or (None, "") when the
        job has fewer than `min_runs` of them."""
        from runtools.env.base import RunQuery
        from runtools.model.stats import _pct
        from runtools.model.status import Status

        r = self.job.record
        # the status is tested here, not in SQL: with it there, SQLite may walk runs_status instead
        # of runs_job(job_id, created_at), which costs a scan of every success of every job
        past = self.job.env.find_runs(RunQuery(job_id=r.job_id, active=False, limit=max(PAST_RUNS, self.min_runs)))
        durations = sorted(d for d in (p.duration for p in past if p.status is Status.COMPLETED) if d is not None)
        if len(durations) < self.min_runs:
            return None, ""
        from runtools.model.durations import human_duration

        p95 = _pct(durations, 95) or 0.0
        limit = max(self.k * p95, 0.001)
        return limit, (f"{LONGER}: executing longer than {human_duration(limit)} ({self.k:g} x p95 "
                       f"{human_duration(p95)} of the last {len(durations)} successful runs)")


def from_config(job: Any, cfg: Any) -> LongerWatch | None:
    if not cfg.get("longer_than_usual", "enabled"):
        return None
    return LongerWatch(job, float(cfg.get("longer_than_usual", "k")), int(cfg.get("longer_than_usual", "min_runs")))
