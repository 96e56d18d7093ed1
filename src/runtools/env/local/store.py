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
#: how long a write waits for another process's write lock; None: $RUNTOOLS_BUSY_TIMEOUT seconds,
#: else 60 (orchesjob sets it from $ORCHESJOB_LOCK_TIMEOUT)
BUSY_TIMEOUT_S: float | None = None
DEFAULT_BUSY_TIMEOUT_S = 60.0
BUSY_TIMEOUT_ENV = "RUNTOOLS_BUSY_TIMEOUT"


def busy_timeout() -> float:
    if BUSY_TIMEOUT_S is not None:
        return BUSY_TIMEOUT_S
    from runtools.model.durations import env_seconds

    return env_seconds(BUSY_TIMEOUT_ENV, DEFAULT_BUSY_TIMEOUT_S)


def _schema_sql() -> list[str]:
    from importlib import resources  # only on first creation of a database

    text = resources.files("runtools.env.local").joinpath("schema.sql").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def connect(path: str) -> sqlite3.Connection:
    """Open (creating if needed, owner-only) and migrate the database, for reading and writing."""
    if not os.path.exists(path):
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as e:
            raise storage_error(e, path) from None
    timeout = busy_timeout()
    deadline = time.monotonic() + timeout
    while True:
        conn = None
        try:
            conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                _migrate(conn, path)
            return conn
        except sqlite3.Error as e:
            if conn is not None:
                conn.close()
            if _is_busy(e) and time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            raise storage_error(e, path) from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise


def connect_existing(path: str) -> tuple[sqlite3.Connection | None, bool]:
    """Open an existing database to read it, creating and migrating nothing: (connection,
    read_only), or (None, False) when there is no database (no file, or an empty one).

    Read-write where the file and its directory allow it (a reader ends dead runs LOST);
    otherwise read-only. A database in WAL mode needs its `-shm` file even to be read, so
    where that cannot be created (a read-only directory) it is opened `immutable`: nobody
    can be writing it there either."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None, False
    except OSError as e:
        raise storage_error(e, path) from None
    if st.st_size == 0:
        return None, False
    read_only = not (os.access(path, os.W_OK) and os.access(os.path.dirname(path) or ".", os.W_OK))
    timeout = busy_timeout()
    conn = None
    try:
        try:
            conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.OperationalError as e:
            if conn is not None:
                conn.close()
                conn = None
            if not _is_read_only(e):
                raise
            from urllib.parse import quote

            conn = sqlite3.connect(f"file:{quote(path)}?immutable=1", uri=True, isolation_level=None,
                                   check_same_thread=False)
            read_only = True
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise _newer(path, version)
        if version < SCHEMA_VERSION:  # an empty database (its first writer died before the schema)
            conn.close()
            return None, False
        if not read_only:
            conn.execute("PRAGMA synchronous=NORMAL")
        return conn, read_only
    except BaseException as e:
        if conn is not None:
            conn.close()  # now: a CLI may leave by os._exit, and an open one leaves -wal/-shm behind
        if isinstance(e, sqlite3.Error):
            raise storage_error(e, path) from None
        raise


def connect_empty() -> sqlite3.Connection:
    """An empty in-memory database with the schema: what an environment that does not exist yet
    reads as (nothing ran), without creating anything."""
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    for stmt in _schema_sql():
        conn.execute(stmt)
    return conn


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise _newer(path, version)
        if version < 1:
            for stmt in _schema_sql():
                conn.execute(stmt)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _newer(path: str, version: int) -> BackendError:
    return BackendError(f"{path} was written by a newer runtools (schema {version} > {SCHEMA_VERSION}): "
                        "upgrade runtools to use it")


# -- what went wrong with the storage, said so that a person knows what to do -------------------


def _is_busy(e: BaseException) -> bool:
    name = getattr(e, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(e)


def _is_read_only(e: BaseException) -> bool:
    name = getattr(e, "sqlite_errorname", "") or ""
    msg = str(e)
    return (name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"))
            or "readonly" in msg or "unable to open" in msg)


def storage_error(e: BaseException, path: str) -> BackendError:
    """The BackendError (exit 5; `run job`: 125) for an OS or SQLite error on `path` (the database
    or a file of the environment): what is wrong with it, and what to do."""
    import errno

    if isinstance(e, BackendError):
        return e
    if isinstance(e, OSError):
        if e.errno in (errno.EACCES, errno.EPERM):
            return BackendError(_access_problem(path))
        if e.errno == errno.EROFS:
            return BackendError(f"{path} is read-only: it is on a read-only file system; "
                                "use an environment on a writable one (-e)")
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return BackendError(f"cannot write {path}: {e.strerror}; free some space")
        return BackendError(f"cannot use {path}: {e.strerror or e}")
    name = getattr(e, "sqlite_errorname", "") or ""
    msg = str(e)
    if _is_busy(e):
        from runtools.model.text import shell_quote

        return BackendError(f"{path} is busy: another process has held its write lock for more than "
                            f"{busy_timeout():g}s; try again once it is done (`fuser {shell_quote(path)}` shows it)")
    if _is_read_only(e):
        return BackendError(_access_problem(path))
    if name.startswith("SQLITE_FULL") or "disk is full" in msg:
        return BackendError(f"cannot write {path}: the disk is full; free some space")
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in msg:
        return BackendError(f"cannot use {path}: disk I/O error ({msg}); check the disk and its free space")
    if (isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError)) or name.startswith(
        ("SQLITE_NOTADB", "SQLITE_CORRUPT")
    ):
        return BackendError(f"{path} is damaged ({msg}): move it aside to start a new history")
    return BackendError(f"cannot use {path}: {msg}")


def _access_problem(path: str) -> str:
    """Why `path` (or the directory that holds it) cannot be used by us: whose it is, or its mode."""
    target = path
    while True:  # the nearest existing path we can see: a closed directory above hides the rest
        try:
            os.stat(target)
            break
        except OSError:
            parent = os.path.dirname(target)
            if parent == target:
                return f"cannot use {path}: permission denied"
            target = parent
    for p in (target, os.path.dirname(target)) if target == path else (target,):
        st = os.stat(p)
        if st.st_uid != os.geteuid():
            import pwd

            try:
                owner = pwd.getpwuid(st.st_uid).pw_name
            except KeyError:
                owner = f"uid {st.st_uid}"
            return (f"{p} belongs to another user ({owner}) and is not writable by you: run as {owner}, "
                    "or use an environment of your own (-e)")
        if not os.access(p, os.W_OK | (os.X_OK if os.path.isdir(p) else 0)):
            return (f"{p} is read-only (mode {st.st_mode & 0o7777:04o}): make it writable (chmod -R u+w {p}), "
                    "or use another environment (-e)")
    return f"cannot use {path}: permission denied"


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


def _status_in(values: list[str]) -> tuple[str, list[Any]]:
    return (f"status IN ({','.join('?' * len(values))})", values) if values else ("0", [])


def query_sql(q: RunQuery) -> tuple[str, list[Any]]:
    from runtools.env.filters import run_filters

    where, params = run_filters(q, "?", _match_sql, _status_in)
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


#: `extra` key of a run whose wrapper was gone when `taro stop` signalled its command: the status
#: it asked for (STOPPED or INTERRUPTED), which the run ends with instead of LOST
ORPHAN_STOP = "orphan_stop"


def mark_lost(r: RunRecord, now: float) -> RunRecord:
    """End a run whose lease is gone: LOST, or what a stop of its orphaned command asked for."""
    r.stage = Stage.ENDED
    r.ended_at = now
    asked = r.extra.get(ORPHAN_STOP) if isinstance(r.extra, dict) else None
    if asked in (Status.STOPPED.value, Status.INTERRUPTED.value):
        r.status = Status(asked)
        r.error = r.error or "its wrapper was gone (killed); the stop signalled the command's process group"
        return r
    r.status = Status.LOST
    r.error = r.error or "the run's process vanished without recording an end (killed or crashed)"
    return r
