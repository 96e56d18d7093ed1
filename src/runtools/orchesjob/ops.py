"""orchesjob's commands other than starting: status, logs, abort, unlock, clean, and the
lookups they share. Each decision is one short transaction on the environment."""

from __future__ import annotations

import os
import select
import time

from runtools.env.base import RunQuery
from runtools.errors import NotFoundError, StateError, UsageError
from runtools.model.run import RunRecord
from runtools.orchesjob.reads import reader
from runtools.orchesjob.view import ACTIVE, JOB, format_job, format_override, iso, secs, status_of

TYPE_CHECKING = False  # keep `typing` off the hot path
if TYPE_CHECKING:
    from typing import Any

WORKER_RECORD_S = 1.0  # after KILLing the target, how long the worker gets to record the end
_SAFE_ID = r"[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,127}"


# -- lookups -----------------------------------------------------------------------------------


def check_job_id(job_id: str) -> str:
    if "/" in job_id or "\\" in job_id:
        raise UsageError("Invalid job_id: contains path separator")
    return job_id


def get_job(tx: Any, job_id: str) -> RunRecord | None:
    """A run by orchesjob job_id: `orchesjob@<id>`, or (rarely) a run of another job in this env."""
    check_job_id(job_id)
    rec = tx.get(f"{JOB}@{job_id}")
    if rec is not None:
        return rec
    import re

    if not re.fullmatch(_SAFE_ID, job_id):
        return None
    from runtools.model.criteria import RunMatcher

    found = tx.find(RunQuery(matcher=RunMatcher.parse(f"*@{job_id}"), limit=1))
    return found[0] if found else None


def resolve(tx: Any, run_key: str | None, job_id: str | None) -> RunRecord:
    """The job named by --job-id, or the latest of --run-key; NotFoundError with the contract's texts."""
    if job_id:
        rec = get_job(tx, job_id)
        if rec is None:
            raise NotFoundError(f"Job not found: {job_id}")
        return rec
    if run_key:
        from runtools.job.runkey import latest_of_key

        rec = latest_of_key(tx, run_key)
        if rec is None:
            raise NotFoundError("run_key not found")
        return rec
    raise UsageError("Either --run-key or --job-id is required")


def fresh(tx: Any, rec: RunRecord) -> RunRecord:
    """`rec` with its lease checked: a run whose processes are all gone is ended LOST here."""
    if not rec.active:
        return rec
    tx.active_runs()
    return tx.get(rec.instance_id) or rec


def _with_override(tx: Any, rec: RunRecord, overrides: dict[str, Any]) -> dict[str, Any]:
    from runtools.job.runkey import valid_override

    out = format_job(rec)
    key = rec.run_key
    if key:
        if key not in overrides:
            overrides[key] = format_override(valid_override(tx, key))
        out["strict_override"] = overrides[key]
    return out


# -- status ------------------------------------------------------------------------------------


def status(env: Any, run_key: str | None, job_id: str | None, running: bool, all_: bool) -> Any:
    overrides: dict[str, Any] = {}
    # reads without the write lock (a status answers while a writer holds it); a run found with
    # a dead lease is ended LOST in a transaction of its own
    return _status(reader(env), overrides, run_key, job_id, running, all_)


def _status(tx: Any, overrides: dict[str, Any], run_key: str | None, job_id: str | None, running: bool,
            all_: bool) -> Any:
    if running:
        return [
            _with_override(tx, r, overrides)
            for r in tx.active_runs()
            if status_of(r) in ACTIVE
        ]
    if all_:
        if not run_key:
            raise UsageError("status --all requires --run-key")
        runs = tx.find(RunQuery(run_key=run_key))
        if not runs:
            raise NotFoundError(f"No jobs found for run_key: {run_key}")
        if any(r.active for r in runs):
            live = {r.instance_id for r in tx.active_runs()}
            runs = [r if not r.active or r.instance_id in live else tx.get(r.instance_id) or r for r in runs]
        runs.sort(key=lambda r: (r.attempt_no or 0, r.created_at), reverse=True)
        return [_with_override(tx, r, overrides) for r in runs]
    rec = fresh(tx, resolve(tx, run_key, job_id))
    return _with_override(tx, rec, overrides)


# -- logs --------------------------------------------------------------------------------------


def log_path(env: Any, run_key: str | None, job_id: str | None, stream: str) -> tuple[RunRecord, str | None]:
    """The job and its log file; the path is None for a job that ran on another host of a
    PostgreSQL home whose file is not here: its copy in the environment is printed instead."""
    rec = resolve(reader(env), run_key, job_id)  # a read: no write lock
    path = rec.stdout_path if stream == "stdout" else rec.stderr_path
    if not path or not os.path.exists(path):
        from runtools.orchesjob import this_host

        if hasattr(env, "stored_output_bytes") and rec.host != this_host():
            return rec, None
        raise NotFoundError(f"Log file not found: {path}")
    return rec, path


def write_logs(env: Any, rec: RunRecord, path: str | None, stream: str, tail: int | None, follow: bool,
               out: Any) -> None:
    """Print the stored log (or its last `tail` lines); with `follow`, then its live output until the end.
    `path` None: the copy kept in the environment (a job of another host)."""
    feed = None
    offset = None
    if follow and rec.active:
        try:
            feed = env.follow_output(rec.instance_id)
            kind, offsets = next(feed)
            offset = offsets.get(stream, 0) if kind == "offsets" else None
        except (NotFoundError, StopIteration):
            feed = None
    if path is None:
        _write_stored(env, rec, stream, tail, offset, out)
    else:
        from runtools.output.tail import iter_range, tail_range

        # the last `tail` lines (a final line without a newline counts), found backwards and copied
        # in blocks: linear in what is printed, whatever the size of the log or of one line
        start, end = tail_range(path, tail, offset) if tail is not None else (0, offset)
        for chunk in iter_range(path, start, end):
            out.write(chunk)
    out.flush()
    if feed is None:
        return
    for name, chunk in feed:
        if name == stream:
            out.write(chunk)
            out.flush()


def _write_stored(env: Any, rec: RunRecord, stream: str, tail: int | None, end: int | None, out: Any) -> None:
    """The environment's copy of a job's `stream` (up to byte `end`), or its last `tail` lines.
    It keeps only the last part of a long output: when what is printed reaches back past what
    it kept, a line on stderr says so, and where the whole log is."""
    chunks = env._stored_chunks(rec, stream)  # [(offset, bytes)], oldest first
    first = chunks[0][0] if chunks else 0
    data = b"".join(bytes(c) for _off, c in chunks)
    if end is not None:
        data = data[: max(0, end - first)]
    whole = True  # everything kept is printed
    if tail is not None:
        cut = len(data) - 1 if data.endswith(b"\n") else len(data)
        for _ in range(tail):
            cut = data.rfind(b"\n", 0, cut) if cut > 0 else -1
            if cut < 0:
                break
        if tail == 0:
            data, whole = b"", False
        elif cut >= 0:
            data, whole = data[cut + 1:], False
    if first and whole:
        import sys

        path = rec.stdout_path if stream == "stdout" else rec.stderr_path
        sys.stderr.write(f"orchesjob: warning: the first {first} bytes of this log are not kept in the "
                         f"environment; the whole log is on {rec.host}: {path}\n")
        sys.stderr.flush()
    out.write(data)


# -- abort -------------------------------------------------------------------------------------


def abort(env: Any, run_key: str | None, job_id: str | None, reason: str | None, grace: float, by: str) -> dict:
    """Mark ABORTED first (so a strict start sees the key consumed), then TERM the target's
    process group and the worker, KILL what is left after `grace`. Never signals a process
    that merely reuses a recorded pid: the start time must match."""
    from _signal import SIGKILL, SIGTERM  # (`signal` imports enum: kept off every command's path)

    now = time.time()
    with env.transaction() as tx:
        rec = fresh(tx, resolve(tx, run_key, job_id))
        status = status_of(rec)
        if status not in ACTIVE:
            raise StateError(f"Job is not running: {rec.run_id} status={status}")
        rec.extra["aborted_at"] = now
        rec.extra["abort_reason"] = reason
        rec.actions.append({"action": "abort", "by": by, "at": now, "reason": reason})
        tx.update(rec)
    from runtools.model.events import Event

    env.publish(Event("stopped", rec, now, {"by": by, "reason": reason}))

    from runtools.orchesjob import this_host

    if rec.host != this_host():  # its processes are on another host: its worker there signals them
        return _abort_remote(env, rec, grace)
    target = _Proc.open(rec.child_pid, rec.child_start)
    worker = _Proc.open(rec.pid, rec.extra.get("worker_start"))
    sent = {
        "sent_term_target": target.signal_group(SIGTERM),
        "sent_term_worker": worker.signal(SIGTERM),
    }
    _wait_gone([target, worker], grace)
    sent["sent_kill_target"] = target.alive() and target.signal_group(SIGKILL)
    if sent["sent_kill_target"]:
        _wait_gone([worker], WORKER_RECORD_S)  # let the worker record the end it now sees
    sent["sent_kill_worker"] = worker.alive() and worker.signal(SIGKILL)
    _wait_gone([target, worker], 2.0)
    target.close()
    worker.close()
    with env.transaction() as tx:
        rec = fresh(tx, tx.get(rec.instance_id) or rec)
    out = format_job(rec)
    out.update(aborted=True, **sent)
    return out


def _abort_remote(env: Any, rec: RunRecord, grace: float) -> dict:
    """Abort a job executing on another host (a PostgreSQL home): its worker is asked through
    the environment to TERM the target's group and KILL it after `grace` (`sent_term_target`:
    it answered; `sent_kill_target`: the target outlived the grace). With its worker gone,
    only a command on that host can signal the target: said on stderr, nothing is sent."""
    from runtools.job.waiting import wait_for_end
    from runtools.orchesjob.worker import ABORT_OP

    sent = dict.fromkeys(("sent_term_target", "sent_term_worker", "sent_kill_target", "sent_kill_worker"), False)
    try:
        sent["sent_term_target"] = bool(env.control(rec.instance_id, {"op": ABORT_OP, "grace": grace}).get("ok"))
    except NotFoundError:
        pass
    if sent["sent_term_target"]:
        if wait_for_end(env, rec, grace).active:
            sent["sent_kill_target"] = True  # its worker KILLs it now
            wait_for_end(env, rec, 2.0 + WORKER_RECORD_S)
    else:
        import sys

        sys.stderr.write(f"orchesjob: warning: job {rec.run_id} runs on {rec.host} and its worker does not "
                         f"answer: run `orchesjob abort` there to signal its processes\n")
        sys.stderr.flush()
    with env.transaction() as tx:
        rec = fresh(tx, tx.get(rec.instance_id) or rec)
    out = format_job(rec)
    out.update(aborted=True, **sent)
    return out


class _Proc:
    """A process pinned by a pidfd, opened only if its start time matches the recorded one."""

    def __init__(self, pid: int | None, fd: int | None) -> None:
        self.pid = pid
        self.fd = fd

    @classmethod
    def open(cls, pid: int | None, start: float | None) -> _Proc:
        if pid is None:
            return cls(None, None)
        from runtools.job.program import process_start_time

        if start is None:
            return cls(None, None)  # nothing to tell the recorded process from a reuse: hands off
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return cls(None, None)  # already gone
        if process_start_time(pid) != start:
            os.close(fd)  # the pid now belongs to another process: leave it alone
            return cls(None, None)
        return cls(pid, fd)

    def alive(self) -> bool:
        if self.fd is None:
            return False
        return not select.select([self.fd], [], [], 0)[0]

    def signal(self, sig: int) -> bool:
        if self.fd is None or not self.alive():
            return False
        from _signal import pidfd_send_signal

        try:
            pidfd_send_signal(self.fd, sig)
            return True
        except OSError:
            return False

    def signal_group(self, sig: int) -> bool:
        """Signal the process group the target leads (it was started as a group leader)."""
        if self.pid is None or not self.alive():
            return False
        try:
            os.killpg(self.pid, sig)
            return True
        except OSError:
            return self.signal(sig)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _wait_gone(procs: list[_Proc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    fds = [p.fd for p in procs if p.fd is not None]
    while fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        from runtools.model.durations import wait_slice

        ready = select.select(fds, [], [], wait_slice(remaining))[0]
        fds = [fd for fd in fds if fd not in ready]


# -- unlock ------------------------------------------------------------------------------------


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(value: str | None) -> int | None:
    """Integer seconds, or an integer with s/m/h/d (`30m`, `2h`)."""
    if value is None:
        return None
    v = value.strip().lower()
    if not v:
        raise UsageError("Invalid ttl: empty")
    if v[-1] in _TTL_UNITS:
        try:
            amount = int(v[:-1])
        except ValueError:
            raise UsageError(f"Invalid ttl: {v!r}") from None
        seconds = amount * _TTL_UNITS[v[-1]]
    else:
        try:
            amount = seconds = int(v)
        except ValueError:
            raise UsageError(f"Invalid ttl: {v!r}. Use seconds or suffix s/m/h/d") from None
    if amount <= 0:
        raise UsageError("ttl must be positive")
    from runtools.model.durations import MAX_DURATION_S

    if seconds > MAX_DURATION_S:  # the expiry must stay a date (it is shown by every status)
        raise UsageError(f"Invalid ttl: {v!r}. At most 100 years (36500d)")
    return seconds


def unlock(env: Any, run_key: str, reason: str | None, ttl: str | None, by: str) -> dict[str, Any]:
    from runtools.job.runkey import KeyActive, KeyNotFound
    from runtools.job.runkey import unlock as grant

    seconds = parse_ttl(ttl)
    with env.transaction() as tx:
        try:
            o = grant(tx, run_key, seconds, reason, by)
        except KeyNotFound:
            raise NotFoundError("run_key not found") from None
        except KeyActive as e:
            raise StateError(f"Cannot unlock active job: status={status_of(e.run)}") from None
    allowed = int(o["allowed_at"])
    expires = None if seconds is None else allowed + seconds
    return {
        "unlocked": True,
        "run_key": run_key,
        "reason": reason,
        "allowed_at": allowed,
        "allowed_at_iso": iso(allowed),
        "expires_at": expires,
        "expires_at_iso": iso(expires),
    }


# -- rerun -------------------------------------------------------------------------------------


def rerun_source(env: Any, run_key: str | None, job_id: str | None) -> RunRecord:
    with env.transaction() as tx:
        rec = fresh(tx, resolve(tx, run_key, job_id))
        status = status_of(rec)
        if status in ACTIVE:
            raise StateError(f"Cannot rerun active job: status={status}")
        if not rec.run_key:
            raise StateError("Cannot rerun a job without run_key")
        if not rec.command:
            raise StateError(f"Cannot rerun job {rec.run_id}: its command is not recorded")
        return rec


# -- clean -------------------------------------------------------------------------------------


def parse_when(value: str, flag: str) -> float:
    from runtools.model.durations import iso_to_epoch

    try:
        return int(iso_to_epoch(value))
    except ValueError:
        raise UsageError(
            f"Invalid {flag}: {value!r}. Use ISO 8601 format, e.g. 2026-01-01 or 2026-01-01T12:00:00+09:00"
        ) from None


def clean_args_error(
    before: str | None, after: str | None, all_: bool, job_id: str | None, run_key: str | None
) -> str | None:
    """The selection rules of `clean`, in the original's order and words."""
    if job_id:
        if before or after or all_ or run_key:
            return "clean: --job-id cannot be combined with --before, --after, --all, or --run-key"
        return None
    if all_:
        return "clean: --all cannot be combined with --before or --after" if before or after else None
    if not before and not after:
        return "clean: one of --before, --after, --all, or --job-id is required"
    return None


def clean(
    env: Any,
    before: str | None,
    after: str | None,
    all_: bool,
    job_id: str | None,
    run_key: str | None,
    dry_run: bool,
) -> dict[str, Any]:
    msg = clean_args_error(before, after, all_, job_id, run_key)
    if msg:
        raise UsageError(msg)
    if job_id:
        check_job_id(job_id)
    before_ts = parse_when(before, "--before") if before else None
    after_ts = parse_when(after, "--after") if after else None

    def selected_at(r: RunRecord) -> float:
        return r.extra.get("aborted_at") or r.ended_at or r.created_at

    def wanted(r: RunRecord) -> bool:
        if r.active or r.job_id != JOB:  # never an active run; only what orchesjob started
            return False
        t = int(selected_at(r))
        return (before_ts is None or t < before_ts) and (after_ts is None or t >= after_ts)

    items: list[dict[str, Any]] = []
    files: list[str] = []
    with env.transaction() as tx:
        if job_id:
            one = get_job(tx, job_id)
            runs = [one] if one is not None and not one.active else []
        else:
            runs = [r for r in tx.find(RunQuery(active=False, run_key=run_key, until=before_ts, ascending=True))
                    if wanted(r)]
        runs.sort(key=lambda r: r.created_at)
        for r in runs:
            t = selected_at(r)
            items.append({"job_id": r.run_id, "run_key": r.run_key, "selected_at": secs(t), "selected_at_iso": iso(t)})
            if not dry_run:
                tx.delete(r.instance_id)
                files.extend(p for p in (r.stdout_path, r.stderr_path) if p)
    errors = 0
    for p in files:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except OSError as e:
            import sys

            sys.stderr.write(f"orchesjob: warning: {e}\n")
            errors += 1
    return {"deleted": len(items), "errors": errors, "dry_run": dry_run, "items": items}
