"""Shared fixtures for every test: an isolated environment home, CLI runners, deadline waits.

Every test gets its own `$RUNTOOLS_HOME` (under pytest's tmp_path), its own short
`$XDG_RUNTIME_DIR` under /tmp (Unix socket paths stay far below the ~107 byte limit), its own
`$XDG_CONFIG_HOME` and `$XDG_CACHE_HOME`, and no `$RUNTOOLS_ENV`. Subprocesses inherit all of that.

Fixtures:
    home        Path of the isolated $RUNTOOLS_HOME (autouse: always active).
    cli         a `Cli`: run `run`/`taro` from the venv as subprocesses with a timeout,
                parse their JSON, start them in the background; cleans up after the test.
    wait_until  `wait_until(condition, timeout=10.0, what=None)`: poll `condition` at short
                intervals until it returns a truthy value (returned) or fail the test.

Helpers (import them: `from conftest import pid_alive`):
    pid_alive(pid) / group_alive(pgid)  is a process (group) still running; zombies count as gone
    need_service(present, what)  skip without a real service, but fail under CI (which installs it)

Do not sleep in tests: wait for a condition (wait_until), an event (`taro wait`), or a
process (`Popen.wait`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

#: directory of the venv's console scripts (`run`, `taro`, ...), next to the interpreter
BIN = Path(sys.executable).parent
DEFAULT_TIMEOUT = 30.0

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 10.0, what: str | None = None,
               interval: float = 0.01) -> T:
    """Return the first truthy value of `condition()`; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(delay)  # the poll interval of a deadline loop, not a stand-in for a condition
        delay = min(delay * 1.5, 0.1)


def need_service(present: bool, what: str) -> None:
    """Skip a test whose real service (a browser, sshd, tmux) is not installed, except under CI,
    where scripts/test installs it: there a missing service fails the test instead of hiding it."""
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing under CI (scripts/test installs it)")
    pytest.skip(f"{what} is not installed (scripts/test installs it)")


def pid_alive(pid: int) -> bool:
    """True while `pid` runs. A zombie counts as gone: it has exited, and where PID 1 does not reap
    orphans (containers) it stays in /proc, and `kill -0` still succeeds, long after."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def processes() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, fields of /proc/PID/stat after the command name) of every process there is now:
    fields[0] is the state (b"Z" for a zombie), [1] the parent pid, [2] the process group."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        yield int(entry), fields


def group_alive(pgid: int) -> bool:
    """True while some non-zombie process is in process group `pgid`."""
    return any(int(f[2]) == pgid and f[0] != b"Z" for _pid, f in processes())


class Cli:
    """Runs the venv's `run` and `taro` as black-box subprocesses in the test's isolated home.

    run(...)/taro(...)/exec(argv)  CompletedProcess (text unless `binary=True`), with a timeout
    json(...), history(...), ps(...)  `taro VERB ... --json`, asserted to exit 0, parsed
    spawn(argv)/spawn_run(...)  background process (own session), killed at teardown
    spawn_gated(job, ...)/release(proc)  a run whose command blocks until released
    runs(active=, job=)  records straight from the store (fast polling, public JSON shape)
    wait_state(job, state)  wait until an active run of `job` is in `state`
    read_lines(proc, until)  read a background process's stdout lines with a deadline
    listeners()  event listener sockets bound (is `taro wait`/`listen` subscribed yet?)
    """

    def __init__(self, home: Path, cwd: Path) -> None:
        self.home = home
        self.cwd = cwd
        self.procs: list[subprocess.Popen] = []

    def bin(self, name: str) -> str:
        return str(BIN / name)

    def exec(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, input: bytes | str | None = None,
             env: dict[str, str] | None = None, binary: bool = False, cwd: Path | str | None = None
             ) -> subprocess.CompletedProcess:
        """Run `argv` (argv[0] `run`/`taro` resolved in the venv) and wait for it."""
        argv = [self._resolve(argv[0]), *argv[1:]]
        if input is None:
            stdin = subprocess.DEVNULL
        else:
            stdin = None
            if not binary and isinstance(input, bytes):
                input = input.decode()
        return subprocess.run(argv, input=input, stdin=stdin, capture_output=True, text=not binary,
                              timeout=timeout, env=self._env(env), cwd=cwd or self.cwd)

    def run(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        """`run job ARGS...` (pass `"--"` yourself before the command when it needs one)."""
        return self.exec(["run", "job", *args], **kw)

    def taro(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        return self.exec(["taro", *args], **kw)

    def json(self, *args: str, **kw: Any) -> Any:
        """`taro ARGS... --json`, asserted to exit 0, parsed."""
        p = self.taro(*args, "--json", **kw)
        assert p.returncode == 0, f"taro {' '.join(args)} --json exited {p.returncode}: {p.stderr}"
        return json.loads(p.stdout)

    def history(self, *args: str) -> list[dict[str, Any]]:
        """Ended runs, newest first (`taro history --json`)."""
        return self.json("history", *args)

    def ps(self, *args: str) -> list[dict[str, Any]]:
        """Active runs (`taro ps --json`)."""
        return self.json("ps", *args)

    def spawn(self, argv: Sequence[str], *, env: dict[str, str] | None = None, binary: bool = True,
              stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE, stdin: Any = subprocess.DEVNULL,
              cwd: Path | str | None = None) -> subprocess.Popen:
        """Start `argv` in the background in its own session; killed (group) at teardown if alive."""
        argv = [self._resolve(argv[0]), *argv[1:]]
        p = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, text=not binary,
                             env=self._env(env), cwd=cwd or self.cwd, start_new_session=True)
        self.procs.append(p)
        return p

    def spawn_run(self, *args: str, **kw: Any) -> subprocess.Popen:
        """`run job ARGS...` in the background."""
        return self.spawn(["run", "job", *args], **kw)

    def spawn_gated(self, job: str, *opts: str, before: str = "", after: str = "") -> subprocess.Popen:
        """`run job --id JOB OPTS -- sh -c 'BEFORE; read _; AFTER'` in the background: the command
        blocks on the wrapper's stdin (a pipe) until `release(proc)` closes it."""
        cmd = "; ".join(x for x in (before, "read _ || :", after) if x)
        return self.spawn_run("--id", job, *opts, "--", "sh", "-c", cmd, stdin=subprocess.PIPE)

    @staticmethod
    def release(proc: subprocess.Popen) -> None:
        """Let a `spawn_gated` command go on (closes its stdin)."""
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()

    @staticmethod
    def read_lines(proc: subprocess.Popen, until: Callable[[bytes], bool],
                   timeout: float = 10.0) -> list[bytes]:
        """Lines (without newline) read from `proc.stdout` (binary) up to and including the first
        for which `until(line)` is true; fails the test at EOF or after `timeout` seconds.
        Reads the descriptor directly: do not mix with proc.stdout.read*()."""
        import selectors

        fd = proc.stdout.fileno()
        buf = getattr(proc, "_rt_buf", b"")
        lines: list[bytes] = []
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    lines.append(line)
                    if until(line):
                        proc._rt_buf = buf
                        return lines
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"no matching line within {timeout}s; read {lines!r} + {buf!r}")
                if sel.select(remaining):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        pytest.fail(f"EOF before a matching line; read {lines!r} + {buf!r}")
                    buf += chunk

    def listeners(self) -> int:
        """Event listener sockets bound in this test's runtime dir (`taro wait`/`listen` ready)."""
        if os.environ.get("RUNTOOLS_ENV", "").startswith("postgresql://"):
            from pg.server import listeners

            return listeners(os.environ["RUNTOOLS_ENV"])
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "runtools"
        if not base.is_dir():
            return 0
        return sum(len(os.listdir(d / "l")) for d in base.iterdir() if (d / "l").is_dir())

    def runs(self, *, active: bool | None = None, job: str | None = None) -> list[dict[str, Any]]:
        """All runs straight from the environment's store, no lease check (fast, for polling):
        public JSON shape, newest first."""
        from runtools.env import open_environment
        from runtools.env.base import RunQuery
        from runtools.model.criteria import RunMatcher

        name = os.environ.get("RUNTOOLS_ENV") or "local"  # a postgres URL: see `home`
        if name == "local" and not (self.home / "local").exists():
            return []
        with open_environment(name) as env:
            runs = env.find_runs(RunQuery(matcher=RunMatcher.parse(job), active=active))
        return [r.to_json() for r in runs]

    def wait_state(self, job: str, state: str = "EXECUTING", timeout: float = 15.0) -> dict[str, Any]:
        """Wait until an active run of `job` is in `state` (a state, or a stage); returns it."""

        def find() -> dict[str, Any] | None:
            for r in self.runs(active=True, job=job):
                if state in (r["state"], r["stage"]):
                    return r
            return None

        return wait_until(find, timeout, f"{job} to be {state}")

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    f.close()

    def _resolve(self, name: str) -> str:
        if os.sep not in name and (BIN / name).exists():
            return str(BIN / name)
        return name

    @staticmethod
    def _env(extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RUNTOOLS_NOTIFY_FD", None)
        if extra:
            for k, v in extra.items():
                if v is None:
                    env.pop(k, None)
                else:
                    env[k] = v
        return env


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the postgres pass (RUNTOOLS_TEST_ENV=postgres) a test marked `local_only` is skipped with
    its reason: it checks a mechanism the local backend has and postgres has not (a pid file, a
    unix socket), not behaviour both must share."""
    if os.environ.get("RUNTOOLS_TEST_ENV") != "postgres":
        return
    for item in items:
        mark = item.get_closest_marker("local_only")
        if mark is not None:
            why = mark.args[0] if mark.args else "a local-backend mechanism"
            item.add_marker(pytest.mark.skip(reason=f"local backend only: {why}"))


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own $RUNTOOLS_HOME (plus private XDG runtime and config dirs)."""
    h = tmp_path / "rt-home"
    runtime = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    monkeypatch.setenv("RUNTOOLS_HOME", str(h))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # parsed config, plugin list
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("RUNTOOLS_ENV", raising=False)
    if os.environ.get("RUNTOOLS_TEST_ENV") == "postgres":  # the CLI suites on a postgres environment
        from pg.server import postgres_url
        from runtools.env.postgres import PostgresEnvironment

        url = postgres_url()
        with PostgresEnvironment(url) as env, env.transaction():
            pass  # created, as the default `local` reads as existing before its first run
        monkeypatch.setenv("RUNTOOLS_ENV", url)
    yield h
    shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def cli(home: Path, tmp_path: Path) -> Cli:
    """CLI runner bound to the isolated home; subprocesses run in a scratch cwd (no stray config)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    c = Cli(home, cwd)
    yield c
    c.cleanup()


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    """`wait_until(condition, timeout=10.0, what=None)` -> first truthy value of condition()."""
    return wait_until
