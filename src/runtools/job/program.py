"""The program phase: run a command as a child in its own process group.

One loop (epoll) moves output from the child's pipes to the terminal, storage and followers,
and watches the child's exit (pidfd), stop requests (wake pipe) and deadlines (timeout,
kill-after, time warning, progress flush). No threads, no sleeps. The child is started with
`posix_spawn` (vfork+exec): `subprocess` alone would cost more to import than the spawn.

What the command sees is what it would see bare:
- where our stdout (stderr) is a terminal, its stdout (stderr) is a pseudo-terminal with the
  same modes and window size (SIGWINCH is passed on), so colours, columns and line buffering
  behave as at the terminal; output processing (\n -> \r\n) is left to the real terminal, so
  the bytes stored are the bytes the command wrote;
- where our stdout and stderr are the same file, pipe, socket or terminal, it gets ONE channel
  for both, so their order is kept; that channel is stored as stdout;
- when the reader of our stdout (stderr) goes away, we close our end of that channel, so the
  command's next write there fails with SIGPIPE/EPIPE as it would bare (`yes | head` ends).
"""

from __future__ import annotations

import os
import select
import time
from _signal import SIGHUP, SIGINT, SIGKILL, SIGPIPE, SIGTERM, SIGWINCH, SIGXFSZ

from runtools.job.phase import ExecutionPhase, RunContext
from runtools.model.status import EXIT_WRAPPER_FAILED, State, Status
from runtools.output.capture import StreamCapture, output_floor, output_limit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# One output channel of the command: (stored as, the command's fds, our fd it is forwarded to, pty?)
Channel = tuple[str, tuple[int, ...], "int | None", bool]

CHUNK = 65536
PROGRESS_FLUSH_S = 0.25
EXIT_TIMEOUT = 124
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
# Python ignores SIGPIPE/SIGXFSZ and we handle INT/TERM/HUP: the command gets the defaults.
_DEFAULT_SIGNALS = (SIGPIPE, SIGXFSZ, SIGINT, SIGTERM, SIGHUP)


def process_start_time(pid: int) -> float | None:
    """Start time of `pid` in clock ticks since boot (Linux), to tell a pid from its reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return float(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def spawn(argv: list[str], fds: dict[int, int], env: dict[str, str] | None = None) -> int:
    """Start argv (PATH lookup) as the leader of a new process group; `fds` maps child fd -> our fd."""
    actions = [(os.POSIX_SPAWN_DUP2, ours, theirs) for theirs, ours in fds.items()]
    return os.posix_spawnp(
        argv[0], argv, os.environ if env is None else env,
        file_actions=actions, setpgroup=0, setsigdef=_DEFAULT_SIGNALS, setsigmask=(),
    )


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
        output_limit: int | None = None,
    ) -> None:
        if not argv:
            from runtools.errors import UsageError

            raise UsageError("no command given: put it after the options, e.g. run job -- echo hi")
        self.argv = list(argv)
        self.bypass = bypass_output
        self.timeout = timeout
        self.kill_after = kill_after
        self.time_warn = time_warn
        self.warn_res = []
        if output_warn:
            from runtools.output.capture import compile_warnings

            self.warn_res = compile_warnings(output_warn)
        self.terminal = terminal
        self.env = env
        # stored bytes kept per stream (0: no limit; None: $RUNTOOLS_OUTPUT_LIMIT or 1 GiB)
        self.output_limit = output_limit_default() if output_limit is None else output_limit
        self.output_floor = output_floor()

    # -- launching -----------------------------------------------------------------------------

    def _channels(self) -> list[Channel]:
        """How the command's stdout and stderr are captured (see the module's docstring)."""
        if not self.terminal:
            return [("stdout", (1,), None, False), ("stderr", (2,), None, False)]
        out, err = _fstat(1), _fstat(2)
        out_tty = out is not None and os.isatty(1)
        if (
            out is not None and err is not None
            and (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)
            and (out_tty or out.st_mode & 0o170000 != 0o020000)  # not /dev/null & co: order is moot
        ):
            return [("stdout", (1, 2), 1, out_tty)]
        return [
            ("stdout", (1,), None if out is None else 1, out_tty),
            ("stderr", (2,), None if err is None else 2, err is not None and os.isatty(2)),
        ]

    def _launch(self, ctx: RunContext) -> tuple[int, dict[int, Channel]]:
        """Spawn the child; returns its pid and our read ends of its output channels."""
        fds: dict[int, int] = {}
        ours: dict[int, Channel] = {}
        close_after: list[int] = []
        try:
            if not self.bypass:
                for ch in self._channels():
                    r = w = -1
                    if ch[3]:
                        try:
                            r, w = os.openpty()
                        except OSError:  # no pseudo-terminals here (container limits): a pipe will do
                            ch = (*ch[:3], False)
                        else:
                            _setup_pty(w, ch[2])
                    if r < 0:
                        r, w = os.pipe()
                    ours[r] = ch
                    close_after.append(w)
                    for child_fd in ch[1]:
                        fds[child_fd] = w
            elif not self.terminal:
                null = os.open(os.devnull, os.O_WRONLY)
                fds = {1: null, 2: null}
                close_after.append(null)
        except BaseException:
            for fd in (*ours, *close_after):
                os.close(fd)
            raise
        lease_fds = ctx.lease.inheritable_fds() if ctx.lease is not None else ()
        for fd in lease_fds:  # the command keeps the run's lease alive as long as it lives
            os.set_inheritable(fd, True)
        try:
            pid = spawn(self.argv, fds, self.env)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in close_after:
                os.close(fd)
            for fd in lease_fds:
                os.set_inheritable(fd, False)
        return pid, ours

    def execute(self, ctx: RunContext) -> tuple[Status, int | None]:
        run = ctx.run
        try:
            pid, pipes = self._launch(ctx)
        except FileNotFoundError:
            run.error = f"command not found: {self.argv[0]}"
            return Status.ERROR, EXIT_NOT_FOUND
        except PermissionError:
            run.error = f"command not executable: {self.argv[0]} (check its mode with ls -l)"
            return Status.ERROR, EXIT_NOT_EXECUTABLE
        except OSError as e:
            run.error = f"cannot run {self.argv[0]}: {e.strerror}"
            return Status.ERROR, EXIT_NOT_EXECUTABLE if e.errno == 8 else EXIT_WRAPPER_FAILED  # 8: ENOEXEC

        executing = getattr(ctx.lease, "executing", None)
        if executing is not None:  # postgres: the lease's fence may kill it; a guardian watches over it
            executing(pid)
        run.started_at = time.time()
        run.child_pid = pid
        run.child_start = process_start_time(pid)
        try:
            ctx.set_state(State.EXECUTING, None, "executing")
        except BaseException:
            _killpg(pid, SIGKILL)
            os.waitpid(pid, 0)
            raise
        return self._supervise(ctx, pid, pipes)

    # -- supervising ---------------------------------------------------------------------------

    def _supervise(self, ctx: RunContext, pid: int, pipes: dict[int, Channel]) -> tuple[Status, int | None]:
        from runtools.model.durations import wait_slice

        run = ctx.run
        progress_dirty = False

        def on_line(stream: str, line: bytes) -> None:
            nonlocal progress_dirty
            from runtools.output.progress import parse_progress

            p = parse_progress(line)
            if p:
                run.progress = {**(run.progress or {}), **p, "updated_at": time.time()}
                progress_dirty = True
            for rx in self.warn_res:
                if rx.search(line):
                    text = line[:200].decode("utf-8", "replace")
                    _best_effort(ctx.add_warning, f"output matched /{rx.pattern.decode()}/: {text}")

        endpoint = ctx.endpoint
        captures: dict[int, StreamCapture] = {}
        poller = select.epoll()
        for fd, (name, _child_fds, term_fd, _pty) in pipes.items():
            path = run.stdout_path if name == "stdout" else run.stderr_path
            captures[fd] = StreamCapture(
                name, path, term_fd, on_line,
                endpoint.output if endpoint is not None else None, all_lines=bool(self.warn_res),
                limit=self.output_limit, floor=self.output_floor,
                on_rebase=endpoint.rebase if endpoint is not None else None,
            )
            os.set_blocking(fd, False)
            poller.register(fd, select.EPOLLIN)
        if len(pipes) == 1 and run.stderr_path:  # one channel for both: stderr's file stays empty
            try:
                os.close(os.open(run.stderr_path, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError:
                pass

        def close_channel(fd: int) -> None:
            """Its reader went away: close our end, so the command's next write there fails
            (SIGPIPE/EPIPE) as it would without the wrapper."""
            cap = captures.pop(fd)
            poller.unregister(fd)
            cap.close()
            os.close(fd)
            _best_effort(ctx.add_warning, f"the reader of {cap.name} went away: the command was given a broken "
                         f"pipe there, as it would be without the wrapper")

        ptys = [(fd, ch[2]) for fd, ch in pipes.items() if ch[3] and ch[2] is not None]
        restore_winch = _forward_winch(pid, ptys) if ptys else None
        pidfd = None
        try:
            pidfd = os.pidfd_open(pid)
            poller.register(pidfd, select.EPOLLIN)
        except (AttributeError, OSError):  # old kernel: check the child at short intervals
            pidfd = None
        poller.register(ctx.wake_fd, select.EPOLLIN)

        t0 = time.monotonic()
        deadline = t0 + self.timeout if self.timeout is not None else None
        warn_at = t0 + self.time_warn if self.time_warn is not None else None
        kill_at: float | None = None
        timed_out = False
        terminating = False
        last_flush = t0
        status_word: int | None = None
        if ctx.stop_status is not None:  # asked to stop while we were launching
            terminating = True
            _killpg(pid, SIGTERM)
            kill_at = t0 + self.kill_after
        try:
            while status_word is None:
                now = time.monotonic()
                timers = [t for t in (deadline, warn_at, kill_at) if t is not None]
                if pidfd is None:
                    timers.append(now + 0.05)
                if progress_dirty:
                    timers.append(last_flush + PROGRESS_FLUSH_S)
                for fd, _ in poller.poll(wait_slice(min(timers) - now if timers else None)):
                    if fd in captures:
                        moved = self._read(fd, captures)
                        if moved == 0:
                            poller.unregister(fd)
                        elif moved == -2:
                            close_channel(fd)
                    elif fd == ctx.wake_fd:
                        try:
                            os.read(fd, 64)
                        except OSError:
                            pass
                        if not terminating:
                            terminating = True
                            _killpg(pid, SIGTERM)
                            kill_at = time.monotonic() + self.kill_after
                    elif fd == pidfd:
                        poller.unregister(pidfd)
                        _, status_word = os.waitpid(pid, 0)
                if pidfd is None and status_word is None:
                    done, st = os.waitpid(pid, os.WNOHANG)
                    if done:
                        status_word = st
                now = time.monotonic()
                if deadline is not None and now >= deadline and not terminating:
                    timed_out = terminating = True
                    deadline = None
                    _killpg(pid, SIGTERM)
                    kill_at = now + self.kill_after
                if kill_at is not None and now >= kill_at:
                    kill_at = None
                    _killpg(pid, SIGKILL)
                if warn_at is not None and now >= warn_at:
                    warn_at = None
                    from runtools.model.durations import human_duration

                    _best_effort(ctx.add_warning, f"execution time exceeded {human_duration(self.time_warn)}")
                if progress_dirty and now - last_flush >= PROGRESS_FLUSH_S:
                    progress_dirty = False
                    last_flush = now
                    _best_effort(ctx.save, "progress")
                for cap in captures.values():
                    if cap.warnings:
                        for w in cap.take_warnings():
                            _best_effort(ctx.add_warning, w)
            # The child is gone: take what is left in the pipes without waiting for
            # grandchildren that may still hold them open.
            for fd in list(captures):
                while (moved := self._read(fd, captures)) > 0:
                    pass
                if moved == -2:
                    close_channel(fd)
        finally:
            if restore_winch is not None:
                restore_winch()
            for fd, cap in captures.items():
                cap.close()
                for w in cap.take_warnings():
                    _best_effort(ctx.add_warning, w)
                os.close(fd)
            poller.close()
            if pidfd is not None:
                os.close(pidfd)
        if status_word is None:  # pragma: no cover - loop only exits with a status
            return Status.ERROR, EXIT_WRAPPER_FAILED
        code = os.waitstatus_to_exitcode(status_word)
        exit_code = 128 - code if code < 0 else code
        if timed_out:
            from runtools.model.durations import human_duration

            run.error = f"timed out after {human_duration(self.timeout)}"
            return Status.TIMEOUT, EXIT_TIMEOUT
        if ctx.stop_status is not None:
            return ctx.stop_status, ctx.stop_exit if ctx.stop_exit is not None else exit_code
        return (Status.COMPLETED if exit_code == 0 else Status.FAILED), exit_code

    @staticmethod
    def _read(fd: int, captures: dict[int, StreamCapture]) -> int:
        """Move one chunk: 1 moved, 0 end of stream, -1 nothing to read right now,
        -2 moved but its reader is gone (close the channel)."""
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return -1
        except OSError:  # EIO: a pseudo-terminal whose other side is closed
            return 0
        if not data:
            return 0
        return 1 if captures[fd].feed(data) else -2


def _best_effort(fn, *args) -> None:
    """Record something mid-run; a storage hiccup (busy, full disk) must not orphan the child.
    The end of the run is still recorded (with retries) by the run itself."""
    try:
        fn(*args)
    except Exception:
        pass


def _killpg(pid: int, sig: int) -> None:
    """Signal the child's whole process group (it leads its own group)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def output_limit_default() -> int:
    return output_limit(None)


def _fstat(fd: int) -> os.stat_result | None:
    try:
        return os.fstat(fd)
    except OSError:
        return None


def _setup_pty(slave: int, term_fd: int | None) -> None:
    """The terminal's modes and window size on the command's pseudo-terminal, output
    processing off (the real terminal does it once, on the bytes we forward)."""
    import termios

    if term_fd is None:
        return
    try:
        attrs = termios.tcgetattr(term_fd)
        attrs[1] &= ~termios.OPOST
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
    except termios.error:
        pass
    _copy_winsize(term_fd, slave)


def _copy_winsize(src: int, dst: int) -> None:
    import fcntl
    import termios

    try:
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass


def _forward_winch(pid: int, ptys: list[tuple[int, int]]) -> Callable[[], None] | None:
    """On SIGWINCH: the new size to each pty, SIGWINCH to the command's group (no session has
    the pty as its terminal, so the kernel would tell nobody). Main thread only."""
    import _signal

    def on_winch(_signum: int, _frame: object) -> None:
        for master, term_fd in ptys:
            _copy_winsize(term_fd, master)
        _killpg(pid, SIGWINCH)

    try:
        old = _signal.signal(SIGWINCH, on_winch)
    except ValueError:  # not the main thread
        return None

    def restore() -> None:
        try:
            _signal.signal(SIGWINCH, old)
        except (ValueError, TypeError):
            pass

    return restore
