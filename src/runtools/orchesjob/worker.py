"""Starting a run: the starter forks a detached worker that decides, runs and records.

    starter (orchesjob start)            worker (double-forked, new session, stdio on /dev/null)
      fork ------------------------------> lease, admission + insert in one transaction
      <- {"event": "created"|"existing"}   (run key claim: the existing run is handed back)
      <- {"event": "executing"}            target launched in its own process group
      <- {"event": "ended"}                record finalised; the worker exits
      EOF without "ended": the worker died -> wait on the lease (the target may still run)

The worker is an ordinary runtools run (JobRun), so the lease it holds is inherited by the
target: killing the worker leaves the run active until the command itself is gone, and a
worker killed before launching leaves no run stuck (its lease dies with it: LOST).
No polling anywhere: the starter reads a pipe; waiting on an existing run uses events + lease.
"""

from __future__ import annotations

import os
import time

from runtools.errors import NotFoundError, RuntoolsError, StateError
from runtools.job.phase import AdmissionPhase, Phase
from runtools.model.jsonenc import dumps, loads
from runtools.model.run import RunRecord
from runtools.model.status import Status
from runtools.orchesjob import home_dir, logs_dir, open_env
from runtools.orchesjob.view import JOB, status_of

TYPE_CHECKING = False  # keep `typing` off the hot path
if TYPE_CHECKING:
    from typing import Any

ABORT_KEYS = ("aborted_at", "abort_reason")


# -- the starter -------------------------------------------------------------------------------


class Started:
    """What a start or rerun ended up with."""

    def __init__(self, run: RunRecord, existing: bool) -> None:
        self.run = run
        self.existing = existing

    @property
    def override_used(self) -> bool:
        return not self.existing and bool(self.run.extra.get("strict_override_used"))


def start(
    command: list[str],
    run_key: str,
    *,
    strict: bool = False,
    sync: bool = False,
    start_timeout: float = 10.0,
    rerun_of: RunRecord | None = None,
    reason: str | None = None,
) -> Started:
    """Start `command` under `run_key` (or hand back the run that holds the key)."""
    home = home_dir()
    gate = None
    if rerun_of is None:
        from runtools.orchesjob import lock_timeout, postgres_url

        lock_timeout()  # a bad $ORCHESJOB_LOCK_TIMEOUT is an error here too, as for every command
        if not os.path.isdir(logs_dir(home)):
            open_env(home).close()  # the first start in this home: create it (0700) before its gates
        shared = None
        if postgres_url(home) is not None:  # runs live in PostgreSQL: read them through its API
            shared = open_env(home)

            def look() -> RunRecord | None:
                return _holder(shared, run_key, False)
        else:
            from runtools.orchesjob.peek import live_holder

            def look() -> RunRecord | None:
                return live_holder(home, run_key)  # the common retry: one read, no environment
        try:
            held = look()
            while held is None:
                gate, waited = _enter_gate(home, run_key)
                if not waited:
                    break  # the gate is ours: we start the worker (unless strict finds the key used)
                held = look()  # the start ahead of us got its answer
            if held is None and strict:
                env = shared or open_env(home)
                try:
                    held = _holder(env, run_key, strict)
                finally:
                    if env is not shared:
                        env.close()
        except BaseException:
            _leave_gate(gate)
            raise
        finally:
            if shared is not None:
                shared.close()  # before the fork: the worker makes connections of its own
        if held is not None:  # no need for a worker: the key is taken, as of this read
            _leave_gate(gate)
            return Started(_wait_existing(home, held, sync, start_timeout), True)
    job_id = uuid4()
    _prepare_imports()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # first child: leave the session, fork the worker, exit
        try:
            os.close(r)
            if gate is not None:
                os.close(gate)  # the gate is the starter's to leave, not the worker's
            os.setsid()
            if os.fork() == 0:
                code = _worker(w, home, job_id, command, run_key, strict, rerun_of, reason)
                os._exit(code)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    opened = [gate]

    def leave() -> None:
        _leave_gate(opened[0])
        opened[0] = None

    try:
        with os.fdopen(r, "rb") as pipe:
            return _follow(pipe, home, sync, start_timeout, leave)
    finally:
        leave()


def uuid4() -> str:
    """str(uuid.uuid4()), without importing uuid (and the enum it imports)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


GATES = 256  # starts of one key queue at one of these flocks, so a burst forks one worker, not 32


def _enter_gate(home: str, run_key: str) -> tuple[int | None, bool]:
    """Take the gate of (a key hashing like) `run_key`: returns (fd, False), its holder then
    starts the worker and leaves the gate once the worker answered (the target runs, or the
    run ended or was refused). If another start holds it, wait until it leaves (the kernel
    wakes every waiter at once, no polling) and return (None, True): look at the key again.
    Only an optimisation: the run-key claim in the worker's transaction decides."""
    import fcntl
    from zlib import crc32

    d = os.path.join(home, "gates")
    try:
        if not os.path.isdir(d):
            os.makedirs(d, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(d, str(crc32(run_key.encode()) % GATES)),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None, False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, False
    except BlockingIOError:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # shared: all waiters wake together
        finally:
            os.close(fd)
        return None, True


def _leave_gate(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _holder(env: Any, run_key: str, strict: bool) -> RunRecord | None:
    """The run that would be handed back right now, read without a worker (the common case of
    a retried start) and without the write lock. Only a positive answer is used; the worker
    decides everything else."""
    from runtools.orchesjob.reads import reader

    rd = reader(env)
    active = rd.active_of_key(run_key)  # one indexed read
    lease_alive = getattr(env, "lease_alive", None)  # local: one flock test per run
    if active and (lease_alive is None or not all(lease_alive(r) for r in active)):  # ends the dead LOST
        active = [r for r in rd.active_runs() if r.run_key == run_key]
    if active:
        return active[0]
    if strict:
        from runtools.env.base import RunQuery
        from runtools.job.runkey import valid_override

        latest = rd.find(RunQuery(run_key=run_key, limit=1))
        if latest and not latest[0].active and valid_override(rd, run_key) is None:
            return latest[0]
    return None


def _prepare_imports() -> None:
    """Import what the worker needs before forking, so it starts working at once."""
    import runtools.job.instance
    import runtools.job.program
    import runtools.job.spec  # noqa: F401


def _follow(pipe: Any, home: str, sync: bool, start_timeout: float, decided: Any = None) -> Started:
    run: RunRecord | None = None
    existing = False
    deadline: float | None = None
    fd = pipe.fileno()
    buf = b""
    while True:
        if run is not None and not sync and deadline is None:
            deadline = time.monotonic() + max(0.0, start_timeout)
        if deadline is not None and not _readable(fd, deadline):
            break  # still STARTING after --start-timeout: say so
        chunk = os.read(fd, 65536)
        if not chunk:
            break  # the worker closed the pipe: ended, or died
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = loads(line)
            ev = msg["event"]
            if decided is not None and ev != "created":  # the target runs (or never will): a
                decided()  # start waiting at the gate now finds the key RUNNING, or free
                decided = None
            if ev == "error":
                raise _error(msg)
            run = RunRecord.from_dict(msg["run"])
            if ev == "existing":
                existing = True
                return Started(_wait_existing(home, run, sync, start_timeout), True)
            if ev == "ended" or (ev == "executing" and not sync):
                return Started(run, existing)
    if decided is not None:
        decided()
    if run is None:
        raise RuntoolsError("the worker process died before recording the job: see system logs")
    env = open_env(home)
    try:
        if sync:
            from runtools.job.waiting import wait_for_end

            return Started(wait_for_end(env, run), existing)
        return Started(env.get_run(run.instance_id) or run, existing)
    finally:
        env.close()


def _readable(fd: int, deadline: float) -> bool:
    """Wait until `fd` is readable (True) or `deadline` (monotonic) passes (False), in slices
    that no select() timeout overflows."""
    from select import select

    from runtools.model.durations import wait_slice

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if select([fd], [], [], wait_slice(remaining))[0]:
            return True


def _error(msg: dict[str, Any]) -> RuntoolsError:
    from runtools import errors

    by_code = {2: errors.UsageError, 3: NotFoundError, 4: StateError, 5: errors.BackendError}
    return by_code.get(msg["code"], RuntoolsError)(msg["message"])


def _wait_existing(home: str, run: RunRecord, sync: bool, start_timeout: float) -> RunRecord:
    """Another run holds the key: sync waits for its end; async for it to be RUNNING (or ended)."""
    status = status_of(run)
    if status not in ("STARTING", "RUNNING") or (status == "RUNNING" and not sync):
        return run
    env = open_env(home)
    try:
        return wait_until(env, run, None if sync else start_timeout, running=not sync)
    finally:
        env.close()


def wait_until(env: Any, run: RunRecord, timeout: float | None, running: bool = False) -> RunRecord:
    """Block until `run` ended (or, with `running`, left STARTING); on events and the lease, no polling."""
    from runtools.job.waiting import watch_lease

    deadline = None if timeout is None else time.monotonic() + timeout
    iid = run.instance_id
    with env.subscribe() as sub:
        gone = watch_lease(env, run, sub)
        while True:
            current = env.get_run(iid) or run
            status = status_of(current)
            if status not in ("STARTING", "RUNNING") or (running and status == "RUNNING"):
                return current
            if gone.is_set() and current.active:
                env.active_runs()  # the lease is free: this ends the run LOST
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return current
            from runtools.model.durations import wait_slice

            sub.get(wait_slice(remaining))  # sliced: the loop re-checks the deadline


# -- the worker --------------------------------------------------------------------------------


def _worker(
    w: int,
    home: str,
    job_id: str,
    command: list[str],
    run_key: str,
    strict: bool,
    rerun_of: RunRecord | None,
    reason: str | None,
) -> int:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    channel = _Channel(w)
    try:
        from runtools.job.instance import JobRun
        from runtools.job.program import ProgramPhase, process_start_time
        from runtools.job.spec import JobSpec, admission_phases
        from runtools.model.ids import job_id_from_command

        env = _WorkerEnv(open_env(home), channel)
        logs = logs_dir(home)
        extra: dict[str, Any] = {"strict": strict, "worker_start": process_start_time(os.getpid())}
        if reason is not None:
            extra["rerun_reason"] = reason
        if rerun_of is None:
            admission = admission_phases(JobSpec(command=command, run_key=run_key, strict=strict))
        else:
            admission = [*admission_phases(JobSpec(command=command)), RerunClaim(run_key, rerun_of)]
        program = ProgramPhase(command, terminal=False, kill_after=5.0)
        job = JobRun(
            env,  # type: ignore[arg-type]  # a proxy of the environment (see _WorkerEnv)
            JOB,
            program,
            phases=[_LogFiles(), _AbortControl(program)],
            admission=admission,
            run_id=job_id,
            tags=[job_id_from_command(command)],
            command=command,
            run_key=run_key,
            extra=extra,
            output_paths=(os.path.join(logs, f"{job_id}.stdout"), os.path.join(logs, f"{job_id}.stderr")),
            on_created=lambda rec: channel.send("created", rec),
        )
        result = job.run()
        channel.send("existing" if result.existing else "ended", result.run)
        return 0
    except RuntoolsError as e:
        channel.error(e.exit_code, str(e))
        return 1
    except Exception as e:
        channel.error(1, f"{type(e).__name__}: {e}")
        return 1
    finally:
        channel.close()


class _Channel:
    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def _write(self, doc: dict[str, Any]) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, dumps(doc).encode() + b"\n")
        except OSError:  # the starter is gone (async start returned, or it was killed): fine
            self.close()

    def send(self, event: str, run: RunRecord) -> None:
        self._write({"event": event, "run": run.to_dict()})

    def error(self, code: int, message: str) -> None:
        self._write({"event": "error", "code": code, "message": message})

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


class _LogFiles(Phase):
    """Create the job's log files before the target starts, so their paths exist once it runs."""

    name = "log-files"

    def run(self, ctx: Any) -> None:
        for path in (ctx.run.stdout_path, ctx.run.stderr_path):
            if path:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600))

    def control(self, ctx: Any, request: dict[str, Any]) -> dict[str, Any] | None:
        return None


#: the control request of `orchesjob abort` from another host: {"op": ABORT_OP, "grace": seconds}
ABORT_OP = "orchesjob-abort"


class _AbortControl(Phase):
    """Answers `orchesjob abort` from another host (a PostgreSQL home), where the job's pids mean
    nothing: TERM the target's group now, KILL it after the abort's grace (the abort mark is
    already stored; the end merges it, see _MergingTx)."""

    name = "abort-control"

    def __init__(self, program: Any) -> None:
        self.program = program

    def run(self, ctx: Any) -> None:
        pass

    def control(self, ctx: Any, request: dict[str, Any]) -> dict[str, Any] | None:
        if request.get("op") != ABORT_OP:
            return None
        grace = request.get("grace")
        if isinstance(grace, (int, float)) and 0 <= grace < 1e9:
            self.program.kill_after = float(grace)
        ctx.request_stop(Status.STOPPED)
        return {"ok": True, "instance_id": ctx.run.instance_id}


class RerunClaim(AdmissionPhase):
    """`rerun`: a new run of the key whatever strict says, refused while any run of it is active."""

    name = "rerun"

    def __init__(self, key: str, source: RunRecord) -> None:
        self.key = key
        self.source = source

    def admit(self, tx: Any, run: RunRecord) -> Any:
        from runtools.job.runkey import active_of_key, latest_of_key

        active = active_of_key(tx, self.key)
        if active is not None:
            raise StateError(f"Cannot rerun active job: status={status_of(active)}")
        latest = latest_of_key(tx, self.key)
        run.attempt_no = (latest.attempt_no or 0) + 1 if latest is not None else 1
        run.rerun_of = self.source.instance_id
        return None


class _WorkerEnv:
    """The environment as the worker sees it: a write of its run keeps what `abort` marked
    (abort writes the mark first, then signals), and "executing" is told to the starter."""

    def __init__(self, env: Any, channel: _Channel) -> None:
        self._env = env
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def transaction(self) -> Any:
        return _MergingTransaction(self._env.transaction())

    def publish(self, event: Any) -> None:
        self._env.publish(event)
        if event.event == "executing":
            self._channel.send("executing", event.run)


class _MergingTransaction:
    def __init__(self, cm: Any) -> None:
        self._cm = cm

    def __enter__(self) -> Any:
        return _MergingTx(self._cm.__enter__())

    def __exit__(self, *exc: Any) -> Any:
        return self._cm.__exit__(*exc)


class _MergingTx:
    def __init__(self, tx: Any) -> None:
        self._tx = tx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def update(self, run: RunRecord) -> None:
        if run.extra.get("aborted_at") is None:
            stored = self._tx.get(run.instance_id)
            if stored is not None and stored.extra.get("aborted_at") is not None:
                for k in ABORT_KEYS:
                    run.extra[k] = stored.extra.get(k)
                run.actions.extend(a for a in stored.actions if a.get("action") == "abort" and a not in run.actions)
        if run.extra.get("aborted_at") is not None and not run.active:
            run.status = Status.STOPPED
        self._tx.update(run)
