"""SQLite storage of a local environment: WAL, versioned schema, short IMMEDIATE transactions.

Every write runs in `BEGIN IMMEDIATE` with a long busy timeout, so concurrent wrappers queue
for the write lock instead of failing with `database is locked`.
"""

from __future__ import annotations

import os
import time

from runtools.errors import BackendError
from runtools.model.jsonenc import dumps, loads
from runtools.model.run import RunRecord
from runtools.model.status import Stage, Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.env.base import RunQuery


def _import_sqlite():
    """The C module `_sqlite3`, imported without dragging in `functools` and `collections`.

    `_sqlite3` imports `functools` only to take `lru_cache` for its statement cache, and
    `functools` costs a short-lived `run job` about as much as all its own work. When nobody
    has imported `functools` yet, a one-attribute stand-in built on the same C implementation
    (`_functools._lru_cache_wrapper`) is offered for the duration of that one import.
    """
    import sys

    if "_sqlite3" in sys.modules or "functools" in sys.modules:
        import _sqlite3

        return _sqlite3
    from _functools import _lru_cache_wrapper

    def lru_cache(maxsize: int = 128, typed: bool = False):
        return lambda fn: _lru_cache_wrapper(fn, maxsize, typed, tuple)

    stand_in = type(sys)("functools")
    stand_in.lru_cache = lru_cache
    sys.modules["functools"] = stand_in
    try:
        import _sqlite3
    finally:
        if sys.modules.get("functools") is stand_in:
            del sys.modules["functools"]
    return _sqlite3


if TYPE_CHECKING:
    import sqlite3
else:
    try:
        sqlite3 = _import_sqlite()
    except ImportError:  # pragma: no cover - a Python without the C module
        import sqlite3

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0


def _schema_sql() -> list[str]:
    from importlib import resources  # only on first creation of a database

    text = resources.files("runtools.env.local").joinpath("schema.sql").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def connect(path: str) -> sqlite3.Connection:
    """Open (creating if needed, owner-only) and migrate the database."""
    if not os.path.exists(path):
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as e:
            raise BackendError(f"cannot create database {path}: {e.strerror}") from None
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                _migrate(conn)
            return conn
        except sqlite3.OperationalError as e:
            if "locked" in str(e) and time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            raise BackendError(f"cannot open database {path}: {e}") from None
        except sqlite3.DatabaseError as e:
            raise BackendError(f"database {path} is unusable ({e}): move it aside to start a new history") from None


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise BackendError(f"database schema v{version} is newer than this runtools (v{SCHEMA_VERSION}): upgrade")
        if version < 1:
            for stmt in _schema_sql():
                conn.execute(stmt)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


#: the columns every run query selects: the record, then the indexed copies that let a damaged
#: record still be shown (and, once its lease is gone, ended LOST and so rewritten whole)
ROW = "data, job_id, run_id, stage, status, created_at, ended_at"


def record_from_row(row: tuple) -> RunRecord:
    """The run of a `SELECT {ROW}` row. A record that does not decode (a damaged row) comes back
    built from its indexed columns, with `error` saying so, instead of failing every reader."""
    try:
        return RunRecord.from_dict(loads(row[0]))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        return _damaged(row, e)


def _damaged(row: tuple, e: Exception) -> RunRecord:
    _data, job_id, run_id, stage, status, created_at, ended_at = row
    r = RunRecord(str(job_id), str(run_id), float(created_at or 0.0))
    try:
        r.stage = Stage(stage)
    except ValueError:
        r.stage = Stage.ENDED
    try:
        r.status = Status(status) if status is not None else None
    except ValueError:
        r.status = None
    if r.stage is Stage.ENDED and r.status is None:
        r.status = Status.ERROR
    r.ended_at = ended_at
    r.error = f"damaged run record ({type(e).__name__}: {e}); shown from its index columns"
    return r


def row_values(r: RunRecord) -> tuple[Any, ...]:
    return (
        r.instance_id,
        r.job_id,
        r.run_id,
        r.stage.value,
        r.status.value if r.status else None,
        r.created_at,
        r.ended_at,
        r.run_key,
        dumps(r.tags),
        dumps(r.to_dict()),
    )


INSERT = (
    "INSERT INTO runs (instance_id, job_id, run_id, stage, status, created_at, ended_at, run_key, tags, data) "
    "VALUES (?,?,?,?,?,?,?,?,?,?)"
)
UPDATE = (
    "UPDATE runs SET instance_id=?, job_id=?, run_id=?, stage=?, status=?, created_at=?, ended_at=?, "
    "run_key=?, tags=?, data=? WHERE instance_id=?"
)


def _match_sql(p: str) -> tuple[str, list[str]]:
    from runtools.model.criteria import glob_to_sql

    g = glob_to_sql(p)
    if "@" in p:
        return "(job_id || '@' || run_id) GLOB ?", [g]
    return (
        "(job_id GLOB ? OR run_id GLOB ? OR EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE value GLOB ?))",
        [g, g, g],
    )


def query_sql(q: RunQuery) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if q.active is True:
        where.append("stage != 'ENDED'")
    elif q.active is False:
        where.append("stage = 'ENDED'")
    if q.since is not None:
        where.append("created_at >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append("created_at < ?")
        params.append(q.until)
    statuses = {s.value for s in q.statuses}
    if q.outcomes:
        by_outcome = {s.value for s in Status if s.outcome in q.outcomes}
        statuses = statuses & by_outcome if statuses else by_outcome
    if q.statuses or q.outcomes:
        where.append(f"status IN ({','.join('?' * len(statuses))})" if statuses else "0")
        params.extend(sorted(statuses))
    if q.run_key is not None:
        where.append("run_key = ?")
        params.append(q.run_key)
    if q.matcher.include:
        parts = []
        for p in q.matcher.include:
            sql, ps = _match_sql(p)
            parts.append(sql)
            params.extend(ps)
        where.append("(" + " OR ".join(parts) + ")")
    for p in q.matcher.exclude:
        sql, ps = _match_sql(p)
        where.append(f"NOT {sql}")
        params.extend(ps)
    cond = (" WHERE " + " AND ".join(where)) if where else ""
    if q.last_per_job:
        # latest by creation time (runs may be inserted out of creation order); SQLite takes the
        # bare `data` column from the row holding max(created_at)
        sql = f"SELECT {ROW} FROM (SELECT {ROW}, max(created_at) AS c FROM runs{cond} GROUP BY job_id)"
        sql += f" ORDER BY c {'ASC' if q.ascending else 'DESC'}"
    elif q.active is True or q.run_key is not None:
        # insertion order: active runs come from a partial index on seq, a key's runs from
        # runs_key(run_key, seq) — attempts of a key are numbered in insertion order
        sql = f"SELECT {ROW} FROM runs{cond} ORDER BY seq {'ASC' if q.ascending else 'DESC'}"
    else:
        sql = f"SELECT {ROW} FROM runs{cond} ORDER BY created_at {'ASC' if q.ascending else 'DESC'}"
    if q.limit is not None:
        sql += " LIMIT ?"
        params.append(int(q.limit))
    return sql, params


def find(conn: sqlite3.Connection, q: RunQuery) -> list[RunRecord]:
    sql, params = query_sql(q)
    out = []
    for row in conn.execute(sql, params):
        r = record_from_row(row)
        if q.matcher(r):
            out.append(r)
    return out


ACTIVE = f"SELECT {ROW} FROM runs WHERE stage != 'ENDED' ORDER BY seq"
BY_ID = f"SELECT {ROW} FROM runs WHERE instance_id=?"


def mark_lost(r: RunRecord, now: float) -> RunRecord:
    r.stage = Stage.ENDED
    r.status = Status.LOST
    r.ended_at = now
    r.error = r.error or "the run's process vanished without recording an end (killed or crashed)"
    return r
