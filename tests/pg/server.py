"""A throwaway PostgreSQL server for the tests: one per test session, started on first use.

`initdb` in a temporary directory (as root: as the `postgres` user, which owns the data
directory), a random free port on 127.0.0.1 only, the Unix socket in the temporary directory,
fsync off; stopped (and its directory removed) when the test process exits. Each test gets its
own schema through `postgres_url()` (`?schema=t_<random>`), so tests never see each other's runs.

Without psycopg or the server binaries the tests that need it skip with one line saying why —
except under CI (`CI` set), where that is a failure: CI never skips them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

#: where the server binaries are (Debian's postgresql-15); $RUNTOOLS_PG_BIN overrides
PG_BIN = os.environ.get("RUNTOOLS_PG_BIN") or "/usr/lib/postgresql/15/bin"
#: a password that the tests put into URLs to check that it is never printed (trust auth ignores it)
PASSWORD = "s3cr3t-Pa55"


def unavailable() -> str | None:
    """Why the server cannot be started here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    for tool in ("initdb", "postgres"):
        if not os.access(os.path.join(PG_BIN, tool), os.X_OK):
            return f"no PostgreSQL server binaries in {PG_BIN} (scripts/test installs postgresql-15)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no `postgres` user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, listen: str = "127.0.0.1") -> None:
        """`listen`: the server's addresses (comma-separated; 127.0.0.1 only, unless a test
        partitions a network namespace off); clients from any of them are trusted."""
        self.listen = listen
        self.dir = tempfile.mkdtemp(prefix="rt-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def start(self) -> None:
        log = os.path.join(self.dir, "initdb.log")
        with open(log, "wb") as f:
            r = subprocess.run([*self.as_user, os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                                "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                               stdout=f, stderr=subprocess.STDOUT, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {open(log).read()}")
        with open(os.path.join(self.data, "pg_hba.conf"), "a") as hba:
            for addr in self.listen.split(","):
                if addr != "127.0.0.1":
                    hba.write(f"host all all {addr.rsplit('.', 1)[0]}.0/24 trust\n")
        for _attempt in range(5):
            self.port = _free_port()
            if self._launch():
                return
            self.stop_process()
        raise RuntimeError(f"the test PostgreSQL server did not start: "
                           f"{open(os.path.join(self.dir, 'server.log')).read()[-2000:]}")

    def restart(self) -> None:
        """Stop the server (fast shutdown: every session ends) and start it again on its port."""
        self.stop_process()
        if not self._launch():
            raise RuntimeError("the test PostgreSQL server did not start again")

    def _launch(self) -> bool:
        with open(os.path.join(self.dir, "server.log"), "ab") as errlog:
            self.proc = subprocess.Popen(
                [*self.as_user, os.path.join(PG_BIN, "postgres"), "-D", self.data, "-p", str(self.port),
                 "-c", f"listen_addresses={self.listen}", "-c", f"unix_socket_directories={self.dir}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=300", "-c", "shared_buffers=32MB", "-c", "logging_collector=off"],
                stdout=subprocess.DEVNULL, stderr=errlog, start_new_session=True)
        return self._wait_ready()

    def _wait_ready(self) -> bool:
        import psycopg

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.02)  # the server's start-up: no event to wait for
        return False

    def url(self, schema: str | None = None, password: bool = False, host: str = "127.0.0.1") -> str:
        auth = f"postgres:{PASSWORD}" if password else "postgres"
        base = f"postgresql://{auth}@{host}:{self.port}/postgres"
        return f"{base}?schema={schema}" if schema and schema != "postgres" else base

    def stop_process(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)  # fast shutdown
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self.stop_process()
        shutil.rmtree(self.dir, ignore_errors=True)


_server: Server | None = None


def server() -> Server:
    """The session's server (started on first use; skips the test when it cannot be had)."""
    global _server
    if _server is None:
        why = unavailable()
        if why:
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL tests cannot run under CI: {why}")
            pytest.skip(f"PostgreSQL tests skipped: {why}")
        s = Server()
        try:
            s.start()
        except BaseException:
            s.stop()
            raise
        _server = s
        atexit.register(s.stop)
    return _server


def new_schema() -> str:
    return "t_" + os.urandom(6).hex()


def postgres_url(schema: str | None = None, password: bool = False) -> str:
    """A URL of the session's server with a fresh schema of its own (or `schema`)."""
    return server().url(schema or new_schema(), password=password)


def listeners(url: str) -> int:
    """Event subscriptions open on the environment of `url` (`taro wait`/`listen` ready)."""
    import psycopg

    from runtools.env.postgres import PostgresEnvironment
    from runtools.env.postgres.store import split_url

    channel = PostgresEnvironment(url)._events_channel
    with psycopg.connect(split_url(url)[0], autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query = %s",
                           (f'LISTEN "{channel}"',)).fetchone()
    return int(row[0]) if row else 0


if __name__ == "__main__":  # a server for trying things by hand: prints its URL, stops on Enter
    s = Server()
    s.start()
    print(s.url(), flush=True)
    try:
        sys.stdin.readline()
    finally:
        s.stop()
