"""The postgres environment, black-box: `run job` and `taro` against a real, throwaway server.

Two "hosts" are two wrappers with different RUNTOOLS_HOST on this machine. Every URL carries a
password (the test server trusts any) so that each output can be checked for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from .server import PASSWORD, postgres_url


@pytest.fixture
def url() -> str:
    return postgres_url(password=True)


def no_password(*texts: str | bytes | None) -> None:
    for t in texts:
        if t is None:
            continue
        s = t.decode(errors="replace") if isinstance(t, bytes) else t
        assert PASSWORD not in s


def test_local_run_job_and_ps_never_import_psycopg(cli):
    for argv in ([cli.bin("run"), "job", "--", "true"], [cli.bin("taro"), "ps"]):
        p = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True,
                           timeout=30, env=cli._env(None), cwd=cli.cwd)
        assert p.returncode == 0, p.stderr
        assert "psycopg" not in p.stderr


def executing(cli, url: str) -> list[dict]:
    """Runs executing in the environment (none while its schema does not exist yet)."""
    p = cli.taro("ps", "-e", url, "--json")
    if p.returncode == 3:
        return []
    assert p.returncode == 0, p.stderr
    return [r for r in json.loads(p.stdout) if r["state"] == "EXECUTING"]


def test_two_hosts_one_mutex_the_other_ends_overlap(cli, url, wait_until):
    a = cli.spawn_run("-e", url, "-x", "--id", "backup", "--", "sh", "-c", "read _ || :",
                      stdin=subprocess.PIPE, env={"RUNTOOLS_HOST": "host-a"})
    (running,) = wait_until(lambda: executing(cli, url), 15, "host-a's run to execute")
    assert running["host"] == "host-a"
    b = cli.run("-e", url, "-x", "--id", "backup", "--", "echo", "second copy", env={"RUNTOOLS_HOST": "host-b"})
    assert b.returncode == 100, b.stderr
    assert "second copy" not in b.stdout
    no_password(b.stdout, b.stderr)
    cli.release(a)
    assert a.wait(15) == 0
    no_password(a.stdout.read(), a.stderr.read())
    runs = {r["host"]: r for r in cli.history("-e", url)}
    assert (runs["host-a"]["status"], runs["host-b"]["status"]) == ("COMPLETED", "OVERLAP")
    assert runs["host-b"]["exit_code"] == 100
    for args in (["history", "-e", url, "--json"], ["ps", "-e", url, "--json"], ["history", "-e", url]):
        p = cli.taro(*args)
        assert p.returncode == 0, p.stderr
        no_password(p.stdout, p.stderr)


def test_a_killed_run_is_lost_and_frees_the_mutex(cli, url, wait_until):
    a = cli.spawn_run("-e", url, "-x", "--id", "job", "--", "sleep", "60", env={"RUNTOOLS_HOST": "host-a"})
    (run,) = wait_until(lambda: executing(cli, url), 15, "the run to execute")
    os.killpg(a.pid, signal.SIGKILL)  # the wrapper first (else it records the command's end)...
    a.wait(10)
    os.kill(run["child_pid"], signal.SIGKILL)  # ...then its command, which held the lease's connection too
    from runtools.env.postgres import PostgresEnvironment
    from runtools.model.run import RunRecord

    with PostgresEnvironment(url) as env:  # the server ends the session as soon as it sees the socket close
        assert env.wait_lease(RunRecord(run["job_id"], run["run_id"], 0.0), 5)
    b = cli.run("-e", url, "-x", "--id", "job", "--", "echo", "took over", env={"RUNTOOLS_HOST": "host-b"})
    assert (b.returncode, b.stdout) == (0, "took over\n"), b.stderr
    runs = {r["host"]: r for r in cli.history("-e", url)}
    assert runs["host-a"]["status"] == "LOST"
    assert runs["host-b"]["status"] == "COMPLETED"


def test_unreachable_server_is_one_line_without_the_password(cli):
    bad = f"postgresql://someone:{PASSWORD}@127.0.0.1:1/db"
    p = cli.run("-e", bad, "--", "true")
    assert p.returncode == 125
    assert len(p.stderr.splitlines()) == 1 and "cannot connect" in p.stderr
    no_password(p.stdout, p.stderr)
    p = cli.taro("ps", "-e", bad)
    assert p.returncode == 5 and len(p.stderr.splitlines()) == 1
    no_password(p.stdout, p.stderr)


def test_reading_a_schema_that_does_not_exist_is_not_found(cli, url):
    p = cli.taro("history", "-e", url)
    assert p.returncode == 3 and "does not exist" in p.stderr
    no_password(p.stderr)


def test_a_newer_schema_is_refused(cli, url):
    import psycopg

    from runtools.env.postgres.store import SCHEMA_VERSION, split_url

    assert cli.run("-e", url, "--", "true").returncode == 0
    libpq, schema = split_url(url)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{schema}".schema_version (version, name) VALUES (%s, %s)',
                     (SCHEMA_VERSION + 1, "9999_future.sql"))
    p = cli.run("-e", url, "--", "true")
    assert p.returncode == 125
    assert "newer runtools" in p.stderr and len(p.stderr.splitlines()) == 1
    no_password(p.stderr)
    p = cli.taro("ps", "-e", url)
    assert p.returncode == 5 and "newer runtools" in p.stderr


def test_output_of_a_run_of_another_host_comes_from_the_database(cli, url):
    script = "for i in $(seq 1 400); do echo out $i; done; echo err >&2"
    p = cli.run("-e", url, "--id", "chatty", "--", "sh", "-c", script, env={"RUNTOOLS_PG_OUTPUT_KIB": "1"})
    assert p.returncode == 0, p.stderr
    (r,) = cli.history("-e", url)
    with open(r["stdout_path"]) as f:
        whole = f.read()
    os.unlink(r["stdout_path"])  # as seen from another host: the files are not here
    os.unlink(r["stderr_path"])
    o = cli.taro("output", "-e", url, "chatty")
    assert o.returncode == 0, o.stderr
    assert o.stdout == whole[-1024:]  # the last 1 KiB, and it says so
    assert f"whole output is on {r['host']}: {r['stdout_path']}" in o.stderr
    assert o.stderr.endswith("err\n")
    no_password(o.stdout, o.stderr)


def test_a_name_can_stand_for_a_postgres_url(cli, url, home):
    a = cli.taro("env", "add", "prod", url)
    assert a.returncode == 0 and "***" in a.stdout, a.stderr
    assert cli.taro("env", "add", "prod", url).returncode == 2  # already there: -f to replace
    link = home / "prod" / "postgres.url"
    assert link.stat().st_mode & 0o777 == 0o600
    p = cli.taro("history", "-e", "prod")
    assert p.returncode == 3 and p.stderr.startswith("taro: environment prod (postgresql://") and "***" in p.stderr
    assert cli.run("-e", "prod", "--id", "named", "--", "true").returncode == 0
    assert [r["job_id"] for r in cli.history("-e", url)] == ["named"]  # the same environment
    assert [r["job_id"] for r in cli.json("history", env={"RUNTOOLS_ENV": "prod"})] == ["named"]
    (listed,) = cli.json("env", "list")
    assert listed["name"] == "prod" and listed["kind"] == "postgres"
    p = cli.taro("env", "list")
    no_password(p.stdout, p.stderr, a.stdout, a.stderr)
    assert cli.taro("env", "remove", "prod").returncode == 0
    assert not link.exists()
    assert cli.taro("env", "remove", "prod").returncode == 3


def test_tail_of_a_run_of_another_host(cli, url, wait_until):
    script = "for i in $(seq 1 30); do echo out $i; done; read _ || :; echo last"
    a = cli.spawn_run("-e", url, "--id", "far", "--", "sh", "-c", script, stdin=subprocess.PIPE)
    (r,) = wait_until(lambda: executing(cli, url), 15, "the run to execute")
    wait_until(lambda: b"out 30" in cli.taro("tail", "-e", url, "-n", "2", "far", binary=True).stdout, 10,
               "its output")
    os.rename(r["stdout_path"], r["stdout_path"] + ".away")  # as seen from another host
    t = cli.taro("tail", "-e", url, "-n", "2", "far")
    assert (t.returncode, t.stdout) == (0, "out 29\nout 30\n"), t.stderr
    f = cli.spawn(["taro", "tail", "-f", "-e", url, "-n", "1", "far"])
    cli.read_lines(f, lambda line: line == b"out 30")
    cli.release(a)
    assert a.wait(15) == 0
    assert cli.read_lines(f, lambda line: line == b"last")[-1] == b"last"
    assert f.wait(15) == 0
