"""LocalEnvironment: the Environment contract over SQLite, flock leases and Unix sockets."""

from __future__ import annotations

import _thread
import os
import time
from stat import S_ISDIR

from runtools.env.base import Environment, Tx
from runtools.env.local import control as _control
from runtools.env.local import store
from runtools.env.local.events import EventBus
from runtools.env.local.lease import FileLease, lease_alive, lease_path, wait_released
from runtools.env.local.paths import ensure_private_dir, runtime_dir, short_name
from runtools.env.local.store import sqlite3
from runtools.errors import BackendError
from runtools.model.events import Event

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from runtools.env.base import ControlEndpoint, ControlHandler, Lease, RunQuery, Subscription
    from runtools.model.run import RunRecord

DB_NAMES = ("runs.db", "orchesjob.db")


class LocalTx(Tx):
    def __init__(self, env: LocalEnvironment, conn: sqlite3.Connection) -> None:
        super().__init__()
        self.env = env
        self.conn = conn

    def active_runs(self) -> list[RunRecord]:
        out = []
        now = time.time()
        for row in self.conn.execute(store.ACTIVE).fetchall():
            r = store.record_from_row(row)
            if self.env.lease_alive(r):
                out.append(r)
            elif self.env.read_only:  # a read-only copy: it is over, but we cannot record that
                store.mark_lost(r, now)
            else:
                self.update(store.mark_lost(r, now))
                self.publish_after_commit(Event("ended", r, now))
                self.reaped.append(r)
                self.env._remove_leftovers(r)
        return out

    def get(self, instance_id: str) -> RunRecord | None:
        row = self.conn.execute(store.BY_ID, (instance_id,)).fetchone()
        return store.record_from_row(row) if row else None

    def find(self, query: RunQuery) -> list[RunRecord]:
        return store.find(self.conn, query)

    def insert(self, run: RunRecord) -> None:
        try:
            self.conn.execute(store.INSERT, store.row_values(run))
        except sqlite3.IntegrityError:  # instance_id is the only unique column: `--run-id` given twice
            from runtools.errors import UsageError

            raise UsageError(f"run id {run.run_id} of job {run.job_id} already exists; choose another") from None
        for path in (run.stdout_path, run.stderr_path):  # created with the row, not before it
            if path and not os.path.isdir(os.path.dirname(path)):
                ensure_private_dir(os.path.dirname(path))

    def update(self, run: RunRecord) -> None:
        self.conn.execute(store.UPDATE, (*store.row_values(run), run.instance_id))

    def delete(self, instance_id: str) -> None:
        self.conn.execute("DELETE FROM runs WHERE instance_id=?", (instance_id,))

    def get_setting(self, kind: str, key: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT value FROM settings WHERE kind=? AND key=?", (kind, key)).fetchone()
        if not row:
            return None
        return store.loads(row[0])

    def put_setting(self, kind: str, key: str, value: dict[str, Any] | None) -> None:
        if value is None:
            self.conn.execute("DELETE FROM settings WHERE kind=? AND key=?", (kind, key))
        else:
            self.conn.execute(
                "INSERT INTO settings (kind, key, value) VALUES (?,?,?) "
                "ON CONFLICT(kind, key) DO UPDATE SET value=excluded.value",
                (kind, key, store.dumps(value)),
            )

    def settings(self, kind: str) -> dict[str, dict[str, Any]]:
        rows = self.conn.execute("SELECT key, value FROM settings WHERE kind=? ORDER BY key", (kind,)).fetchall()
        if not rows:
            return {}
        return {k: store.loads(v) for k, v in rows}


class _Transaction:
    """`with env.transaction() as tx`: BEGIN IMMEDIATE ... COMMIT, then publish tx.events.
    (A class, not @contextmanager: contextlib is a measurable import on the hot path.)"""

    __slots__ = ("env", "tx")

    def __init__(self, env: LocalEnvironment) -> None:
        self.env = env
        self.tx: LocalTx | None = None

    def __enter__(self) -> LocalTx:
        env = self.env
        env._lock.acquire()
        try:
            conn = env.writable_conn()
            # a read-only environment reads in a plain transaction: a write in it fails and says why
            conn.execute("BEGIN" if env.read_only or env._empty else "BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            env._lock.release()
            raise store.storage_error(e, env.db_path) from None
        except BaseException:
            env._lock.release()
            raise
        self.tx = LocalTx(env, conn)
        return self.tx

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        env = self.env
        conn = env._conn
        tx = self.tx
        assert conn is not None and tx is not None  # __enter__ succeeded
        try:
            if exc_type is not None:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.Error):  # said as what is wrong with the storage
                    if env._empty:  # a write into an environment opened without creating it
                        from runtools.errors import NotFoundError

                        raise NotFoundError(f"environment {env.name} has no database yet ({env.db_path}): "
                                            "run a job in it first") from None
                    raise store.storage_error(exc, env.db_path) from None
                return
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise store.storage_error(e, env.db_path) from None
        finally:
            env._lock.release()
        for ev in tx.events:
            env.publish(ev)
        if tx.reaped:  # their wrappers are gone: their end reaches notifiers and the event log from here
            from runtools.plugins.deliver import hand_over

            hand_over(env, tx.reaped)


class LocalEnvironment(Environment):
    """A local environment in `directory`. Nothing is created until the first write (a run, a
    setting): until then an environment without a database reads as empty. With `create=False`
    nothing is ever created (read verbs): a missing database stays empty, an unwritable one is
    read read-only."""

    def __init__(self, directory: str, name: str | None = None, db_name: str | None = None,
                 create: bool = True) -> None:
        self.dir = directory
        self.name = name or directory
        self.create = create
        if db_name is None:
            db_name = next((n for n in DB_NAMES if os.path.exists(os.path.join(self.dir, n))), DB_NAMES[0])
        self.db_path = os.path.join(self.dir, db_name)
        self.read_only = False  # opened read-only: the files may not (or cannot) be written
        self._conn: sqlite3.Connection | None = None
        self._empty = False  # _conn is the in-memory stand-in of a database that does not exist yet
        self._closed = False
        self._lock = _thread.RLock()
        self._runtime: str | None = None
        self._bus: EventBus | None = None

    # -- plumbing ------------------------------------------------------------------------------

    def exists(self) -> bool:
        """True if the environment's directory exists (BackendError if we may not look into it)."""
        try:
            os.stat(self.db_path)
            return True
        except FileNotFoundError:
            pass
        except OSError as e:
            raise store.storage_error(e, self.db_path) from None
        try:
            st = os.stat(self.dir)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise store.storage_error(e, self.dir) from None
        if not S_ISDIR(st.st_mode):
            from runtools.errors import UsageError

            raise UsageError(f"{self.dir} exists and is not a directory: choose another environment path")
        return True

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection reads use. Without a database yet: an empty in-memory one (looked for
        again on each use, so a reader sees the database once the first run created it)."""
        if self._empty and os.path.exists(self.db_path):
            self._drop_conn()
        if self._conn is None:
            if self._closed:
                raise BackendError(f"environment {self.name} was closed")
            path = self.db_path
            if self.create and os.access(path, os.W_OK) and os.access(self.dir, os.W_OK):
                self._conn = store.connect(path)  # the usual case: one connection for everything
            else:
                conn, self.read_only = store.connect_existing(path)
                if conn is None:  # read as empty; a write into it fails (see _Transaction)
                    conn, self._empty, self.read_only = store.connect_empty(), True, False
                    conn.execute("PRAGMA query_only=ON")
                self._conn = conn
        return self._conn

    def writable_conn(self) -> sqlite3.Connection:
        """The connection transactions use: the database is created by the first write (unless
        the environment was opened with `create=False`)."""
        conn = self.conn
        if self._empty and self.create:
            ensure_private_dir(self.dir)
            self._drop_conn()
            self._conn = conn = store.connect(self.db_path)
        return conn

    def _drop_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._empty, self.read_only = None, False, False

    @property
    def runtime(self) -> str:
        if self._runtime is None:
            self._runtime = runtime_dir(self.dir)
        return self._runtime

    @property
    def bus(self) -> EventBus:
        if self._bus is None:
            self._bus = EventBus(self.runtime)
        return self._bus

    def _lease_path(self, r: RunRecord) -> str:
        return lease_path(self.dir, r.instance_id)

    def _control_path(self, instance_id: str) -> str:
        d = os.path.join(self.runtime, "c")
        if not os.path.isdir(d):
            os.makedirs(d, mode=0o700, exist_ok=True)
        return os.path.join(d, short_name(instance_id))

    # -- store ---------------------------------------------------------------------------------

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    def find_runs(self, query: RunQuery) -> list[RunRecord]:
        with self._lock:
            try:
                return store.find(self.conn, query)
            except sqlite3.Error as e:
                raise store.storage_error(e, self.db_path) from None

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise store.storage_error(e, self.db_path) from None

    def get_run(self, instance_id: str) -> RunRecord | None:
        rows = self._read(store.BY_ID, (instance_id,))
        return store.record_from_row(rows[0]) if rows else None

    def read_settings(self, kind: str) -> dict[str, dict[str, Any]]:
        rows = self._read("SELECT key, value FROM settings WHERE kind=? ORDER BY key", (kind,))
        return {k: store.loads(v) for k, v in rows}

    def active_runs(self, matcher: Any = None) -> list[RunRecord]:
        """Read without the write lock; take it only when a dead lease needs reaping."""
        runs = [store.record_from_row(row) for row in self._read(store.ACTIVE)]
        if not all(self.lease_alive(r) for r in runs):
            with self.transaction() as tx:
                runs = tx.active_runs()
        return [r for r in runs if matcher is None or matcher(r)]

    # -- leases --------------------------------------------------------------------------------

    def lease(self, run: RunRecord) -> Lease:
        path = self._lease_path(run)
        try:
            try:
                return FileLease(path)
            except FileNotFoundError:
                ensure_private_dir(os.path.dirname(path))
                return FileLease(path)
        except OSError as e:
            raise store.storage_error(e, path) from None

    def _remove_leftovers(self, run: RunRecord) -> None:
        """A dead run's lease file and control socket: nobody will remove them otherwise."""
        for path in (self._lease_path(run), self._control_path(run.instance_id)):
            try:
                os.unlink(path)
            except OSError:
                pass

    def lease_alive(self, run: RunRecord) -> bool:
        return lease_alive(self._lease_path(run))

    def wait_lease(self, run: RunRecord, timeout: float | None) -> bool:
        return wait_released(self._lease_path(run), timeout)

    # -- events --------------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        self.bus.publish(event)

    def subscribe(self) -> Subscription:
        return self.bus.subscribe()

    # -- control -------------------------------------------------------------------------------

    def serve_control(self, run: RunRecord, handler: ControlHandler) -> ControlEndpoint:
        return _control.ControlServer(self._control_path(run.instance_id), handler, {"stdout": 0, "stderr": 0})

    def control(self, instance_id: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        return _control.request(self._control_path(instance_id), instance_id, request, timeout)

    def stop_orphan(self, run: RunRecord, interrupt: bool = False, by: str | None = None,
                    grace: float = 10.0) -> RunRecord | None:
        from runtools.env.local.orphan import stop_orphan

        return stop_orphan(self, run, interrupt, by, grace)

    def follow_output(self, instance_id: str) -> Iterator[tuple[str, bytes | dict]]:
        return _control.follow(self._control_path(instance_id), instance_id)

    # -- output --------------------------------------------------------------------------------

    def output_paths(self, run: RunRecord) -> tuple[str, str]:
        """Where the run's output goes; the directory is created when the run is inserted (a run
        that never got into the store leaves nothing behind)."""
        base = os.path.join(self.dir, "output", run.job_id, run.run_id)
        return base + ".stdout", base + ".stderr"

    def close(self) -> None:
        """Close the database connection. Under the lock: a helper thread (a lease watcher
        reaping a LOST run, say) may be using it, and closing it under a running statement
        would be a use-after-free in SQLite. Afterwards the environment refuses further use."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if self._bus is not None:
            self._bus.close()
