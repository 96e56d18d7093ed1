"""The program phase: run a command as a child in its own process group.

One loop (selectors) moves output from the child's pipes to the terminal, storage and
followers, watches for the child's exit (pidfd), stop requests (wake pipe) and deadlines
(timeout, kill-after, time warning). No threads, no sleeps.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from runtools.job.phase import ExecutionPhase, RunContext
from runtools.model.durations import human_duration
from runtools.model.status import State, Status
from runtools.output.capture import StreamCapture, compile_warnings, term_fd_for
from runtools.output.progress import parse_progress

if TYPE_CHECKING:
    import re

CHUNK = 65536
PROGRESS_FLUSH_S = 0.25
EXIT_TIMEOUT = 124
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


def process_start_time(pid: int) -> float | None:
    """Start time of `pid` in clock ticks since boot (Linux), to tell a pid from its reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return float(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class ProgramPhase(ExecutionPhase):
    name = "program"

    def __init__(
        self,
        argv: list[str],
        *,
        bypass_output: bool = False,
        timeout: float | None = None,
        kill_after: float = 10.0,
        time_warn: float | None = None,
        output_warn: list[str] | None = None,
        terminal: bool = True,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        if not argv:
            from runtools.errors import UsageError

            raise UsageError("no command given: put it after the options, e.g. run job -- echo hi")
        self.argv = list(argv)
        self.bypass = bypass_output
        self.timeout = timeout
        self.kill_after = kill_after
        self.time_warn = time_warn
        self.warn_res: list[re.Pattern[bytes]] = compile_warnings(output_warn or [])
        self.terminal = terminal
        self.env = env
        self.cwd = cwd

    def execute(self, ctx: RunContext) -> tuple[Status, int | None]:
        run = ctx.run
        captures: dict[int, StreamCapture] = {}
        pass_fds = ctx.lease.inheritable_fds() if getattr(ctx, "lease", None) else ()
        out = subprocess.DEVNULL if not self.terminal and not self.bypass else None
        try:
            proc = subprocess.Popen(
                self.argv,
                stdout=out if self.bypass else subprocess.PIPE,
                stderr=out if self.bypass else subprocess.PIPE,
                process_group=0,
                pass_fds=pass_fds,
                env=self.env,
                cwd=self.cwd,
                bufsize=0,
            )
        except FileNotFoundError:
            run.error = f"command not found: {self.argv[0]}"
            return Status.ERROR, EXIT_NOT_FOUND
        except PermissionError:
            run.error = f"command not executable: {self.argv[0]} (check its mode with ls -l)"
            return Status.ERROR, EXIT_NOT_EXECUTABLE
        except OSError as e:
            run.error = f"cannot run {self.argv[0]}: {e.strerror}"
            return Status.ERROR, EXIT_NOT_EXECUTABLE if e.errno == errno.ENOEXEC else 125

        started = time.time()
        run.started_at = started
        run.child_pid = proc.pid
        run.child_start = process_start_time(proc.pid)
        ctx.set_state(State.EXECUTING, None, "executing")
        if ctx.stop_status is not None:  # asked to stop while we were launching
            self._signal(proc, signal.SIGTERM)

        progress_dirty = [False]

        def on_line(stream: str, line: bytes) -> None:
            p = parse_progress(line)
            if p:
                run.progress = {**(run.progress or {}), **p, "updated_at": time.time()}
                progress_dirty[0] = True
            for rx in self.warn_res:
                if rx.search(line):
                    text = line[:200].decode("utf-8", "replace")
                    ctx.add_warning(f"output matched /{rx.pattern.decode()}/: {text}")

        endpoint = ctx.endpoint
        sel = selectors.DefaultSelector()
        if not self.bypass:
            for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
                path = run.stdout_path if name == "stdout" else run.stderr_path
                cap = StreamCapture(
                    name,
                    path,
                    term_fd_for(name) if self.terminal else None,
                    on_line,
                    endpoint.output if endpoint is not None else None,
                    all_lines=bool(self.warn_res),
                )
                captures[pipe.fileno()] = cap
                os.set_blocking(pipe.fileno(), False)
                sel.register(pipe.fileno(), selectors.EVENT_READ, "pipe")
        pidfd = None
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(proc.pid)
            sel.register(pidfd, selectors.EVENT_READ, "exit")
        sel.register(ctx.wake_fd, selectors.EVENT_READ, "wake")

        mono0 = time.monotonic()
        deadline = mono0 + self.timeout if self.timeout is not None else None
        warn_at = mono0 + self.time_warn if self.time_warn is not None else None
        kill_at: float | None = None
        timed_out = False
        terminating = ctx.stop_status is not None
        last_flush = mono0
        exited = False
        try:
            while not exited:
                now = time.monotonic()
                timers = [t for t in (deadline, warn_at, kill_at) if t is not None]
                if pidfd is None:
                    timers.append(now + 0.05)  # no pidfd on this kernel: check the child now and then
                if progress_dirty[0]:
                    timers.append(last_flush + PROGRESS_FLUSH_S)
                wait = max(0.0, min(timers) - now) if timers else None
                for key, _ in sel.select(wait):
                    if key.data == "pipe":
                        self._read(key.fd, captures, sel)
                    elif key.data == "exit":
                        exited = True
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            os.read(ctx.wake_fd, 64)
                        if not terminating:
                            terminating = True
                            self._signal(proc, signal.SIGTERM)
                            kill_at = time.monotonic() + self.kill_after
                now = time.monotonic()
                if pidfd is None and proc.poll() is not None:
                    exited = True
                if deadline is not None and now >= deadline and not terminating:
                    timed_out = terminating = True
                    deadline = None
                    self._signal(proc, signal.SIGTERM)
                    kill_at = now + self.kill_after
                if kill_at is not None and now >= kill_at:
                    kill_at = None
                    self._signal(proc, signal.SIGKILL)
                if warn_at is not None and now >= warn_at:
                    warn_at = None
                    ctx.add_warning(f"execution time exceeded {human_duration(self.time_warn)}")
                if progress_dirty[0] and now - last_flush >= PROGRESS_FLUSH_S:
                    progress_dirty[0] = False
                    last_flush = now
                    ctx.save("progress")
            returncode = proc.wait()
            # The child is gone; take what is left in the pipes without waiting for
            # grandchildren that may still hold them open.
            for fd in list(captures):
                self._drain(fd, captures)
        finally:
            for cap in captures.values():
                cap.close()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            sel.close()
            if pidfd is not None:
                os.close(pidfd)
        if progress_dirty[0]:
            run.progress = dict(run.progress or {})

        exit_code = 128 - returncode if returncode < 0 else returncode
        if timed_out:
            run.error = f"timed out after {human_duration(self.timeout)}"
            return Status.TIMEOUT, EXIT_TIMEOUT
        if ctx.stop_status is not None:
            return ctx.stop_status, ctx.stop_exit if ctx.stop_exit is not None else exit_code
        return (Status.COMPLETED if exit_code == 0 else Status.FAILED), exit_code

    @staticmethod
    def _read(fd: int, captures: dict[int, StreamCapture], sel: selectors.BaseSelector) -> None:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            captures[fd].feed(data)
        else:
            sel.unregister(fd)

    @staticmethod
    def _drain(fd: int, captures: dict[int, StreamCapture]) -> None:
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                return
            if not data:
                return
            captures[fd].feed(data)

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        """Signal the child's whole process group (it leads it: process_group=0)."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(OSError):
                proc.send_signal(sig)
