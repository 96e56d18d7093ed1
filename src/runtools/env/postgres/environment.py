"""PostgresEnvironment: the Environment contract over one PostgreSQL database schema.

Connections of one wrapper process (DESIGN §8):
    main     transactions and reads (one per environment object, reconnected when broken)
    lease    one per run: a session advisory lock keyed by the run; its socket is inherited by
             the command, as the flock is locally, so an orphaned command keeps the lease
    hub      one per environment object, made on first use: LISTENs for the process's control
             endpoints (holding their control keys: how a requester knows a run is reachable),
             subscriptions and control replies; writes the output chunks
    (a wait on another run's lease needs none: leasewait.py looks at them on the main one)

Every decision (`transaction()`) is one short transaction holding
pg_advisory_xact_lock(<key of the schema>); liveness of other runs is read from pg_locks inside
it. Events are NOTIFYed inside the committing transaction (lifecycle events only, never output).
"""

from __future__ import annotations

import _thread
import os
import sys
import time

from runtools.env.base import ControlEndpoint, Environment, Lease, Subscription, Tx
from runtools.env.local import store as rows
from runtools.env.postgres import store
from runtools.errors import BackendError, NotFoundError, UsageError
from runtools.model.durations import wait_slice
from runtools.model.events import Event
from runtools.model.jsonenc import dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    import psycopg

    from runtools.env.base import ControlHandler, RunQuery
    from runtools.env.postgres.leasewait import LeaseWaits
    from runtools.model.run import RunRecord

#: NOTIFY payloads must stay below 8000 bytes; bigger ones go through the event_payloads table
MAX_PAYLOAD = 7000
#: KiB of output kept in the database per stream of a run (the oldest bytes go); $RUNTOOLS_PG_OUTPUT_KIB
DEFAULT_OUTPUT_KIB = 1024
#: how often a follower of a run on another host looks for new output chunks
FOLLOW_POLL_S = 0.1
#: output waits at most this long (seconds), or until OUTPUT_BATCH_BYTES wait, before it is
#: written to the database: a burst of small chunks is a few statements, not one per chunk
OUTPUT_FLUSH_S = 0.05
OUTPUT_BATCH_BYTES = 256 * 1024
#: how often the wrapper confirms its lease connection (one `SELECT 1`)
LEASE_PROBE_S = 1.0
# A lease not confirmed for store.lease_grace() seconds (default 5) is lost: the wrapper stops
# its command (TERM, KILL after --kill-after) and records why; within it a cut connection is
# made again and the lock taken again. The server drops the sessions (and so the lease) of a
# host gone silent after store.silent_drop() seconds (default 24): later than the holder stops
# its command (1 + 5 s, plus its kill grace, 10 s by default).

#: after a server restart every run's lease is gone at once: for this long, runs without their
#: lease count as alive so their wrappers can take them again
RESTART_GRACE_S = 15.0
#: how long the hub (and a lease wait) waits between attempts to reconnect
RECONNECT_S = 0.5
#: beyond the kill grace, how long `taro stop` waits for the keeper of an orphan on another host
KEEPER_ANSWER_S = 15.0
#: how long a lost main connection is tried again before the operation fails (a server restart;
#: $RUNTOOLS_PG_RECONNECT_WAIT). Recording a run's end is tried longer: store.end_wait()
RECONNECT_WAIT_S = 15.0


def output_bound() -> int:
    raw = os.environ.get("RUNTOOLS_PG_OUTPUT_KIB")
    if not raw:
        return DEFAULT_OUTPUT_KIB * 1024
    try:
        kib = int(raw)
    except ValueError:
        kib = -1
    if kib < 0:
        raise UsageError(f"invalid $RUNTOOLS_PG_OUTPUT_KIB {raw!r}: use a number of KiB, e.g. 1024")
    return kib * 1024


def gap_notes(run: RunRecord, stream: str, gaps: list[tuple[int, int]], shown_from: int) -> list[str]:
    """Lines for stderr about holes in a stored copy of output (from `stored_output_bytes`)
    that lie in what is shown (from byte `shown_from` of it on)."""
    path = run.stdout_path if stream == "stdout" else run.stderr_path
    where = f"the whole output is on {run.host}: {path}"
    out = []
    if gaps and gaps[0][0] == 0:
        if shown_from == 0:
            out.append(f"taro: the first {gaps[0][1]} bytes of the {stream} of {run.instance_id} are not kept in "
                       f"the environment (it keeps the last {output_bound() // 1024} KiB); {where}\n")
        gaps = gaps[1:]
    holes = [(pos, size) for pos, size in gaps if pos >= shown_from]  # (at shown_from: its first line is cut)
    if holes:
        out.append(f"taro: the copy of the {stream} of {run.instance_id} kept in the environment misses "
                   f"{sum(size for _p, size in holes)} bytes in {len(holes)} place(s) (output that could not be "
                   f"stored); {where}\n")
    return out


def this_host() -> str:
    return os.environ.get("RUNTOOLS_HOST") or os.uname().nodename


# -- NOTIFY with payloads of any size ---------------------------------------------------------


def send(conn: psycopg.Connection, channel: str, text: str) -> None:
    """NOTIFY `channel` with `text` (in the current transaction, if one is open)."""
    if len(text.encode()) > MAX_PAYLOAD:
        row = conn.execute("INSERT INTO event_payloads (body) VALUES (%s) RETURNING id", (text,)).fetchone()
        assert row is not None
        if row[0] % 100 == 0:  # now and then: forget big payloads nobody can still be reading
            conn.execute("DELETE FROM event_payloads WHERE at < now() - interval '1 hour'")
        text = f"@{row[0]}"
    conn.execute("SELECT pg_notify(%s, %s)", (channel, text))


def receive(conn: psycopg.Connection, payload: str) -> str | None:
    """The text sent by `send` (fetched when it went through the table); None if it is gone."""
    if not payload.startswith("@"):
        return payload
    row = conn.execute("SELECT body FROM event_payloads WHERE id=%s", (int(payload[1:]),)).fetchone()
    return row[0] if row else None


def _event_text(event: Event) -> str:
    wire = event.to_wire()
    text = dumps(wire)
    if len(text) > 200_000:  # as locally: keep the event, shed the bulky parts of the record
        wire["run"].update(command=None, extra={}, actions=wire["run"]["actions"][-5:], warnings=[])
        text = dumps(wire)
    return text


class _Hub:
    """One LISTEN connection per environment object, shared by its subscriptions, control
    endpoints and control requests; a thread hands each notification to the callbacks of its
    channel. `lock` guards the connection: others use it for short statements (replies, output
    chunks, requests) while the thread waits in poll(). Control keys (session advisory locks)
    are held on it. A lost connection is made again, its channels listened to and its keys
    taken again, then `on_reconnect` callbacks say that notifications may have been missed.

    The fence: a lost connection is seen at once (its socket is watched) and made again at once;
    the leases of the process are told when it is lost and when it is back (`up`), and a run
    whose control key it took again is looked at under the run's row lock: one found ended by
    another process meanwhile (`ended_run`) must kill its command at once."""

    def __init__(self, env: PostgresEnvironment) -> None:
        self.env = env
        self.lock = _thread.RLock()
        self.channels: dict[str, list[Callable[[str], None]]] = {}
        self.keys: dict[int, int] = {}  # control key -> how many holders in this process
        self.key_runs: dict[int, str] = {}  # control key -> its run's instance id
        self.ended: set[int] = set()  # control keys of runs found ended when the keys were taken again
        self.up = True  # the connection is there and holds the keys
        self.on_reconnect: list[Callable[[], None]] = []
        # notifications that arrived while another thread used the connection: handled by the
        # hub's thread (a callback may need the connection itself, to read a big payload)
        self._pending: list[tuple[str, str]] = []
        self._r, self._w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._closed = False
        self.conn = self._open()
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._ident = _thread.start_new_thread(self._loop, ())

    def _open(self) -> psycopg.Connection:
        conn = self.env._connect(schema=True)
        try:
            conn.add_notify_handler(lambda n: self._defer(n.channel, n.payload))
            with self.lock:  # what was registered before the connection was lost
                for key in self.keys:
                    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                for ch in self.channels:
                    conn.execute(f'LISTEN "{ch}"')
                runs = {k: iid for k, iid in self.key_runs.items() if k in self.keys}
                if runs:  # under their row locks: a taker looks at the keys again under them
                    with conn.transaction():
                        found = conn.execute("SELECT instance_id, stage FROM runs WHERE instance_id = ANY(%s) "
                                             "ORDER BY instance_id FOR UPDATE", (list(runs.values()),)).fetchall()
                    over = {iid for iid, stage in found if stage == "ENDED"}
                    self.ended = {k for k, iid in runs.items() if iid in over}
        except BaseException:
            conn.close()
            raise
        return conn

    def _defer(self, channel: str, payload: str) -> None:
        self._pending.append((channel, payload))
        try:
            os.write(self._w, b"n")
        except OSError:
            pass  # the pipe is full: the thread is awake already

    def _dispatch(self, channel: str, payload: str) -> None:
        for callback in list(self.channels.get(channel, ())):
            try:
                callback(payload)
            except Exception:
                pass  # a notification that cannot be handled is dropped, never the hub

    def _execute(self, sql: str, params: tuple = ()) -> None:
        """Run a registration statement; on a lost connection it is replayed once it is back."""
        try:
            self.conn.execute(sql, params)
        except Exception:
            if not (self.conn.broken or self.conn.closed):
                raise

    def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        with self.lock:
            callbacks = self.channels.setdefault(channel, [])
            if not callbacks:
                self._execute(f'LISTEN "{channel}"')
            callbacks.append(callback)

    def unlisten(self, channel: str, callback: Callable[[str], None]) -> None:
        with self.lock:
            callbacks = self.channels.get(channel, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks and channel in self.channels:
                del self.channels[channel]
                try:
                    self._execute(f'UNLISTEN "{channel}"')
                except Exception:
                    pass

    def hold(self, key: int, instance_id: str | None = None) -> None:
        with self.lock:
            if key not in self.keys:
                self._execute("SELECT pg_advisory_lock(%s)", (key,))
            self.keys[key] = self.keys.get(key, 0) + 1
            if instance_id is not None:
                self.key_runs[key] = instance_id

    def holds(self, key: int) -> bool:
        """Is this control key held now, as far as this process can tell (the fence)?"""
        return self.up and key in self.keys and key not in self.ended

    def ended_run(self, key: int) -> bool:
        return key in self.ended

    def _set_up(self, up: bool) -> None:
        self.up = up
        for lease in list(self.env._leases):
            lease._evaluate()

    def release(self, key: int) -> None:
        with self.lock:
            left = self.keys.get(key, 0) - 1
            if left > 0:
                self.keys[key] = left
                return
            self.keys.pop(key, None)
            self.key_runs.pop(key, None)
            try:
                self._execute("SELECT pg_advisory_unlock(%s)", (key,))
            except Exception:
                pass

    def _loop(self) -> None:
        import select

        try:
            while not self._closed:
                if self._listen(select):
                    return
                # the connection is gone: make it again (until closed; the first time at once:
                # the fence), then say events were missed
                self._set_up(False)
                first = True
                while not self._closed:
                    if not first and select.select([self._r], [], [], RECONNECT_S)[0]:
                        _drain(self._r)
                        continue
                    first = False
                    try:
                        conn = self._open()
                    except Exception:
                        continue
                    with self.lock:
                        old, self.conn = self.conn, conn
                    old.close()
                    self._set_up(True)
                    for callback in list(self.on_reconnect):
                        try:
                            callback()
                        except Exception:
                            pass
                    break
        finally:
            self._done.release()

    def _listen(self, select: Any) -> bool:
        """Hand on notifications until closed (True) or the connection is lost (False)."""
        poller = select.poll()
        poller.register(self.conn.fileno(), select.POLLIN)
        poller.register(self._r, select.POLLIN)
        pgconn = self.conn.pgconn
        sock = self.conn.fileno()
        while True:
            ready = poller.poll(wait_slice(None) * 1000)  # type: ignore[operator]
            if self._closed:
                return True
            if not ready:
                continue
            _drain(self._r)
            if self._closed:  # close() wrote to the pipe after the check above: drained, so look again
                return True
            try:
                with self.lock:
                    if any(fd == sock for fd, _ in ready):
                        pgconn.consume_input()  # raises once the connection is lost
                    while self._pending:
                        self._dispatch(*self._pending.pop(0))
                    while (n := pgconn.notifies()) is not None:
                        self._dispatch(n.relname.decode(), n.extra.decode())
                    if self.conn.broken or pgconn.status != 0:
                        return False
            except Exception:
                return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            os.write(self._w, b"x")
        except OSError:
            pass
        if _thread.get_ident() != self._ident:
            self._done.acquire()
            self._done.release()
        os.close(self._r)
        os.close(self._w)
        with self.lock:
            self.conn.close()


# -- the transaction ---------------------------------------------------------------------------


class PgTx(Tx):
    def __init__(self, env: PostgresEnvironment, conn: psycopg.Connection) -> None:
        super().__init__()
        self.env = env
        self._raw = conn
        # UPDATEs not sent yet: a queue decision renumbers every run in line (`QUEUED 3rd of 40`),
        # and they go together (one statement) before the next statement or the commit
        self._updates: list[tuple] = []

    @property
    def conn(self) -> psycopg.Connection:
        """The transaction's connection, the UPDATEs deferred so far sent first (in order)."""
        if self._updates:
            self.flush()
        return self._raw

    def flush(self) -> None:
        updates, self._updates = self._updates, []
        if len(updates) < 3:
            for values in updates:
                self._raw.execute(store.UPDATE, values)
            return
        latest = {values[-1]: values[:-1] for values in updates}  # a run updated twice: its last
        self._raw.execute(store.UPDATE_MANY, [list(column) for column in zip(*latest.values(), strict=True)])

    def active_runs(self) -> list[RunRecord]:
        found = self.conn.execute(store.ACTIVE).fetchall()
        alive = self.env._alive([(row[-1], row[-2]) for row in found], self.conn, decide=True)
        out = []
        now = time.time()
        for row in found:
            r = rows.record_from_row(row[:-2])
            if row[-1] in alive:
                out.append(r)
            else:
                self.update(rows.mark_lost(r, now))
                self.publish_after_commit(Event("ended", r, now))
                self.reaped.append(r)
        return out

    def get(self, instance_id: str) -> RunRecord | None:
        row = self.conn.execute(store.BY_ID, (instance_id,)).fetchone()
        return rows.record_from_row(row) if row else None

    def find(self, query: RunQuery) -> list[RunRecord]:
        return self.env._find(self.conn, query)

    def insert(self, run: RunRecord) -> None:
        import psycopg.errors

        try:
            self.conn.execute(store.INSERT, rows.row_values(run))
        except psycopg.errors.UniqueViolation:
            raise UsageError(f"run id {run.run_id} of job {run.job_id} already exists; choose another") from None
        for path in (run.stdout_path, run.stderr_path):  # created with the row, as locally
            if path and not os.path.isdir(os.path.dirname(path)):
                from runtools.env.local.paths import ensure_private_dir

                ensure_private_dir(os.path.dirname(path))

    def update(self, run: RunRecord) -> None:
        self._updates.append((*rows.row_values(run), run.instance_id))  # the record as it is now

    def delete(self, instance_id: str) -> None:
        self.conn.execute("DELETE FROM runs WHERE instance_id=%s", (instance_id,))
        self.conn.execute("DELETE FROM output_chunks WHERE instance_id=%s", (instance_id,))

    def get_setting(self, kind: str, key: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT value FROM settings WHERE kind=%s AND key=%s", (kind, key)).fetchone()
        return loads(row[0]) if row else None

    def put_setting(self, kind: str, key: str, value: dict[str, Any] | None) -> None:
        if value is None:
            self.conn.execute("DELETE FROM settings WHERE kind=%s AND key=%s", (kind, key))
        else:
            self.conn.execute(
                "INSERT INTO settings (kind, key, value) VALUES (%s,%s,%s) "
                "ON CONFLICT (kind, key) DO UPDATE SET value=excluded.value",
                (kind, key, dumps(value)),
            )

    def settings(self, kind: str) -> dict[str, dict[str, Any]]:
        found = self.conn.execute("SELECT key, value FROM settings WHERE kind=%s ORDER BY key COLLATE \"C\"",
                                  (kind,)).fetchall()
        return {k: loads(v) for k, v in found}

    def now(self) -> float:
        """The database server's clock, read after the environment's transaction lock was taken:
        every host decides on this one clock (services' rate windows)."""
        row = self.conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
        assert row is not None
        return float(row[0])


class _Transaction:
    """`with env.transaction() as tx`: BEGIN; the environment's advisory xact lock; ...; NOTIFY the
    transaction's events; COMMIT. (A class, not @contextmanager: as locally.)"""

    __slots__ = ("env", "tx")

    def __init__(self, env: PostgresEnvironment) -> None:
        self.env = env
        self.tx: PgTx | None = None

    def __enter__(self) -> PgTx:
        env = self.env
        env._lock.acquire()
        try:
            for attempt in (1, 2):
                conn = env._main()
                try:  # one round trip (no parameters: the simple protocol takes both statements)
                    conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({int(env._env_key)})")
                    break
                except Exception as e:
                    env._failed(conn)
                    if attempt == 1 and (conn.broken or conn.closed):  # lost since its last use
                        continue
                    raise store.error(e, env.display) from None
        except BaseException:
            env._lock.release()
            raise
        self.tx = PgTx(env, conn)
        return self.tx

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        env, tx = self.env, self.tx
        assert tx is not None
        conn = tx._raw  # (not tx.conn: a transaction rolled back sends its deferred UPDATEs nowhere)
        psycopg = store.import_psycopg()
        try:
            if exc_type is not None:
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error:
                    env._failed(conn)
                if isinstance(exc, psycopg.Error):
                    env._failed(conn)
                    raise store.error(exc, env.display) from None
                return
            try:
                tx.flush()
                for ev in tx.events:  # delivered by the server at commit, never on rollback
                    send(conn, env._events_channel, _event_text(ev))
                conn.execute("COMMIT")
            except psycopg.Error as e:
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error:
                    pass
                env._failed(conn)
                raise store.error(e, env.display) from None
        finally:
            env._lock.release()
        if tx.reaped:  # their wrappers are gone: their end reaches notifiers and the event log from here
            from runtools.plugins.deliver import hand_over

            hand_over(env, tx.reaped)


# -- leases ------------------------------------------------------------------------------------


#: how long the lease watcher may go unscheduled beyond its probe interval before it counts as
#: having been frozen (a paused VM, SIGSTOP): a lease then found gone may have been taken over
#: already, so the command is killed at once instead of the lease being taken again
FROZEN_S = 0.5
#: between attempts to take the lease again while neither key is held (the holder has W_h only)
RETAKE_FAST_S = 0.05


def _server_away(text: str) -> bool:
    """Does this connection failure say that no server is there (stopped, restarting)? Then no
    other host can decide either, and once it is back it gives runs from before its start
    RESTART_GRACE_S to take their leases again."""
    return any(s in text for s in ("Connection refused", "starting up", "shutting down", "No such file or directory"))


class PgLease(Lease):
    """A session advisory lock on the run's key, on a connection of its own (whose socket the
    command inherits). A thread watches that socket (a cut is seen at once) and confirms the lock
    every LEASE_PROBE_S (a silent server). A cut connection is made again and the lock taken
    again — under the run's row lock, and only while the run has not been ended by another
    process.

    The fence (never two copies): takers end a run holding neither its lease nor its control key
    (the hub's) LOST only after waiting out store.fence() (W_t, `_fence` of the environment). So
    once this process sees both gone it has W_h = W_t / 2 to take one again; when it cannot, finds
    the run ended, or finds its lease gone after being frozen, it SIGKILLs the command's group at
    once (no TERM grace: a taker may be about to start) and calls `on_lost(why)`. While the control
    key is held, a lease not taken again within the lease grace calls `on_lost(why)` (the run stops
    its command: TERM, then KILL). A guardian process (`_guard`) covers this process being killed
    or frozen while the command runs."""

    def __init__(self, env: PostgresEnvironment, instance_id: str) -> None:
        self.env = env
        self.iid = instance_id
        self.key = env.lease_key(instance_id)
        self.ckey = env._control_key(instance_id)
        self.on_lost: Callable[[str], None] | None = None
        self.grace = store.lease_grace()
        self.hold_s = store.fence() / 2
        conn = env._connect(lease=True)
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
        except Exception as e:
            conn.close()
            raise store.error(e, env.display) from None
        self.conn = conn
        self._lock = _thread.allocate_lock()  # guards self.conn (taken before _state)
        self._released = False
        # the fence, guarded by _state: is the lease held; since when neither key is (monotonic);
        # a counter that voids older deadlines; why the command was killed
        self._state = _thread.allocate_lock()
        self._lease_ok = True
        self._exposed: float | None = None
        self._gen = 0
        self._fenced: str | None = None
        self._verdict: str | None = None  # why the fence killed the command (it was running)
        self._told = False  # on_lost was called
        self._away = False  # the last reconnect found no server there (a restart): nobody can decide
        self._pid: int | None = None
        self._pidfd: int | None = None
        self._guardian: tuple[int, Any] | None = None  # (pid, our end of its socket pair)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._pipe_open = True
        env._leases.add(self)
        _thread.start_new_thread(self._watch, ())

    def inheritable_fds(self) -> tuple[int, ...]:
        with self._lock:
            fd = self._fileno()
        return (fd,) if fd >= 0 else ()  # none while it is being taken again: the guardian gets that one

    def _fileno(self) -> int:
        """The lease connection's socket (under _lock); -1 once it is lost."""
        try:
            return -1 if self._released else self.conn.fileno()
        except Exception:
            return -1

    # -- the command ---------------------------------------------------------------------------

    def executing(self, pid: int) -> None:
        """The command started (it leads its own process group): the fence may now kill it, and
        a guardian watches over it in case this process is killed or frozen."""
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        with self._state:
            if self._released:
                if pidfd is not None:
                    os.close(pidfd)
                return
            self._pid, self._pidfd = pid, pidfd
            fenced = self._fenced
        if fenced is not None:  # fenced while it was being spawned
            self._kill()
        elif pidfd is not None:
            self._start_guardian(pid, pidfd)

    @property
    def fenced(self) -> str | None:
        """Why the fence killed the command (this process's or its guardian's), or None. The
        guardian says so before it kills: once the command is reaped, its word is here."""
        with self._state:
            if self._verdict is None and self._guardian is not None:
                import socket

                try:
                    said = self._guardian[1].recv(16, socket.MSG_DONTWAIT)
                except OSError:
                    said = b""
                if said.startswith(b"K"):
                    self._verdict = (f"its guardian killed the command: the lease connection on {self.env.display} "
                                    "was cut while this wrapper was gone or silent (another process may take over)")
            return self._verdict

    def _kill(self) -> None:
        """SIGKILL the command's group (its leader through its pidfd: never a reused pid)."""
        import signal

        with self._state:
            if self._pidfd is None or self._pid is None:
                return
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except OSError:
                return  # reaped already: the command has ended
            self._verdict = self._fenced
            try:
                os.killpg(self._pid, signal.SIGKILL)
            except OSError:
                pass

    def _start_guardian(self, pid: int, pidfd: int) -> None:
        import socket

        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            return
        keeper = f"{self.env.libpq_url}\n{self.env.schema}\n{self.iid}\n".encode()
        with self._lock:  # no new lease connection while forking: the guardian gets the current one
            gpid = -1
            if not self._released:
                with self._state:  # where the fence stands
                    cut = not self._lease_ok
                    deadline = None if self._exposed is None else self._exposed + self.hold_s
                try:
                    gpid = _fork()
                except OSError:
                    gpid = -1
                if gpid == 0:
                    _guard(theirs.fileno(), self._fileno(), pid, pidfd, self.hold_s, cut, deadline, keeper)  # no return
            theirs.close()
            if gpid < 0:
                ours.close()
                return
            ours.setblocking(False)  # a stopped guardian never blocks us: it would then kill on its own
            with self._state:
                self._guardian = (gpid, ours)

    def _tell(self, msg: bytes, fd: int | None = None) -> None:
        """Tell the guardian (under _state): L + fd the lease is held again on this connection; C
        the lease is cut but the control key is held; E neither key is held."""
        if self._guardian is None:
            return
        import socket

        try:
            socket.send_fds(self._guardian[1], [msg], [fd] if fd is not None else [])
        except OSError:
            pass

    # -- the fence -----------------------------------------------------------------------------

    def _evaluate(self) -> None:
        """Start or void the fence's deadline: neither key held -> W_h to take one again. Called
        on every change of the lease or of the hub (its connection lost / back)."""
        hub = self.env._hub_if_open()
        if hub is not None and hub.ended_run(self.ckey):
            self._fence("the run was ended by another process while its connections were cut")
            return
        covered = self._away or (hub is not None and hub.holds(self.ckey))
        with self._state:
            if self._released or self._fenced is not None:
                return
            if self._lease_ok or covered:
                if self._exposed is not None:
                    self._exposed = None
                    self._gen += 1
                if not self._lease_ok:
                    self._tell(b"C")
                return
            if self._exposed is not None:
                return
            self._exposed = time.monotonic()
            self._gen += 1
            gen = self._gen
            self._tell(b"E")
        _thread.start_new_thread(self._deadline, (gen,))

    def _deadline(self, gen: int) -> None:
        end = time.monotonic() + self.hold_s
        while (left := end - time.monotonic()) > 0:
            time.sleep(wait_slice(left) or 0.0)
        with self._state:
            if gen != self._gen or self._released or self._fenced is not None:
                return
        self._fence(f"lost its lease and control connections on {self.env.display} and could not take them "
                    f"again within {self.hold_s:g}s: killed the command so that no other process runs a second copy")

    def _fence(self, why: str) -> None:
        """Kill the command at once, then tell the run why (in a thread of its own: the caller may
        be the hub's thread, and the run records it in a transaction)."""
        with self._state:
            if self._fenced is not None or self._released:
                return
            self._fenced = why
        self._kill()
        _thread.start_new_thread(self._lost, (why,))

    def _lost(self, why: str) -> None:
        with self._state:
            if self._told or self._released:
                return
            self._told = True
        callback = self.on_lost
        if callback is not None:
            try:
                callback(why)
            except Exception:
                pass

    # -- the watcher ---------------------------------------------------------------------------

    def _probe(self) -> bool:
        with self._lock:
            if self._released:
                return True
            try:
                self.conn.execute("SELECT 1")
                return True
            except Exception:
                return False

    def _check(self) -> bool:
        """Read what arrived on the idle lease connection: False once it is closed."""
        with self._lock:
            if self._released:
                return True
            try:
                self.conn.pgconn.consume_input()
            except Exception:
                return False
            return not self.conn.broken and self.conn.pgconn.status == 0

    def _retake(self) -> str | None:
        """Connect again and take the lock again: None when done, else why not (yet)."""
        env = self.env
        try:
            conn = env._connect(schema=True, lease=True)
        except Exception as e:
            away = _server_away(str(e))
            if away != self._away:
                self._away = away
                self._evaluate()
            return f"cannot reach {env.display}: {e}"
        self._away = False
        try:
            with conn.transaction():  # the run's row lock: a taker looks at the keys again under it
                row = conn.execute("SELECT stage FROM runs WHERE instance_id=%s FOR UPDATE", (self.iid,)).fetchone()
                ended = row is not None and row[0] == "ENDED"
                got = False
                if not ended:
                    taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                    got = bool(taken and taken[0])
        except Exception as e:
            conn.close()
            return f"cannot take the lease again: {e}"
        if ended or not got:
            conn.close()
            return "ended" if ended else "its lock is still held by the lost connection's session"
        with self._lock:
            if self._released:
                conn.close()
                return None
            old, self.conn = self.conn, conn
            with self._state:
                self._lease_ok = True
                self._tell(b"L", conn.fileno())
        try:
            old.close()
        except Exception:
            pass
        self._evaluate()
        return None

    def _watch(self) -> None:
        import select

        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        sock = -1
        last_ok = time.monotonic()
        next_probe = last_ok + LEASE_PROBE_S
        try:
            while not self._released:
                with self._lock:
                    fd = self._fileno()
                if fd != sock:
                    if sock >= 0:
                        poller.unregister(sock)
                    sock = fd
                    if sock >= 0:
                        poller.register(sock, select.POLLIN | select.POLLRDHUP)
                wait = max(0.0, next_probe - time.monotonic())
                tick, wall = time.monotonic(), time.time()
                ready = poller.poll(int(wait * 1000) + 1)
                if self._released:
                    return
                now, now_wall = time.monotonic(), time.time()
                # slept much longer than asked, or the clocks parted: this host was frozen
                frozen = now - tick > wait + FROZEN_S or abs((now_wall - wall) - (now - tick)) > FROZEN_S
                _drain(self._wake_r)
                if any(f == sock for f, _ in ready):
                    ok = self._check() and (not frozen or self._probe())
                elif frozen or now >= next_probe:
                    ok = self._probe()
                else:
                    continue  # woken up: look again
                if ok:
                    last_ok = time.monotonic()
                    next_probe = last_ok + LEASE_PROBE_S
                elif self._gone(last_ok, frozen):
                    return
                else:
                    last_ok = time.monotonic()
                    next_probe = last_ok + LEASE_PROBE_S
        finally:
            with self._state:
                self._pipe_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _gone(self, last_ok: float, frozen: bool) -> bool:
        """The lease connection is lost: take the lease again (False), or give up (True)."""
        with self._state:
            self._lease_ok = False
        if frozen:
            self._fence(f"found its lease on {self.env.display} gone after this host was frozen (another "
                        "process may have taken over): killed the command at once")
            return True
        self._evaluate()
        while not self._released and self._fenced is None:
            why = self._retake()
            if why is None:
                return False
            if why == "ended":
                self._fence("the run was ended by another process while its lease connection was cut")
                return True
            if time.monotonic() - last_ok >= self.grace:
                self._lost(f"lost its lease on {self.env.display} for {self.grace:g}s ({why}): "
                           "stopped the command so that no other process runs a second copy")
                return True
            with self._state:
                pause = RETAKE_FAST_S if self._exposed is not None else RECONNECT_S
            if self._pause(pause):
                return True
        return True

    def _pause(self, seconds: float) -> bool:
        """Sleep, woken by release(): True when released."""
        import select

        select.select([self._wake_r], [], [], seconds)
        _drain(self._wake_r)
        return self._released

    def release(self) -> None:
        import signal

        with self._lock:
            if self._released:
                return
            with self._state:
                self._released = True
                guardian, self._guardian = self._guardian, None
                pidfd, self._pidfd = self._pidfd, None
                if self._pipe_open:
                    try:
                        os.write(self._wake_w, b"x")
                    except OSError:
                        pass
            if guardian is not None:  # it ends with the command (usually gone by now); else killed
                try:
                    if os.waitpid(guardian[0], os.WNOHANG)[0] == 0:
                        os.kill(guardian[0], signal.SIGKILL)
                        os.waitpid(guardian[0], 0)  # never left a zombie (containers' PID 1 may not reap)
                except OSError:
                    pass
                guardian[1].close()
            if pidfd is not None:
                os.close(pidfd)
            try:  # explicitly: a process that inherited the socket may keep the session open
                self.conn.execute("SELECT pg_advisory_unlock_all()")
            except Exception:
                pass
            self.conn.close()
        self.env._leases.discard(self)


def _drain(fd: int) -> None:
    """Empty a non-blocking wake-up pipe (its bytes only say "look again")."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass


def _fork() -> int:
    """os.fork() without Python 3.12's warning about forking a process that has threads: the
    child (the guardian) only makes system calls, never touching what other threads held."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _start_keeper(keeper: bytes) -> None:
    """In the guardian (single-threaded: a plain fork is safe): start keeper.py in a fresh Python
    with fd 3 (EOF when the guardian ends) and fd 4 (`keeper`), nothing else (not the lease)."""
    import sys

    try:
        alive_r, _alive_w = os.pipe()
        data_r, data_w = os.pipe()
        os.write(data_w, keeper)  # a few hundred bytes: fits the pipe
        os.close(data_w)
        child = os.fork()
    except OSError:
        return
    if child == 0:
        try:
            import fcntl

            alive, data = fcntl.fcntl(alive_r, fcntl.F_DUPFD, 10), fcntl.fcntl(data_r, fcntl.F_DUPFD, 10)
            os.dup2(alive, 3)
            os.dup2(data, 4)
            os.closerange(5, 1 << 20)  # the lease socket, the write end of fd 3's pipe, ...
            os.execv(sys.executable, [sys.executable, "-m", "runtools.env.postgres.keeper"])
        finally:
            os._exit(0)
    os.close(alive_r)
    os.close(data_r)
    # _alive_w stays open in the guardian: the keeper sees EOF on its fd 3 when the guardian ends


def _guard(ctl: int, lease_fd: int, pid: int, pidfd: int, hold_s: float, cut: bool, deadline: float | None,
           keeper: bytes) -> None:
    """The guardian of a run's command: a fork of its wrapper, in a session of its own, doing
    nothing but system calls (the wrapper's other threads do not exist here). It holds the
    lease connection's socket (so a lease taken again on a new connection stays with the command
    if the wrapper dies) and watches it for a hang-up (never reading it). It ends when the
    command ends. It SIGKILLs the command's group when the lease connection is cut and
    - the wrapper is gone (killed: the command would run on unsupervised), or
    - the wrapper says neither key is held (E), or does not say within W_h that it took the
      lease again (L) or still holds the control key (C): a frozen or stuck wrapper.
    `cut`, `deadline`: the fence as it stood when it was forked (lease_fd is -1 when cut).
    Once the wrapper is gone, it starts the keeper (keeper.py, with `keeper`: URL, schema, run),
    which answers `taro stop` from any host; the keeper ends when this process does."""
    try:
        import select
        import signal
        import socket

        os.setsid()
        for sig in signal.valid_signals():  # the wrapper's Python handlers are not ours
            try:
                if callable(signal.getsignal(sig)):
                    signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        keep = sorted({ctl, lease_fd, pidfd} - {-1})
        low = 0
        for fd in keep:
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 1 << 20)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            if fd != null and fd not in keep:
                os.dup2(null, fd)
        chan = socket.socket(fileno=ctl)
        hangup = select.POLLRDHUP | select.POLLHUP | select.POLLERR
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(ctl, select.POLLIN)
        if lease_fd >= 0:
            poller.register(lease_fd, hangup)
        wrapper = True
        hung = cut or lease_fd < 0  # the watched lease connection was cut
        covered = hung and deadline is None  # ... and the wrapper said its control key is held (C)
        # deadline: kill then, unless the wrapper says otherwise

        def kill() -> None:
            try:  # first the word to the wrapper (if it lives): the run ends ERROR, saying why
                chan.send(b"K", socket.MSG_DONTWAIT)
            except OSError:
                pass
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            os._exit(0)

        while True:
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000) + 1)
            events = dict(poller.poll(wait))
            if pidfd in events:
                os._exit(0)  # the command ended
            if ctl in events:
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(chan, 16, 4)
                except OSError:
                    msg, fds = b"", []
                if not msg:  # the wrapper is gone
                    wrapper = False
                    poller.unregister(ctl)
                    if hung:
                        kill()
                    _start_keeper(keeper)
                elif msg == b"L" and fds:
                    if not hung:
                        poller.unregister(lease_fd)
                    if lease_fd >= 0:
                        os.close(lease_fd)
                    lease_fd, fds = fds[0], fds[1:]
                    poller.register(lease_fd, hangup)
                    hung = covered = False
                    deadline = None
                elif msg == b"C":
                    covered, deadline = True, None
                elif msg == b"E":
                    covered = False
                    if deadline is None:
                        deadline = time.monotonic() + hold_s
                for fd in fds:
                    os.close(fd)
            if not hung and lease_fd in events:
                hung = True
                poller.unregister(lease_fd)  # level-triggered: it would be reported again and again
                if not wrapper:
                    kill()
                if not covered and deadline is None:
                    deadline = time.monotonic() + hold_s
            if deadline is not None and time.monotonic() >= deadline:
                kill()
    finally:
        os._exit(0)


# -- events ------------------------------------------------------------------------------------


class PgSubscription(Subscription):
    def __init__(self, env: PostgresEnvironment) -> None:
        from queue import Empty, SimpleQueue

        self._empty = Empty
        self._queue: SimpleQueue[Event | None] = SimpleQueue()
        self._closed = False
        self._hub = env._hub()
        self._channel = env._events_channel
        self._hub.on_reconnect.append(self.wake)
        self._hub.listen(self._channel, self._on_notify)

    def _on_notify(self, payload: str) -> None:
        if self._closed:
            return
        text = receive(self._hub.conn, payload)
        if text is not None:
            self._queue.put(Event.from_wire(loads(text)))

    def get(self, timeout: float | None = None) -> Event | None:
        if self._closed:
            return None
        try:
            return self._queue.get(timeout=wait_slice(timeout) if timeout is not None else None)
        except self._empty:
            return None

    def wake(self) -> None:
        self._queue.put(None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._hub.unlisten(self._channel, self._on_notify)
        try:
            self._hub.on_reconnect.remove(self.wake)
        except ValueError:
            pass


# -- control -----------------------------------------------------------------------------------


class PgControlServer(ControlEndpoint):
    """The live run's end of control: requests arrive as NOTIFYs on the run's channel; answers go
    to the requester's reply channel. Output chunks are written to `output_chunks`, the last
    output_bound() bytes of each stream kept: batched (a thread writes what came within
    OUTPUT_FLUSH_S, adjacent chunks of a stream as one row), flushed before the run's end is
    recorded. A batch that cannot be written is tried again with the next one; beyond twice the
    bound the oldest waiting bytes go, which readers report as a gap (offsets not contiguous)."""

    def __init__(self, env: PostgresEnvironment, run: RunRecord, handler: ControlHandler) -> None:
        self.env = env
        self.iid = run.instance_id
        self.handler = handler
        self.offsets = {"stdout": 0, "stderr": 0}
        self.last_seq = 0
        self.bound = output_bound()
        # per stream: (seq, size) of its stored chunks, oldest first; bytes stored; the index of
        # the oldest chunk still stored
        self._chunks: dict[str, list[tuple[int, int]]] = {"stdout": [], "stderr": []}
        self._stored = {"stdout": 0, "stderr": 0}
        self._first = {"stdout": 0, "stderr": 0}
        self._inflight: set = set()
        # lock order: the hub's lock (the connection) before this one
        self._state_lock = _thread.RLock()
        self._closed = False
        self._batch: list[tuple[str, int, bytes]] = []  # (stream, offset, data) not written yet
        self._batched = 0
        self._flushed = {"stdout": 0, "stderr": 0}  # bytes of each stream written (what followers read)
        self._kick = _thread.allocate_lock()  # released when the batch has something: the writer wakes
        self._kick.acquire()
        self._writer: int | None = None
        self._hub = env._hub()
        self._key = env._control_key(self.iid)
        self._channel = env._control_channel(self.iid)
        self._hub.hold(self._key, self.iid)  # requesters and followers see the run reachable while it is held
        self._hub.listen(self._channel, self._on_notify)

    def _reply(self, to: str, rid: str, resp: dict[str, Any]) -> None:
        with self._hub.lock:
            try:
                send(self._hub.conn, to, dumps({"id": rid, "resp": resp}))
            except Exception:
                pass

    def _on_notify(self, payload: str) -> None:
        if self._closed:
            return
        try:
            text = receive(self._hub.conn, payload)
            msg = loads(text) if text else {}
            req, rid, to = msg["req"], msg["id"], msg["reply"]
        except Exception:
            return
        if isinstance(req, dict) and req.get("op") == "follow":
            self.flush()  # what came so far is in the database: the follower reads it there
            with self._state_lock:  # a consistent pair: bytes stored so far and the last chunk
                offsets = self._flushed if self.bound > 0 else self.offsets  # (nothing stored: the file)
                resp = {"ok": True, "offsets": dict(offsets), "seq": self.last_seq}
            self._reply(to, rid, resp)
            return
        done = _thread.allocate_lock()
        done.acquire()
        with self._state_lock:
            self._inflight.add(done)
        _thread.start_new_thread(self._answer, (req, rid, to, done))

    def _answer(self, req: Any, rid: str, to: str, done: Any) -> None:
        try:
            try:
                resp = self.handler(req)
            except Exception as e:  # the answer must reach the caller, whatever happened
                resp = {"ok": False, "error": str(e)}
            self._reply(to, rid, resp)
        finally:
            with self._state_lock:
                self._inflight.discard(done)
            done.release()

    def output(self, stream: str, data: bytes) -> None:
        if not data:
            return
        with self._state_lock:
            off = self.offsets.get(stream, 0)
            self.offsets[stream] = off + len(data)
            if self._closed or self.bound <= 0:
                return
            if self._batch and self._batch[-1][0] == stream and self._batch[-1][1] + len(self._batch[-1][2]) == off:
                prev = self._batch[-1]  # adjacent: one row
                self._batch[-1] = (stream, prev[1], prev[2] + data)
            else:
                self._batch.append((stream, off, data))
            self._batched += len(data)
            full = self._batched >= OUTPUT_BATCH_BYTES
            if self._writer is None:
                self._writer = _thread.start_new_thread(self._write_loop, ())
        if full:
            self.flush()  # the capture pays for a full batch: memory stays bounded
        else:
            try:
                self._kick.release()
            except RuntimeError:
                pass  # the writer is awake already

    def _write_loop(self) -> None:
        while not self._closed:
            self._kick.acquire()
            if self._closed:
                return
            time.sleep(OUTPUT_FLUSH_S)  # what comes meanwhile joins this batch
            self.flush()

    def flush(self) -> None:
        """Write the output waiting in the batch (before the run's end is recorded, and at close)."""
        with self._hub.lock, self._state_lock:
            batch, self._batch, self._batched = self._batch, [], 0
            for i, (stream, off, data) in enumerate(batch):
                if not self._store(stream, off, data):
                    self._keep(batch[i:])
                    return

    def _keep(self, failed: list[tuple[str, int, bytes]]) -> None:
        """Put what could not be written back in front of the batch; beyond twice the bound,
        the oldest bytes go (a gap in the stored copy, which its readers report)."""
        self._batch = failed + self._batch
        self._batched = sum(len(d) for _s, _o, d in self._batch)
        while self._batched > 2 * max(self.bound, OUTPUT_BATCH_BYTES) and len(self._batch) > 1:
            self._batched -= len(self._batch.pop(0)[2])

    def _store(self, stream: str, off: int, data: bytes) -> bool:
        """Insert one chunk and keep the last `bound` bytes of its stream; False if it failed."""
        try:
            conn = self._hub.conn
            row = conn.execute(
                "INSERT INTO output_chunks (instance_id, stream, off, data) VALUES (%s,%s,%s,%s) "
                "RETURNING seq", (self.iid, stream, off, data)).fetchone()
            assert row is not None
            self.last_seq = row[0]
            self._flushed[stream] = off + len(data)
            chunks = self._chunks.setdefault(stream, [])
            chunks.append((row[0], len(data)))
            self._stored[stream] = self._stored.get(stream, 0) + len(data)
            first = self._first.get(stream, 0)
            if self._stored[stream] > self.bound:  # keep the last `bound` bytes of the stream
                upto = None
                while self._stored[stream] > self.bound and first < len(chunks) - 1:
                    upto, size = chunks[first]
                    self._stored[stream] -= size
                    first += 1
                # counted as gone now: if the DELETE fails, the next one (seq <= a later upto)
                # takes them too, instead of their sizes being subtracted a second time
                self._first[stream] = first
                if upto is not None:
                    conn.execute("DELETE FROM output_chunks WHERE instance_id=%s AND stream=%s AND seq <= %s",
                                 (self.iid, stream, upto))
                cut = self._stored[stream] - self.bound
                if cut > 0:  # the oldest chunk kept straddles the bound: keep its tail only
                    seq, size = chunks[first]
                    conn.execute("UPDATE output_chunks SET data = substring(data FROM %s), off = off + %s "
                                 "WHERE seq = %s", (cut + 1, cut, seq))
                    chunks[first] = (seq, size - cut)
                    self._stored[stream] -= cut
                if first > 1024:
                    del chunks[:first]
                    self._first[stream] = 0
            return True
        except Exception:
            # the database copy is best effort (the full output is in the run's files); a chunk
            # whose INSERT went through but whose trimming failed counts as written
            return self._flushed.get(stream) == off + len(data)

    def rebase(self, stream: str, end: int) -> None:
        with self._hub.lock, self._state_lock:
            self.offsets[stream] = end

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        with self._hub.lock, self._state_lock:
            self._closed = True
            inflight = list(self._inflight)
        try:
            self._kick.release()  # the writer ends
        except RuntimeError:
            pass
        self._hub.unlisten(self._channel, self._on_notify)  # no new requests; answers in flight still go
        for done in inflight:  # a request that ended the run (stop) still gets its answer
            if done.acquire(timeout=1.0):
                done.release()
        self._hub.release(self._key)


# -- the environment ---------------------------------------------------------------------------


class PostgresEnvironment(Environment):
    """A postgres environment: `url` is a libpq URL, optionally with `schema=NAME` (our option,
    default `runtools`). Nothing is created until the first transaction (`create=False`: never)."""

    def __init__(self, url: str, name: str | None = None, create: bool = True) -> None:
        self.libpq_url, self.schema = store.split_url(url)
        self.display = store.redact(url)
        self.name = name or self.display
        self.create = create
        self._env_key = store.key64("runtools-env", self.schema)
        h = store.short_hash(self.schema)
        self._events_channel = f"rt_{h}_ev"
        self._conn: psycopg.Connection | None = None
        self._lock = _thread.RLock()
        self.__hub: _Hub | None = None
        self._reply_channel = f"rt_r_{os.urandom(8).hex()}"
        self._waiting: dict[str, list] = {}  # request id -> [answered lock, answer]
        self._leases: set[PgLease] = set()  # held by this process: told when the hub's connection is lost / back
        self._closed = False
        self._ready = False
        self._reconnect_wait = store.reconnect_wait(RECONNECT_WAIT_S)
        self._lease_waits: LeaseWaits | None = None

    # -- plumbing ------------------------------------------------------------------------------

    def _connect(self, schema: bool = False, lease: bool = False) -> psycopg.Connection:
        if self._closed:
            raise BackendError(f"environment {self.name} was closed")
        return store.connect(self.libpq_url, self.display, self.schema if schema else None, lease=lease)

    def _main(self) -> psycopg.Connection:
        """The main connection (under `_lock`), the schema brought up to date on first use."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        deadline = time.monotonic() + self._reconnect_wait
        while True:
            try:
                conn = self._connect(schema=True)
                break
            except BackendError:
                # the first connection fails at once (exit 5/125); a lost one is made again while
                # the server comes back (a restart), so a run's transitions and end are recorded
                if not self._ready or self._closed or time.monotonic() >= deadline:
                    raise
                time.sleep(0.25)
        try:
            if not self._ready:
                if not store.ensure_schema(conn, self.schema, self.display, self.create):
                    raise NotFoundError(f"environment {self.display} has no schema {self.schema} yet: "
                                        "run a job in it first, or check -e / RUNTOOLS_ENV")
                self._ready = True
        except BaseException as e:
            conn.close()
            psycopg = store.import_psycopg()
            if isinstance(e, psycopg.Error):
                raise store.error(e, self.display) from None
            raise
        self._conn = conn
        return conn

    def _failed(self, conn: psycopg.Connection) -> None:
        """Forget a connection that failed mid-way (the next use opens a new one)."""
        if conn is self._conn and (conn.broken or conn.closed):
            self._conn = None

    def exists(self) -> bool:
        with self._lock:
            conn = self._connect()
            try:
                version = store.current_version(conn, self.schema)
            except Exception as e:
                raise store.error(e, self.display) from None
            finally:
                conn.close()
        if version is not None and version > store.SCHEMA_VERSION:
            raise store._newer(self.display, self.schema, version)
        return version is not None

    def lease_key(self, instance_id: str) -> int:
        return store.key64("runtools-lease", self.schema, instance_id)

    def _control_key(self, instance_id: str) -> int:
        return store.key64("runtools-control", self.schema, instance_id)

    def _control_channel(self, instance_id: str) -> str:
        return f"rt_{store.short_hash(self.schema)}_c_{store.short_hash(instance_id)}"

    def _held(self, keys: list[int], conn: psycopg.Connection) -> set[int]:
        if not keys:
            return set()
        return {row[0] for row in conn.execute(store.HELD, (keys,)).fetchall()}

    def _alive(self, runs: list[tuple[str, bool]], conn: psycopg.Connection, decide: bool = False) -> set[str]:
        """Which of these active runs (instance id, inserted before the server started) live:
        their lease is held, or their wrapper's control connection is (its lease connection was
        cut: the wrapper takes the lease again or stops its command within its grace), or
        they were there before a server restart less than RESTART_GRACE_S ago (their wrappers
        are taking their leases again). The others are dead: LOST — when `decide` (inside the
        deciding transaction) only once the fence is waited out (`_fence`)."""
        if not runs:
            return set()
        keys = {iid: (self.lease_key(iid), self._control_key(iid)) for iid, _ in runs}
        held = self._held([k for pair in keys.values() for k in pair], conn)
        alive = {iid for iid, (lk, ck) in keys.items() if lk in held or ck in held}
        if len(alive) < len(runs) and any(before for iid, before in runs if iid not in alive):
            row = conn.execute("SELECT extract(epoch FROM now() - pg_postmaster_start_time())").fetchone()
            if row is not None and float(row[0]) < RESTART_GRACE_S:
                alive.update(iid for iid, before in runs if before)
        if decide and len(alive) < len(runs):
            alive |= self._fence({iid: pair for iid, pair in keys.items() if iid not in alive}, conn)
        return alive

    def _fence(self, dead: dict[str, tuple[int, int]], conn: psycopg.Connection) -> set[str]:
        """Which of these runs, found holding neither key, take a key again within the fence
        (store.fence(), W_t): waited out here, inside the deciding transaction, so no decision
        anywhere goes on before it. A wrapper whose connections were both cut (an administrator's
        pg_terminate_backend) takes its keys again meanwhile — under the run's row lock, not the
        decision lock held here — or SIGKILLs its command after W_t / 2; then the rows are locked
        (a taking-again in progress finishes first) and the keys looked at once more."""
        end = time.monotonic() + store.fence()
        while (left := end - time.monotonic()) > 0:
            time.sleep(wait_slice(left) or 0.0)
        conn.execute("SELECT 1 FROM runs WHERE instance_id = ANY(%s) ORDER BY instance_id FOR UPDATE", (list(dead),))
        held = self._held([k for pair in dead.values() for k in pair], conn)
        return {iid for iid, (lk, ck) in dead.items() if lk in held or ck in held}

    def _read(self, fn: Callable[[psycopg.Connection], Any]) -> Any:
        """`fn(main connection)` (idempotent: it is tried again once on a new connection when the
        one it got was lost since its last use)."""
        with self._lock:
            for attempt in (1, 2):
                conn = self._main()
                try:
                    return fn(conn)
                except Exception as e:
                    psycopg = store.import_psycopg()
                    if not isinstance(e, psycopg.Error):
                        raise
                    self._failed(conn)
                    if attempt == 2 or not (conn.broken or conn.closed):
                        raise store.error(e, self.display) from None
        raise AssertionError("unreachable")

    # -- store ---------------------------------------------------------------------------------

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    def _find(self, conn: psycopg.Connection, q: RunQuery) -> list[RunRecord]:
        sql, params = store.query_sql(q)
        out = []
        for row in conn.execute(sql, params):
            r = rows.record_from_row(row)
            if q.matcher(r):
                out.append(r)
        return out

    def find_runs(self, query: RunQuery) -> list[RunRecord]:
        return self._read(lambda conn: self._find(conn, query))

    def get_run(self, instance_id: str) -> RunRecord | None:
        row = self._read(lambda conn: conn.execute(store.BY_ID, (instance_id,)).fetchone())
        return rows.record_from_row(row) if row else None

    def active_runs(self, matcher: Any = None) -> list[RunRecord]:
        """Read without the environment lock; take it only when a dead lease needs reaping."""
        def read(conn: psycopg.Connection) -> tuple[list[RunRecord], bool]:
            found = conn.execute(store.ACTIVE).fetchall()
            alive = self._alive([(row[-1], row[-2]) for row in found], conn)
            return [rows.record_from_row(row[:-2]) for row in found], len(alive) == len(found)

        runs, all_alive = self._read(read)
        if not all_alive:
            with self.transaction() as tx:
                runs = tx.active_runs()
        return [r for r in runs if matcher is None or matcher(r)]

    # -- leases --------------------------------------------------------------------------------

    def lease(self, run: RunRecord) -> Lease:
        return PgLease(self, run.instance_id)

    def wait_lease(self, run: RunRecord, timeout: float | None) -> bool:
        """Block until the lease is released (True) or `timeout` passes (False), without a
        connection of its own: the process's lease waits are looked at together, every
        LEASE_POLL_S, on the main connection (leasewait.py). A lease found free less than
        RESTART_GRACE_S after a restart, of a run that was there before it, is waited on a
        little longer (its wrapper is taking it again); while the hub reconnects, waits go on."""
        from runtools.env.postgres.leasewait import LeaseWaits

        with self._lock:
            self._read(lambda conn: None)  # the first failure is an error
            if self._lease_waits is None:
                self._lease_waits = LeaseWaits(self)
            waits = self._lease_waits
        return waits.wait(run.instance_id, timeout)

    @staticmethod
    def _retaking(conn: psycopg.Connection, instance_id: str) -> bool:
        """May the wrapper of this run be taking its lease again after a server restart?"""
        row = conn.execute("SELECT extract(epoch FROM now() - pg_postmaster_start_time()), "
                           "to_regclass('runs') IS NOT NULL").fetchone()
        if row is None or float(row[0]) >= RESTART_GRACE_S or not row[1]:
            return False
        row = conn.execute("SELECT inserted_at < pg_postmaster_start_time() AND stage <> 'ENDED' FROM runs "
                           "WHERE instance_id=%s", (instance_id,)).fetchone()
        return bool(row and row[0])

    # -- events --------------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        text = _event_text(event)

        def notify(conn: psycopg.Connection) -> None:
            if len(text.encode()) > MAX_PAYLOAD:
                with conn.transaction():
                    send(conn, self._events_channel, text)
            else:
                send(conn, self._events_channel, text)

        self._read(notify)

    def subscribe(self) -> Subscription:
        return PgSubscription(self)

    # -- control -------------------------------------------------------------------------------

    def serve_control(self, run: RunRecord, handler: ControlHandler) -> ControlEndpoint:
        return PgControlServer(self, run, handler)

    def _hub(self) -> _Hub:
        """The environment's LISTEN connection (made on first use; the schema must exist: big
        payloads are read from its table)."""
        with self._lock:
            if self.__hub is None:
                self._main()
                hub = _Hub(self)
                hub.listen(self._reply_channel, self._on_reply)
                self.__hub = hub
            return self.__hub

    def _hub_if_open(self) -> _Hub | None:
        return self.__hub

    def _on_reply(self, payload: str) -> None:
        hub = self.__hub
        text = receive(hub.conn, payload) if hub is not None else None
        msg = loads(text) if text else {}
        waiter = self._waiting.get(str(msg.get("id")))
        if waiter is not None:
            waiter[1] = msg.get("resp")
            waiter[0].release()

    def _ask(self, key: int, channel: str, request: dict[str, Any], timeout: float) -> tuple[bool, Any]:
        """Send `request` to whoever holds `key` and listens on `channel` (a run's wrapper, an
        orphan's keeper) and wait for its answer on our reply channel: (False, None) when nobody
        holds the key, (True, None) when the answer did not come within `timeout`, else
        (True, answer)."""
        psycopg = store.import_psycopg()
        hub = self._hub()
        rid = os.urandom(8).hex()
        answered = _thread.allocate_lock()
        answered.acquire()
        self._waiting[rid] = [answered, None]
        try:
            with hub.lock:
                try:
                    if not self._held([key], hub.conn):
                        return False, None
                    send(hub.conn, channel, dumps({"id": rid, "reply": self._reply_channel, "req": request}))
                except psycopg.Error as e:
                    raise store.error(e, self.display) from None
            deadline = time.monotonic() + timeout
            while not answered.acquire(timeout=float(wait_slice(max(0.0, deadline - time.monotonic())) or 0.0)):
                if time.monotonic() >= deadline:
                    return True, None
            return True, self._waiting[rid][1]
        finally:
            self._waiting.pop(rid, None)

    def control(self, instance_id: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        held, resp = self._ask(self._control_key(instance_id), self._control_channel(instance_id), request, timeout)
        if not held:
            raise NotFoundError(f"run {instance_id} is not running (no control endpoint)")
        if resp is None:
            raise NotFoundError(f"run {instance_id} did not answer (it may have just ended)")
        return resp if isinstance(resp, dict) else {"ok": False, "error": "unreadable answer"}

    def stop_orphan(self, run: RunRecord, interrupt: bool = False, by: str | None = None,
                    grace: float = 10.0) -> RunRecord | None:
        if run.host != this_host():  # its command runs on another host: ask its keeper there
            return self._ask_keeper(run, {"interrupt": interrupt, "by": by, "grace": grace},
                                    grace + KEEPER_ANSWER_S)
        from runtools.env.local.orphan import stop_orphan

        env: Any = self  # it uses only the Environment contract (transaction, active_runs, wait_lease)
        return stop_orphan(env, run, interrupt, by, grace)

    def _keeper_key(self, instance_id: str) -> int:
        return store.key64("runtools-keeper", self.schema, instance_id)

    def _keeper_channel(self, instance_id: str) -> str:
        return f"rt_{store.short_hash(self.schema)}_k_{store.short_hash(instance_id)}"

    def _ask_keeper(self, run: RunRecord, request: dict[str, Any], timeout: float) -> RunRecord | None:
        """Have the keeper of an orphaned command on another host (keeper.py: started by the run's
        guardian once its wrapper died) stop it as `taro stop` there would: the run as it is
        afterwards, or None when it has no keeper (its wrapper may live: same as local)."""
        from runtools.model.run import RunRecord as Record

        held, resp = self._ask(self._keeper_key(run.instance_id), self._keeper_channel(run.instance_id),
                               request, timeout)
        if not held:
            return None
        found = resp.get("run") if isinstance(resp, dict) else None
        return Record.from_dict(found) if isinstance(found, dict) else self.get_run(run.instance_id)

    def follow_output(self, instance_id: str) -> Iterator[tuple[str, bytes | dict]]:
        start = self.control(instance_id, {"op": "follow"})
        yield "offsets", start["offsets"]
        seq = int(start.get("seq") or 0)
        key = self._control_key(instance_id)
        conn = self._connect(schema=True)
        try:
            while True:
                found = conn.execute(
                    "SELECT seq, stream, data FROM output_chunks WHERE instance_id=%s AND seq > %s "
                    "ORDER BY seq LIMIT 1000", (instance_id, seq)).fetchall()
                for s, stream, data in found:
                    seq = s
                    yield stream, bytes(data)
                if found:
                    continue
                if not self._held([key], conn):  # the run ended: what it stored last is read above
                    found = conn.execute(
                        "SELECT seq, stream, data FROM output_chunks WHERE instance_id=%s AND seq > %s "
                        "ORDER BY seq", (instance_id, seq)).fetchall()
                    for _s, stream, data in found:
                        yield stream, bytes(data)
                    return
                time.sleep(FOLLOW_POLL_S)
        except Exception:
            return
        finally:
            conn.close()

    # -- output --------------------------------------------------------------------------------

    def _stored_chunks(self, run: RunRecord, stream: str) -> list[tuple[int, bytes]]:
        def read(conn: psycopg.Connection) -> list[tuple[int, bytes]]:
            return conn.execute("SELECT off, data FROM output_chunks WHERE instance_id=%s AND stream=%s "
                                "ORDER BY seq", (run.instance_id, stream)).fetchall()

        return self._read(read)

    def stored_output_bytes(self, run: RunRecord, stream: str, end: int | None = None,
                            gaps: list[tuple[int, int]] | None = None) -> bytes:
        """The copy of a run's `stream` kept in the database, up to byte offset `end` (for
        `taro tail` of a run whose files are on another host; at most output_bound() bytes).
        `gaps`, when given, gets (position in the bytes returned, bytes missing there) for each
        hole: the dropped start (position 0), and output that could not be stored."""
        out = bytearray()
        expected = 0
        for off, data in self._stored_chunks(run, stream):
            if end is not None and off >= end:
                break
            if gaps is not None and off > expected:
                gaps.append((len(out), off - expected))
            expected = off + len(data)  # (a file cut to its tail starts again lower: no hole)
            data = bytes(data)
            out += data if end is None else data[: end - off]
        return bytes(out)

    def stored_output(self, run: RunRecord, stream: str, fd: int) -> None:
        """Write the copy of a run's `stream` kept in the database to `fd` (for a run whose
        files are on another host). Only the last output_bound() bytes are kept: when earlier
        ones were dropped, or output could not be stored (the database away longer than its
        batch could wait), a line on stderr says so and where the whole output is."""
        gaps: list[tuple[int, int]] = []
        data = self.stored_output_bytes(run, stream, gaps=gaps)
        for line in gap_notes(run, stream, gaps, 0):
            sys.stderr.write(line)
            sys.stderr.flush()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def end_wait(self) -> float:
        return store.end_wait()

    def output_paths(self, run: RunRecord) -> tuple[str, str]:
        base = os.path.join(store.env_output_dir(self.display, self.schema), "output", run.job_id, run.run_id)
        return base + ".stdout", base + ".stderr"

    def close(self) -> None:
        with self._lock:
            hub, self.__hub = self.__hub, None
            waits, self._lease_waits = self._lease_waits, None
        if waits is not None:
            waits.close()
        if hub is not None:
            hub.close()
        with self._lock:
            self._closed = True
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:
                    pass
            self._conn = None
