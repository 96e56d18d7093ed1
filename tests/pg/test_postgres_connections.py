"""Connection use of the postgres environment (issue 9): a wait on another run's lease needs no
connection of its own, so a queued wrapper holds as many connections as a running one; and with
many waiters every one of them still gets its turn, in order (no lost wake-up)."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import psycopg

from runtools.env.postgres import PostgresEnvironment
from runtools.env.postgres.store import split_url
from runtools.model.run import RunRecord

from .server import postgres_url


def sessions(app: str) -> int:
    with psycopg.connect(split_url(postgres_url())[0], autocommit=True) as admin:
        (n,) = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                             (app,)).fetchone()  # type: ignore[misc]
    return n


def test_queued_wrappers_hold_no_connection_for_their_waits_and_start_in_order(cli, wait_until, monkeypatch):
    app = f"rt_conn_{os.urandom(4).hex()}"
    url = f"{postgres_url()}&application_name={app}"
    monkeypatch.setenv("RUNTOOLS_ENV", url)
    holder = cli.spawn_gated("line", "--serial")
    cli.wait_state("line", "EXECUTING")
    held = wait_until(lambda: sessions(app) or None, what="the holder's connections")
    queued = []
    for i in range(8):  # queued one after another: tickets in this order, two "hosts"
        queued.append(cli.spawn_run("--serial", "--id", "line", "--", "echo", str(i),
                                    env={"RUNTOOLS_HOST": f"host-{'ab'[i % 2]}"}))
        wait_until(lambda n=i + 1: sum(r["state"] == "QUEUED" for r in cli.runs(active=True, job="line")) == n,
                   what=f"{i + 1} runs queued")
    # every queued wrapper watches a lease (the first the holder's, the others the run ahead):
    # those waits ride the connections the wrapper has anyway (main, lease, LISTEN)
    assert held <= 3
    assert sessions(app) <= held * 9, (sessions(app), held)
    cli.release(holder)
    assert holder.wait(30) == 0
    for p in queued:
        assert p.wait(60) == 0
    runs = sorted(cli.history(), key=lambda r: r["started_at"])
    assert [r["status"] for r in runs] == ["COMPLETED"] * 9
    assert [r["run_id"] for r in runs] == [r["run_id"] for r in sorted(runs, key=lambda r: r["created_at"])]


def test_many_lease_waits_in_one_process_share_its_connections():
    app = f"rt_waits_{os.urandom(4).hex()}"
    url = f"{postgres_url()}&application_name={app}"
    runs = [RunRecord("held", f"r{i}", 0.0) for i in range(6)]
    with PostgresEnvironment(url) as holder_env, PostgresEnvironment(url) as env:
        holder_env.exists()
        leases = [holder_env.lease(r) for r in runs]
        base = sessions(app)  # the holder's 6 leases (and nothing of `env` yet)
        results: list[bool] = []
        waits = [threading.Thread(target=lambda r=r: results.append(env.wait_lease(r, 30))) for r in runs]
        for t in waits:
            t.start()
        assert env.wait_lease(runs[0], 0.3) is False  # still held: the wait times out
        assert sessions(app) - base <= 2  # env's main and LISTEN connections, not one per wait
        t0 = time.monotonic()
        for lease in leases:
            lease.release()
        for t in waits:
            t.join(30)
        assert results == [True] * 6
        assert time.monotonic() - t0 < 2.0
        assert env.wait_lease(RunRecord("never", "leased", 0.0), 5) is True


def test_a_lease_wait_sees_a_killed_holder_within_a_second(cli, monkeypatch):
    url = postgres_url()
    monkeypatch.setenv("RUNTOOLS_ENV", url)
    p = cli.spawn_run("--id", "held", "--", "sleep", "60", stdout=subprocess.DEVNULL)
    run = cli.wait_state("held", "EXECUTING")
    with PostgresEnvironment(url) as env:
        assert env.wait_lease(RunRecord("held", run["run_id"], 0.0), 0.3) is False
        os.killpg(p.pid, 9)  # the wrapper, then its command (a group of its own, holding the lease too)
        os.killpg(run["child_pid"], 9)
        p.wait(10)
        t0 = time.monotonic()
        assert env.wait_lease(RunRecord("held", run["run_id"], 0.0), 5) is True
        assert time.monotonic() - t0 < 1.0


def test_many_waiters_on_one_group_all_run_in_ticket_order_never_more_than_its_limit(cli, monkeypatch):
    url = postgres_url()
    monkeypatch.setenv("RUNTOOLS_ENV", url)
    procs = [cli.spawn_run("--max-concurrent", "3", "--id", "crowd", "--", "sleep", "0.05",
                           env={"RUNTOOLS_HOST": f"host-{i % 3}"}, stdout=subprocess.DEVNULL)
             for i in range(16)]  # all at once: most wait, a few at the front listen, the rest are poked
    for p in procs:
        assert p.wait(120) == 0
    from runtools.env.base import RunQuery

    with PostgresEnvironment(url) as env:
        runs = env.find_runs(RunQuery())
    assert len(runs) == 16 and {r.status.value for r in runs if r.status} == {"COMPLETED"}
    by_ticket = sorted(runs, key=lambda r: r.coord["ticket"])
    slots = [r.coord["slot_at"] for r in by_ticket]
    assert slots == sorted(slots)  # slots went out in ticket (arrival) order, across "hosts"
    for r in runs:  # never more than 3 executing at once
        assert r.started_at is not None and r.ended_at is not None
        beside = [o for o in runs if o.started_at < r.started_at < o.ended_at]  # type: ignore[operator]
        assert len(beside) <= 2, (r.instance_id, [o.instance_id for o in beside])
