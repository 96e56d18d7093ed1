"""kill -9 of a coordinated run's wrapper, in each state: what it held is freed, it ends LOST.

Documented choice (docs/coordination.md): the command inherits the run's lease, so while the
command of a killed wrapper still executes, the run keeps its slot / mutex (never two copies);
when it ends (or dies with it), the next run proceeds at once.
"""

from __future__ import annotations

import os
import signal
import time

from runtools.model.status import NOT_EXECUTED_EXIT


def stored(job: str):
    from runtools.env import open_environment
    from runtools.env.base import RunQuery
    from runtools.model.criteria import RunMatcher

    with open_environment() as env:
        return env.find_runs(RunQuery(matcher=RunMatcher.parse(job), ascending=True))


def kill9(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)


def lost(cli, pattern: str) -> list[dict]:
    return [r for r in cli.history(pattern) if r["status"] == "LOST"]


def test_killed_executing_holder_keeps_its_slot_until_its_command_ends(cli, wait_until):
    holder = cli.spawn_gated("nightly", "--serial")
    h = cli.wait_state("nightly", "EXECUTING")
    nxt = cli.spawn_run("--id", "nightly", "--serial", "--tag", "next", "--", "true")
    cli.wait_state("next", "QUEUED")
    kill9(holder)
    # the command still runs and holds the lease: the run is still executing, the next one waits
    states = {r["instance_id"]: r["state"] for r in cli.ps("nightly")}
    assert states[h["instance_id"]] == "EXECUTING"
    assert cli.wait_state("next", "QUEUED")
    os.killpg(h["child_pid"], signal.SIGKILL)
    t0 = time.time()
    assert nxt.wait(10) == 0
    (started,) = [r for r in stored("nightly") if r.tags == ["next"]]
    assert started.started_at - t0 < 1.0
    (gone,) = lost(cli, "nightly")
    assert gone["instance_id"] == h["instance_id"]


def test_killed_queued_run_leaves_the_line_at_once(cli, wait_until):
    holder = cli.spawn_gated("q", "--serial")
    cli.wait_state("q", "EXECUTING")
    first = cli.spawn_run("--id", "q", "--serial", "--tag", "first", "--", "true")
    f = cli.wait_state("first", "QUEUED")
    second = cli.spawn_run("--id", "q", "--serial", "--tag", "second", "--", "true")
    wait_until(lambda: cli.wait_state("second", "QUEUED")["detail"] == "QUEUED 2nd of 2 in group q")
    kill9(first)
    # the run behind it watches its lease: it notices at once, ends it LOST and moves up
    wait_until(lambda: cli.wait_state("second", "QUEUED")["detail"] == "QUEUED 1st of 1 in group q", 1.0,
               "the second run to move up")
    assert [r.status for r in stored("first")] == ["LOST"]
    assert stored("first")[0].instance_id == f["instance_id"]
    cli.release(holder)
    t0 = time.time()
    assert second.wait(10) == 0
    assert stored("second")[0].started_at - t0 < 1.0


def test_killed_slot_holder_with_its_command_frees_the_slot_within_a_second(cli, wait_until):
    holder = cli.spawn_gated("pair", "--max-concurrent", "2")
    other = cli.spawn_gated("pair", "--max-concurrent", "2")
    wait_until(lambda: [str(r["state"]) for r in cli.ps("pair")] == ["EXECUTING"] * 2, what="2 executing")
    (victim,) = [r for r in cli.ps("pair") if r["pid"] == holder.pid]
    waiting = cli.spawn_run("--id", "pair", "--max-concurrent", "2", "--tag", "w", "--", "true")
    cli.wait_state("w", "QUEUED")
    os.kill(holder.pid, signal.SIGKILL)
    os.killpg(victim["child_pid"], signal.SIGKILL)
    t0 = time.time()
    holder.wait(5)
    assert waiting.wait(10) == 0
    assert stored("w")[0].started_at - t0 < 1.0
    assert [r["instance_id"] for r in lost(cli, "pair")] == [victim["instance_id"]]
    cli.release(other)
    assert other.wait(10) == 0


def test_killed_pending_run_holds_nothing_and_ends_lost(cli):
    pending = cli.spawn_run("--id", "gated", "-x", "--pending", "never", "--", "true")
    p = cli.wait_state("gated", "PENDING")
    kill9(pending)
    assert cli.run("-x", "--id", "gated", "--", "true").returncode == 0
    (gone,) = lost(cli, "gated")
    assert gone["instance_id"] == p["instance_id"] and gone["started_at"] is None


def test_killed_waiting_run_ends_lost(cli):
    pred = cli.spawn_gated("pred")
    cli.wait_state("pred", "EXECUTING")
    waiting = cli.spawn_run("--id", "succ", "--after", "pred", "--", "true")
    w = cli.wait_state("succ", "WAITING")
    kill9(waiting)
    (gone,) = lost(cli, "succ")
    assert gone["instance_id"] == w["instance_id"]
    cli.release(pred)


def test_killed_mutex_holder_never_lets_two_copies_execute(cli, wait_until):
    holder = cli.spawn_gated("single", "-x")
    h = cli.wait_state("single", "EXECUTING")
    kill9(holder)
    # its command still executes: a new run of the group must not start a second copy
    assert cli.run("-x", "--id", "single", "--", "true").returncode == NOT_EXECUTED_EXIT["OVERLAP"]
    os.killpg(h["child_pid"], signal.SIGKILL)
    wait_until(lambda: lost(cli, "single"), 5, "the killed run to end LOST once its command is gone")
    assert cli.run("-x", "--id", "single", "--", "true").returncode == 0
    statuses = sorted(r["status"] for r in cli.history("single"))
    assert statuses == ["COMPLETED", "LOST", "OVERLAP"]


def test_killed_runs_anywhere_in_a_long_line_do_not_stall_it(cli, wait_until):
    # Runs far back in line wait without listening to events (docs/coordination.md): a death
    # there must be noticed through the lease of the run behind it, and the line must flow on.
    holder = cli.spawn_gated("line", "--serial")
    cli.wait_state("line", "EXECUTING")
    procs = []
    for i in range(8):
        procs.append(cli.spawn_run("--id", "line", "--serial", "--tag", f"t{i}", "--", "true"))
        wait_until(lambda n=i + 1: sum(r["state"] == "QUEUED" for r in cli.ps("line")) == n)
    kill9(procs[1])
    kill9(procs[6])
    cli.release(holder)
    for i, p in enumerate(procs):
        if i not in (1, 6):
            assert p.wait(15) == 0
    runs = sorted(stored("line"), key=lambda r: r.coord["ticket"])
    assert [r.status for r in runs] == ["COMPLETED"] * 2 + ["LOST"] + ["COMPLETED"] * 4 + ["LOST", "COMPLETED"]
    done = [r for r in runs if r.status == "COMPLETED"]
    assert sorted(done, key=lambda r: r.started_at) == done  # still in arrival order
