"""Execution queues: --serial, --max-concurrent N, --queue-group G (black box)."""

from __future__ import annotations

import subprocess

import pytest

from runtools.model.status import NOT_EXECUTED_EXIT


def stored(job: str | None = None):
    """Run records straight from the store, oldest first, with epoch times (for interval checks)."""
    from runtools.env import open_environment
    from runtools.env.base import RunQuery
    from runtools.model.criteria import RunMatcher

    with open_environment() as env:
        env.active_runs()
        return env.find_runs(RunQuery(matcher=RunMatcher.parse(job), ascending=True))


def max_overlap(runs) -> int:
    """Most runs executing at one instant, from stored started/ended times (an end at t frees t)."""
    points = []
    for r in runs:
        points += [(r.started_at, 1), (r.ended_at, -1)]
    points.sort(key=lambda p: (p[0], p[1]))
    level = peak = 0
    for _, d in points:
        level += d
        peak = max(peak, level)
    return peak


def test_serial_runs_queue_in_arrival_order_and_show_their_place(cli, wait_until):
    holder = cli.spawn_gated("backup", "--serial")
    cli.wait_state("backup", "EXECUTING")
    queued = []
    for i in range(3):
        queued.append(cli.spawn_gated("backup", "--serial", "--tag", f"n{i}"))
        wait_until(lambda n=i + 1: len([r for r in cli.ps("backup") if r["state"] == "QUEUED"]) == n,
                   what=f"{i + 1} queued")
    details = {r["tags"][0]: r["detail"] for r in cli.ps("backup") if r["state"] == "QUEUED"}
    assert details == {
        "n0": "QUEUED 1st of 3 in group backup",
        "n1": "QUEUED 2nd of 3 in group backup",
        "n2": "QUEUED 3rd of 3 in group backup",
    }
    assert "QUEUED 2nd of 3 in group backup" in cli.taro("ps").stdout
    for p in queued:  # let them all go as soon as they run
        cli.release(p)
    cli.release(holder)
    assert holder.wait(10) == 0
    for p in queued:
        assert p.wait(10) == 0
    runs = [r for r in stored("backup")]
    assert [r.status for r in runs] == ["COMPLETED"] * 4
    by_start = sorted(runs, key=lambda r: r.started_at)
    assert [r.tags for r in by_start] == [[], ["n0"], ["n1"], ["n2"]]
    assert max_overlap(runs) == 1


def test_detail_moves_up_when_the_line_moves(cli, wait_until):
    holder = cli.spawn_gated("q", "--serial")
    cli.wait_state("q", "EXECUTING")
    first = cli.spawn_gated("q", "--serial", "--tag", "first")
    wait_until(lambda: any(r["state"] == "QUEUED" for r in cli.ps("q")))
    cli.spawn_gated("q", "--serial", "--tag", "second")
    wait_until(lambda: sum(r["state"] == "QUEUED" for r in cli.ps("q")) == 2)
    cli.release(holder)
    r = cli.wait_state("first", "EXECUTING")
    assert r["tags"] == ["first"]
    (second,) = [r for r in cli.ps("q") if r["state"] == "QUEUED"]
    assert second["detail"] == "QUEUED 1st of 1 in group q"
    cli.release(first)


def test_queue_group_is_shared_across_jobs(cli, wait_until):
    a = cli.spawn_gated("extract", "--max-concurrent", "1", "--queue-group", "db")
    cli.wait_state("extract", "EXECUTING")
    b = cli.spawn_gated("load", "--max-concurrent", "1", "--queue-group", "db")
    r = cli.wait_state("load", "QUEUED")
    assert r["detail"] == "QUEUED 1st of 1 in group db"
    assert r["coordination"]["queue_group"] == "db"
    # another group is not held back
    assert cli.run("--id", "other", "--serial", "--", "true").returncode == 0
    cli.release(b)
    cli.release(a)
    assert a.wait(10) == 0 and b.wait(10) == 0


def test_max_concurrent_lets_n_execute(cli, wait_until):
    procs = [cli.spawn_gated("par", "--max-concurrent", "2") for _ in range(3)]
    wait_until(lambda: sorted(str(r["state"]) for r in cli.ps("par")) == ["EXECUTING", "EXECUTING", "QUEUED"],
               what="2 executing, 1 queued")
    for p in procs:
        cli.release(p)
    for p in procs:
        assert p.wait(10) == 0
    assert max_overlap(stored("par")) == 2


def test_stopping_a_queued_run_cancels_it_and_the_line_moves_on(cli, wait_until, tmp_path):
    marker = tmp_path / "cancelled-ran"
    holder = cli.spawn_gated("s", "--serial")
    cli.wait_state("s", "EXECUTING")
    victim = cli.spawn_run("--id", "s", "--serial", "--tag", "victim", "--", "touch", str(marker))
    cli.wait_state("victim", "QUEUED")
    after = cli.spawn_gated("s", "--serial", "--tag", "after")
    wait_until(lambda: sum(r["state"] == "QUEUED" for r in cli.ps("s")) == 2)
    assert cli.taro("stop", "victim").returncode == 0
    assert victim.wait(10) == NOT_EXECUTED_EXIT["CANCELLED"] == 104
    assert not marker.exists()
    cli.release(holder)
    cli.wait_state("after", "EXECUTING")
    cli.release(after)
    assert after.wait(10) == 0
    (h,) = cli.history("victim")
    assert h["status"] == "CANCELLED" and h["outcome"] == "ABORTED" and h["started_at"] is None


def test_taro_wait_queued(cli):
    holder = cli.spawn_gated("wq", "--serial")
    cli.wait_state("wq", "EXECUTING")
    w = cli.spawn(["taro", "wait", "wq", "QUEUED", "--timeout", "20"])
    cli.spawn_run("--id", "wq", "--serial", "--", "true")
    assert w.wait(20) == 0
    assert b"QUEUED" in w.stdout.read()
    cli.release(holder)


def test_gate_comes_before_the_queue(cli, wait_until):
    # A pending run holds no ticket: runs arriving later get their slot first (DESIGN §4).
    holder = cli.spawn_gated("g", "--serial")
    cli.wait_state("g", "EXECUTING")
    gated = cli.spawn_run("--id", "g", "--serial", "--pending", "go", "--tag", "gated", "--", "true")
    r = cli.wait_state("gated", "PENDING")
    assert "ticket" not in r["coordination"]
    later = cli.spawn_run("--id", "g", "--serial", "--tag", "later", "--", "true")
    cli.wait_state("later", "QUEUED")
    assert cli.taro("release", "go").returncode == 0
    cli.wait_state("gated", "QUEUED")
    cli.release(holder)
    assert later.wait(10) == 0 and gated.wait(10) == 0
    runs = {r.tags[0] if r.tags else "holder": r for r in stored("g")}
    assert runs["later"].started_at < runs["gated"].started_at


def test_many_quick_runs_through_a_serial_queue_lose_no_wakeup(cli):
    # Handoffs at full speed: every end must wake the next run, or this hangs.
    procs = [cli.spawn_run("--id", "fast", "--serial", "--", "true") for _ in range(15)]
    assert [p.wait(30) for p in procs] == [0] * 15
    runs = stored("fast")
    assert [r.status for r in runs] == ["COMPLETED"] * 15
    assert max_overlap(runs) == 1


@pytest.mark.slow
def test_forty_runs_through_max_concurrent_three(cli):
    procs = [
        cli.spawn_run("--id", "batch", "--max-concurrent", "3", "--", "sleep", "0.1", stdout=subprocess.DEVNULL)
        for _ in range(40)
    ]
    assert [p.wait(120) for p in procs] == [0] * 40
    runs = stored("batch")
    assert len(runs) == 40
    assert all(r.status == "COMPLETED" for r in runs)
    assert max_overlap(runs) == 3  # never more than 3, and the queue did fill the slots
    tickets = [r.coord["ticket"] for r in runs]
    assert sorted(tickets) == list(range(1, 41))
    # FIFO: slots are granted in arrival (ticket) order, each grant in its own transaction ...
    by_grant = sorted(runs, key=lambda r: r.coord["slot_at"])
    assert [r.coord["ticket"] for r in by_grant] == sorted(tickets)
    # ... and a run only starts once a slot is free: the k-th start follows the (k-3)-th end
    starts = sorted(r.started_at for r in runs)
    ends = sorted(r.ended_at for r in runs)
    assert all(starts[k] >= ends[k - 3] for k in range(3, 40))
