"""Retention: remove ended runs (and their output files) by age or by count per job.

`clean(env, ...)` is `taro clean`. Active runs are never removed: every query asks for ended
runs only, inside the environment's exclusive transaction, in batches of BATCH runs so a
clean of a large history never holds the write lock for long.

Automatic retention (`[retention] older_than` / `keep` in runtools.toml, `auto = true`) is
piggybacked on the end of `run job`: `maybe_auto(env)` costs one `stat` of a stamp file; at
most once per `interval` (default 1h) one wrapper wins the stamp and starts a detached
`python -m runtools.retention` that does the work, so no run waits for it. A PostgreSQL
environment is handed to it by name (`taro env add`) or by URL on its stdin (never in an argv).

Space (docs/operations.md "Retention"): SQLite reuses the pages of removed rows for new runs.
`vacuum = "auto"` (default): `taro clean` runs VACUUM when more than a quarter of the file is
free pages; automatic retention never does (VACUUM rewrites the whole file under the write
lock). `"always"`: every clean vacuums when there are free pages; `"never"`: never
(`taro clean --vacuum` forces it). PostgreSQL: autovacuum gives the space back.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.env.base import Environment
    from runtools.model.run import RunRecord

BATCH = 500
STAMP = ".retention-stamp"


def clean(env: Environment, patterns: list[str] | None = None, older_than: float | None = None,
          keep: int | None = None, dry_run: bool = False, now: float | None = None) -> list[RunRecord]:
    """Remove ended runs matching `patterns` that ended more than `older_than` seconds ago,
    and/or all but the newest `keep` ended runs of each job. Returns the runs removed (or that
    would be, with `dry_run`), oldest first."""
    from runtools.env.base import RunQuery
    from runtools.model.criteria import RunMatcher

    matcher = RunMatcher.parse(patterns or [])
    now = time.time() if now is None else now
    removed: list[RunRecord] = []
    if older_than is not None:
        cutoff = now - older_than

        def too_old(r: RunRecord) -> bool:
            return (r.ended_at or r.created_at) < cutoff

        removed += _remove(env, RunQuery(matcher=matcher, active=False, until=cutoff, ascending=True), too_old,
                           dry_run)
    if keep is not None:
        seen = {r.instance_id for r in removed}
        jobs = sorted({r.job_id for r in env.find_runs(RunQuery(matcher=matcher, last_per_job=True))})
        for job in jobs:
            jm = RunMatcher.parse([job])
            newest = env.find_runs(RunQuery(matcher=jm, active=False, limit=keep))
            if len(newest) < keep:
                continue
            edge = newest[-1]
            kept = {r.instance_id for r in newest}

            def beyond(r: RunRecord, job: str = job, kept: set[str] = kept) -> bool:
                return r.job_id == job and r.instance_id not in kept and r.instance_id not in seen

            removed += _remove(env, RunQuery(matcher=jm, active=False, until=edge.created_at + 1e-6,
                                             ascending=True), beyond, dry_run)
    removed.sort(key=lambda r: r.created_at)
    return removed


def _remove(env: Environment, query: Any, wanted: Any, dry_run: bool) -> list[RunRecord]:
    out: list[RunRecord] = []
    query.limit = BATCH
    after: set[str] = set()
    while True:
        files: list[str] = []
        with env.transaction() as tx:
            batch = [r for r in tx.find(query) if r.instance_id not in after]
            picked = [r for r in batch if not r.active and wanted(r)]
            if not dry_run:
                for r in picked:
                    tx.delete(r.instance_id)
                    files += [p for p in (r.stdout_path, r.stderr_path) if p]
        out += picked
        for p in files:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError:
                pass  # an output file we may not remove stays; the run is gone from history
        if len(batch) < BATCH:
            return out
        if dry_run or len(picked) < len(batch):  # rows stay: go on after them
            after.update(r.instance_id for r in batch)
            query.since = batch[-1].created_at
        # else: the removed rows are gone; the same query reads the next batch


def vacuum(env: Environment, policy: str, manual: bool, force: bool = False) -> bool:
    """Give space back per `policy` (module doc). True if VACUUM ran."""
    db = getattr(env, "db_path", None)
    if db is None or (policy == "never" and not force):
        return False
    if not force and not manual and policy != "always":
        return False
    import sqlite3

    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        if not force and (free == 0 or (policy == "auto" and free * 4 < pages)):
            return False
        conn.execute("VACUUM")
        return True
    finally:
        conn.close()


# -- automatic retention --------------------------------------------------------------------------

def auto_settings(cfg: Any) -> tuple[float | None, int | None, float] | None:
    """(older_than, keep, interval) when automatic retention is configured, else None."""
    sec = cfg.section("retention")
    if not sec or not cfg.get("retention", "auto") or ("older_than" not in sec and "keep" not in sec):
        return None
    return cfg.duration("retention", "older_than"), sec.get("keep"), cfg.duration("retention", "interval") or 3600.0


def maybe_auto(env: Environment, cfg: Any) -> bool:
    """At most once per interval per environment: start the detached retention worker.
    Cheap: one stat when it is not due. True if a worker was started."""
    settings = auto_settings(cfg)
    if settings is None:
        return False
    directory = getattr(env, "dir", None)
    spec = directory
    payload = b""
    if directory is None:  # a shared environment: by its name (taro env add), or by its URL through a pipe
        from runtools.env.local.paths import ensure_private_dir, runtools_home

        name = str(getattr(env, "name", "") or "")
        directory = runtools_home()
        if name and "://" not in name and "/" not in name:
            spec = name
        else:
            from runtools.plugins.deliver import env_spec

            where = env_spec(env)
            if where is None:
                return False
            import json
            from _blake2 import blake2b

            # one stamp per database and schema, whatever password or options the URL carries
            ident = f"{getattr(env, 'display', '')}\0{getattr(env, 'schema', '')}".encode()
            spec = "pg-" + blake2b(ident, digest_size=8).hexdigest()
            payload = json.dumps({"env": where[0], "name": where[1]}).encode()
            try:
                ensure_private_dir(directory)
            except OSError:
                return False
    interval = settings[2]
    stamp = os.path.join(directory, STAMP if spec == directory else f"{STAMP}-{spec}")
    now = time.time()
    try:
        if now - os.stat(stamp).st_mtime < interval:
            return False
    except FileNotFoundError:
        pass
    except OSError:
        return False
    # win the stamp: the first wrapper to rename its claim over it does the work
    claim = f"{stamp}.{os.getpid()}"
    try:
        fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        try:
            if now - os.stat(stamp).st_mtime < interval:  # another wrapper won meanwhile
                os.unlink(claim)
                return False
        except FileNotFoundError:
            pass
        os.replace(claim, stamp)
    except OSError:
        return False
    from runtools.plugins.deliver import spawn_detached

    # a URL (and its password) goes through a pipe: an argv is visible to every user of the host
    return spawn_detached("runtools.retention", payload, args=("-",) if payload else (str(spec),)) is not None


def run_auto(spec: str) -> int:
    """The detached worker: apply [retention] to the environment `spec` (a directory or a name)."""
    from runtools.config import load
    from runtools.env import open_environment

    cfg = load()
    settings = auto_settings(cfg)
    if settings is None:
        return 0
    older_than, keep, _interval = settings
    if spec == "-":  # a PostgreSQL URL on stdin (runtools.plugins.deliver.env_spec)
        import json
        import sys

        from runtools.plugins.deliver import open_spec

        data = json.loads(sys.stdin.buffer.read())
        with open_spec(str(data["env"]), data.get("name")) as env:
            clean(env, None, older_than, keep)
        return 0
    with open_environment(spec) as env:
        clean(env, None, older_than, keep)
        vacuum(env, str(cfg.get("retention", "vacuum")), manual=False)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(run_auto(sys.argv[1]))
