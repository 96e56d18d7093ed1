"""Leases of the postgres environment under real cuts: the lease connection terminated by the
server (a blip: the wrapper takes its lease again), a lease that cannot be taken again (the
wrapper stops its command: never two copies), and a server restart mid-run."""

from __future__ import annotations

import json
import subprocess

import psycopg
import pytest

from runtools.env.postgres import PostgresEnvironment
from runtools.env.postgres.store import split_url

from .server import Server, postgres_url, server


def executing(cli, url: str) -> list[dict]:
    p = cli.taro("ps", "-e", url, "--json")
    if p.returncode == 3:
        return []
    assert p.returncode == 0, p.stderr
    return [r for r in json.loads(p.stdout) if r["state"] == "EXECUTING"]


def lease_holder(admin: psycopg.Connection, key: int) -> int | None:
    row = admin.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted "
        "AND ((classid::bigint << 32) | objid::bigint) = %s", (key,)).fetchone()
    return row[0] if row else None


def cut_and_hold(admin: psycopg.Connection, pid: int | None, key: int) -> bool:
    """Terminate session `pid` and take advisory lock `key` in the admin's session as soon as it
    is free (the wrapper sees the cut at once and takes its lease again within a few ms: the
    server side loop is quicker than a new connection). False if the wrapper was quicker."""
    admin.execute(
        f"DO $$ BEGIN PERFORM pg_terminate_backend({int(pid or 0)}); FOR i IN 1..4000 LOOP "
        f"EXIT WHEN pg_try_advisory_lock({int(key)}); PERFORM pg_sleep(0.0005); END LOOP; END $$")
    row = admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                        "AND pid = pg_backend_pid() AND ((classid::bigint << 32) | objid::bigint) = %s",
                        (key,)).fetchone()
    return bool(row and row[0])


def gated(cli, url: str, job: str, host: str) -> subprocess.Popen:
    return cli.spawn_run("-e", url, "-x", "--id", job, "--", "sh", "-c", "read _ || :",
                         stdin=subprocess.PIPE, env={"RUNTOOLS_HOST": host})


@pytest.fixture
def admin():
    server()
    with psycopg.connect(split_url(postgres_url())[0], autocommit=True) as conn:
        yield conn


def test_a_cut_lease_connection_is_taken_again_and_nobody_takes_over(cli, admin, wait_until):
    url = postgres_url()
    a = gated(cli, url, "job", "host-a")
    (run,) = wait_until(lambda: executing(cli, url), 15, "the run to execute")
    key = PostgresEnvironment(url).lease_key(run["instance_id"])
    first = lease_holder(admin, key)
    assert first is not None
    admin.execute("SELECT pg_terminate_backend(%s, 5000)", (first,))
    b = cli.run("-e", url, "-x", "--id", "job", "--", "echo", "second copy", env={"RUNTOOLS_HOST": "host-b"})
    assert b.returncode == 100, b.stderr  # its wrapper lives (control connection): still the holder
    again = wait_until(lambda: lease_holder(admin, key), 10, "the wrapper to take its lease again")
    assert again != first
    cli.release(a)
    assert a.wait(15) == 0
    assert {r["host"]: r["status"] for r in cli.history("-e", url)} == {"host-a": "COMPLETED", "host-b": "OVERLAP"}


def test_a_lease_that_cannot_be_taken_again_stops_the_command(cli, admin, wait_until):
    url = postgres_url()
    a = cli.spawn_run("-e", url, "-x", "--id", "job", "--", "sleep", "60",
                      env={"RUNTOOLS_HOST": "host-a", "RUNTOOLS_PG_LEASE_GRACE": "2"})
    (run,) = wait_until(lambda: executing(cli, url), 15, "the run to execute")
    key = PostgresEnvironment(url).lease_key(run["instance_id"])
    for _attempt in range(5):  # cut its lease connection and hold the lock before it takes it again
        if cut_and_hold(admin, lease_holder(admin, key), key):  # what a stuck old session would do
            break
    else:
        pytest.fail("the wrapper took its lease again before the test could hold it, 5 times")
    try:
        assert a.wait(30) == 125  # the grace (2 s here), then TERM: sleep ends at once
    finally:
        admin.execute("SELECT pg_advisory_unlock(%s)", (key,))
    (ended,) = cli.history("-e", url)
    assert ended["status"] == "ERROR"
    assert "lost its lease" in ended["error"]
    assert ended["actions"][-1]["by"] == "lease"


def test_a_server_restart_mid_run_costs_nothing(cli, wait_until):
    own = Server()
    try:
        own.start()
        url = own.url("restart")
        a = gated(cli, url, "job", "host-a")
        wait_until(lambda: executing(cli, url), 15, "the run to execute")
        own.restart()
        # within the restart grace the run counts as alive though its lease is not taken yet
        b = cli.run("-e", url, "-x", "--id", "job", "--", "echo", "second copy", env={"RUNTOOLS_HOST": "host-b"})
        assert b.returncode == 100, b.stderr
        cli.release(a)
        assert a.wait(15) == 0, a.stderr.read()
        runs = {r["host"]: r for r in cli.history("-e", url)}
        assert runs["host-a"]["status"] == "COMPLETED"
        assert runs["host-b"]["status"] == "OVERLAP"
    finally:
        own.stop()


def test_the_end_of_a_run_is_recorded_once_the_server_is_back(cli, wait_until):
    import os

    own = Server()
    try:
        own.start()
        url = own.url("away")
        a = gated(cli, url, "job", "host-a")
        (run,) = wait_until(lambda: executing(cli, url), 15, "the run to execute")
        own.stop_process()
        cli.release(a)  # the command ends while the server is away

        def gone() -> bool:
            try:
                os.kill(run["child_pid"], 0)
            except ProcessLookupError:
                return True
            return False

        wait_until(gone, 10, "the command to end")
        assert a.poll() is None  # the wrapper waits for the server to record the end
        assert own._launch()
        assert a.wait(20) == 0, a.stderr.read()
        (ended,) = cli.history("-e", url)
        assert (ended["status"], ended["error"]) == ("COMPLETED", None)
    finally:
        own.stop()


def test_a_queued_run_survives_a_server_restart(cli, wait_until):
    own = Server()
    try:
        own.start()
        url = own.url("queue")
        holder = cli.spawn_run("-e", url, "--serial", "--id", "q", "--", "sh", "-c", "read _ || :",
                               stdin=subprocess.PIPE, env={"RUNTOOLS_HOST": "host-a"})
        wait_until(lambda: executing(cli, url), 15, "the holder to execute")
        waiter = cli.spawn_run("-e", url, "--serial", "--id", "q", "--", "echo", "my turn",
                               env={"RUNTOOLS_HOST": "host-b"})

        def queued() -> bool:
            p = cli.taro("ps", "-e", url, "--json")
            return p.returncode == 0 and any(r["state"] == "QUEUED" for r in json.loads(p.stdout))

        wait_until(queued, 15, "the second run to queue")
        own.restart()
        cli.release(holder)
        assert holder.wait(20) == 0, holder.stderr.read()
        assert waiter.wait(20) == 0, waiter.stderr.read()
        out, err = waiter.stdout.read(), waiter.stderr.read()
        assert out == b"my turn\n" and b"Traceback" not in err and b"Exception" not in err, err
        runs = {r["host"]: r["status"] for r in cli.history("-e", url)}
        assert runs == {"host-a": "COMPLETED", "host-b": "COMPLETED"}
    finally:
        own.stop()


def test_a_frozen_holder_keeps_its_lease(cli, wait_until):
    """SIGSTOP of a holder (wrapper and command): its host still answers TCP, the server keeps its
    sessions, so nobody takes over however long it is frozen; once thawed it goes on."""
    import os
    import signal
    import time

    url = postgres_url()
    tune = {"RUNTOOLS_PG_LEASE_GRACE": "1"}
    holder = cli.spawn_run("-e", url, "-x", "--id", "job", "--", "sh", "-c", "read _ || :", stdin=subprocess.PIPE,
                           env={**tune, "RUNTOOLS_HOST": "host-a"})
    (run,) = wait_until(lambda: executing(cli, url), 15, "the holder to execute")
    frozen = [holder.pid, run["child_pid"]]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        t = time.monotonic()
        while time.monotonic() - t < 3:  # three lease graces: each try is a whole `run job`
            p = cli.run("-e", url, "-x", "--id", "job", "--", "true", env={**tune, "RUNTOOLS_HOST": "host-b"})
            assert p.returncode == 100, p.stderr
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    cli.release(holder)
    assert holder.wait(15) == 0, holder.stderr.read()
    assert cli.run("-e", url, "-x", "--id", "job", "--", "true").returncode == 0
