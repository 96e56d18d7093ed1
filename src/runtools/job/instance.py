"""One run of a job, end to end (DESIGN §4): create, coordinate, execute, record, release."""

from __future__ import annotations

import os
import time

from runtools.job.phase import PhaseEnd, RunContext
from runtools.model.events import Event
from runtools.model.ids import new_run_id, validate_id
from runtools.model.run import RunRecord
from runtools.model.status import EXIT_WRAPPER_FAILED, NOT_EXECUTED_EXIT, Stage, Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from runtools.env.base import Environment
    from runtools.job.phase import AdmissionPhase, ExecutionPhase, Phase



#: recording a run's end: the first pause between attempts, doubled up to the last
END_RETRY_FIRST_S = 0.2
END_RETRY_MAX_S = 5.0
LATE_END = "the end was recorded late"


class RunResult:
    """What a finished (or attached-to) run ended with."""

    __slots__ = ("existing", "exit_code", "run", "value")

    def __init__(self, run: RunRecord, exit_code: int, existing: bool = False) -> None:
        self.run = run
        self.exit_code = exit_code
        self.existing = existing  # an admission phase handed back another run instead of starting one
        self.value = None  # what a function phase returned

    def __repr__(self) -> str:
        return f"RunResult({self.run!r}, exit_code={self.exit_code}, existing={self.existing})"


def exit_code_for(run: RunRecord) -> int:
    """The wrapper's exit code for an ended run (DESIGN §5). Runs store it as their `exit_code`;
    the rules below also answer for records that lack it (LOST, or written by older versions)."""
    if run.exit_code is not None and run.started_at is not None:
        return run.exit_code
    if run.status is Status.TIMEOUT and run.started_at is not None:
        return 124
    if run.status in NOT_EXECUTED_EXIT:
        return NOT_EXECUTED_EXIT[run.status]
    if run.status is Status.COMPLETED:
        return 0
    if run.exit_code is not None:
        return run.exit_code
    if run.status is Status.INTERRUPTED:
        return 130
    if run.status is Status.STOPPED:
        return 143
    return EXIT_WRAPPER_FAILED if run.status in (Status.ERROR, Status.LOST) else 1


class JobRun:
    """Runs phases for one new run of `job_id` in `env`.

    Usable from Python (`runtools.run(...)`) and by the CLI; `run()` blocks until the end.
    """

    def __init__(
        self,
        env: Environment,
        job_id: str,
        execution: ExecutionPhase,
        *,
        phases: Sequence[Phase] = (),
        admission: Sequence[AdmissionPhase] = (),
        run_id: str | None = None,
        tags: Sequence[str] = (),
        command: list[str] | None = None,
        run_key: str | None = None,
        store_output: bool = True,
        extra: dict[str, Any] | None = None,
        output_paths: tuple[str, str] | None = None,
        on_created: Callable[[RunRecord], None] | None = None,
    ) -> None:
        self.env = env
        self.execution = execution
        self.phases = list(phases)
        self.admission = list(admission)
        self.on_created = on_created
        now = time.time()
        self.record = RunRecord(
            job_id=validate_id(job_id, "job id"),
            run_id=validate_id(run_id, "run id") if run_id else new_run_id(),
            created_at=now,
            tags=[validate_id(t, "tag") for t in tags],
            host=os.environ.get("RUNTOOLS_HOST") or os.uname().nodename,
            user=_user(),
            pid=os.getpid(),
            cwd=_cwd(),
            command=command,
            run_key=run_key,
            extra=dict(extra or {}),
        )
        for p in self.phases:
            coord = getattr(p, "coord", None)
            if coord:
                self.record.coord.update(coord)
        self.store_output = store_output
        self._output_paths = output_paths
        self.ctx = RunContext(env, self.record)
        self._raised: BaseException | None = None
        end_wait = getattr(env, "end_wait", None)
        self._end_wait = end_wait() if end_wait is not None else 0.0  # now: a bad setting fails before the run
        self.signalled: int | None = None  # the signal that interrupted the run, if one did

    # -- control -------------------------------------------------------------------------------

    def stop(self, interrupt: bool = False, by: str | None = None, signum: int | None = None) -> None:
        """Ask the run to stop: STOPPED (or INTERRUPTED); a run not yet executing ends CANCELLED."""
        status = Status.INTERRUPTED if interrupt else Status.STOPPED
        self.ctx.record_action("interrupted" if interrupt else "stopped", by)
        self.ctx.request_stop(status, 128 + signum if signum else None)

    def _lease_lost(self, why: str) -> None:
        """The run's lease is gone for good (its connection was cut longer than the backend's
        grace): stop the command before another process may take over; the run ends ERROR."""
        with self.ctx._lock:
            if self.record.stage is Stage.ENDED:  # too late to matter: its end is being recorded
                return
            self.record.error = why
        self.ctx.record_action("stopped", by="lease", reason=why)
        self.ctx.request_stop(Status.ERROR, EXIT_WRAPPER_FAILED)

    def _fence_verdict(self, lease: Any, status: Status, code: int | None) -> tuple[Status, int | None]:
        """A command killed by its lease's fence (postgres: its connections were cut, and another
        host may take over) ends the run ERROR with why, whatever its exit status said."""
        why = getattr(lease, "fenced", None)
        if why is None or status is Status.ERROR:
            return status, code
        with self.ctx._lock:
            self.record.error = why
        self.ctx.record_action("stopped", by="lease", reason=why)
        return Status.ERROR, EXIT_WRAPPER_FAILED

    def _on_control(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op in ("stop", "interrupt"):
            self.stop(interrupt=op == "interrupt" or bool(req.get("interrupt")), by=req.get("by"))
            return {"ok": True, "instance_id": self.record.instance_id}
        if op == "get":
            return {"ok": True, "run": self.record.to_dict()}
        for p in self.phases:
            resp = p.control(self.ctx, req)
            if resp is not None:
                return resp
        return {"ok": False, "error": f"unsupported request {op!r} in state {self.record.state}"}

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> RunResult:
        env, rec, ctx = self.env, self.record, self.ctx
        lease = env.lease(rec)
        ctx.lease = lease
        if hasattr(lease, "on_lost"):  # a lease that can be lost while the run lives (postgres)
            lease.on_lost = self._lease_lost
        endpoint = hub = longer = None
        restore = _install_signal_handlers(self)
        try:
            cfg = _config()
            hub = _hub(self, cfg)  # event log, plugins, notifiers, retention: None unless runtools.toml turns one on
            if cfg.get("longer_than_usual", "enabled"):  # on by default; lazy (runtools.job.longer)
                from runtools.job.longer import from_config

                longer = from_config(self, cfg)
                ctx.on_executing = longer.start if longer is not None else None
            existing = self._create()
            if hub is not None and existing is None:
                hub.event(Event("created", rec.copy()))
                if rec.stage is Stage.ENDED:
                    hub.event(Event("ended", rec.copy()))
            if existing is not None:
                # an active run of the key: attach (0 until it ends); an ended one (strict key):
                # refused, DUPLICATE (105) whatever that run ended with
                code = NOT_EXECUTED_EXIT[Status.DUPLICATE] if not existing.active else 0
                return RunResult(existing, code, existing=True)
            if self.on_created:
                self.on_created(rec)
            if rec.stage is Stage.ENDED:  # an admission phase ended it (DISABLED, ...)
                return RunResult(rec, exit_code_for(rec))
            endpoint = env.serve_control(rec, self._on_control)
            ctx.endpoint = endpoint
            status, run_code = self._run_phases()
            try:
                endpoint.flush()
            except Exception:
                pass  # a copy of the output (postgres) is best effort; the end must be recorded
            status, run_code = self._fence_verdict(lease, status, run_code)
            self._finish(status, run_code)
            raised = self._raised or getattr(self.execution, "raised", None)
            if raised is not None:  # KeyboardInterrupt, SystemExit, ...: on to the caller, once recorded
                raise raised
            return RunResult(rec, exit_code_for(rec))
        finally:
            restore()
            if longer is not None:
                longer.close()
            if endpoint is not None:
                endpoint.close()
            lease.release()
            if hub is not None:
                hub.close()
            ctx.close()

    def _create(self) -> RunRecord | None:
        """Insert the run (CREATED) after the admission phases; return an existing run instead
        when one of them hands one back (run keys)."""
        env, rec = self.env, self.record
        if self.store_output:
            rec.stdout_path, rec.stderr_path = self._output_paths or env.output_paths(rec)
        with env.transaction() as tx:
            for a in self.admission:
                decision = a.admit(tx, rec)
                if decision is None:
                    continue
                if decision.existing is not None:
                    return decision.existing
                if decision.end is not None:
                    rec.stage, rec.status, rec.ended_at = Stage.ENDED, decision.end, time.time()
                    rec.error = decision.reason
                    rec.exit_code = exit_code_for(rec)  # what the wrapper exits with (101 ...)
                break
            tx.insert(rec)
            tx.publish_after_commit(Event("created", rec.copy()))
            if rec.stage is Stage.ENDED:
                tx.publish_after_commit(Event("ended", rec.copy()))
        return None

    def _run_phases(self) -> tuple[Status, int | None]:
        rec, ctx = self.record, self.ctx
        try:
            for p in self.phases:
                ctx._check_stop()
                p.run(ctx)
            ctx._check_stop()
            return self.execution.execute(ctx)
        except PhaseEnd as e:
            if e.status not in (Status.COMPLETED, Status.SKIPPED):
                rec.error = rec.error or str(e)
            return e.status, e.run_exit_code
        except Exception as e:  # a bug or a backend failure must still end the run honestly
            rec.error = f"{type(e).__name__}: {e}"
            return Status.ERROR, EXIT_WRAPPER_FAILED
        except BaseException as e:  # KeyboardInterrupt/SystemExit while coordinating: record, then re-raise
            self._raised = e
            rec.error = rec.error or f"{type(e).__name__}"
            if isinstance(e, KeyboardInterrupt):
                return Status.INTERRUPTED, ctx.stop_exit or 130
            return Status.ERROR, EXIT_WRAPPER_FAILED

    def _finish(self, status: Status, code: int | None) -> None:
        """Record the end. A busy or full disk, or a server that is away, must not leave the run
        "running" (then LOST) if we can help it: tried again with backoff for the environment's
        end_wait() (at least 3 attempts), then the error goes to the caller."""
        rec = self.record
        with self.ctx._lock:
            rec.stage = Stage.ENDED
            rec.status = status
            rec.exit_code = code
            rec.exit_code = exit_code_for(rec)  # stored = what the wrapper exits with, executed or not
            rec.ended_at = time.time()
        deadline = time.monotonic() + self._end_wait
        delay = END_RETRY_FIRST_S
        attempt = 0
        while True:
            try:
                self._record_end(late=attempt > 0)
                return
            except Exception:
                attempt += 1
                if attempt >= 3 and time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, END_RETRY_MAX_S)

    def _record_end(self, late: bool) -> None:
        """Write the end. If another process ended the run meanwhile — LOST, while the
        environment could not be reached from here — this real end replaces it, said in a
        warning, an action `end-recorded-late` and the event's detail (`late`, `was`)."""
        env, rec, ctx = self.env, self.record, self.ctx
        detail = None
        with ctx._lock:
            with env.transaction() as tx:
                stored = tx.get(rec.instance_id)
                ended = stored is not None and stored.stage is Stage.ENDED
                ours = ended and stored is not None and stored.status is rec.status and abs(
                    (stored.ended_at or 0) - (rec.ended_at or 0)) < 1e-3  # an attempt that committed
                if ended and not ours:
                    assert stored is not None
                    was = stored.status.value if stored.status else None
                    note = (f"{LATE_END}: another process had ended the run {was} while its wrapper could not "
                            f"reach the environment; this is its real end")
                    # said once, whatever an attempt that failed to commit had added
                    rec.warnings = [w for w in rec.warnings if not w.startswith(LATE_END)] + [note]
                    rec.actions = [a for a in rec.actions if a.get("action") != "end-recorded-late"]
                    rec.actions.append({"action": "end-recorded-late", "by": "wrapper", "at": time.time(),
                                        "reason": note, "was": was, "was_at": stored.ended_at})
                if late or (ended and not ours):
                    said = [a for a in rec.actions if a.get("action") == "end-recorded-late"]
                    detail = {"late": True, "was": said[-1]["was"]} if said else {"late": True}
                tx.update(rec)
            snapshot = rec.copy()
        env.publish(Event("ended", snapshot, detail=detail))


def _config() -> Any:
    from runtools.config import load

    return load()


def _hub(job: JobRun, cfg: Any) -> Any:
    """The run's hook point (runtools.plugins.hub), only when the config file turns a hook on."""
    if not cfg.wants_hooks():
        return None
    from runtools.plugins.hub import Hub

    hub = Hub(job.env, cfg, job)
    hub.attach(job.record.instance_id)
    return hub


def _user() -> str | None:
    name = os.environ.get("LOGNAME") or os.environ.get("USER")
    if name:
        return name
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # no passwd entry in some containers
        return str(os.getuid())


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None


_SIGNAL_NAMES = {2: "SIGINT", 15: "SIGTERM", 1: "SIGHUP"}


def _install_signal_handlers(job: JobRun) -> Callable[[], None]:
    """SIGINT/SIGTERM/SIGHUP to the wrapper interrupt the run (the child's group gets TERM);
    the wrapper then exits 128+N. Only possible in the main thread (embedding may run elsewhere)."""
    import _signal

    def handler(signum: int, _frame: object) -> None:
        if job.signalled is None:
            job.signalled = signum
        job.stop(interrupt=True, by=f"signal {_SIGNAL_NAMES.get(signum, signum)}", signum=signum)

    old = {}
    try:
        for s in _SIGNAL_NAMES:
            old[s] = _signal.signal(s, handler)
    except ValueError:  # not the main thread
        pass

    def restore() -> None:
        for s, h in old.items():
            try:
                _signal.signal(s, h)
            except (ValueError, TypeError):
                pass

    return restore
