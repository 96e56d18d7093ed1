"""Mutual exclusion (-x, --excl-group), --requires and --after (black box)."""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from runtools.model.status import NOT_EXECUTED_EXIT


def test_mutual_exclusion_ends_overlap_while_the_group_executes(cli, wait_until, tmp_path):
    marker = tmp_path / "second-ran"
    lp = cli.spawn(["taro", "listen", "--json", "backup"])
    wait_until(lambda: cli.listeners() >= 1)
    holder = cli.spawn_gated("backup", "-x")
    h = cli.wait_state("backup", "EXECUTING")
    assert h["coordination"] == {"excl_group": "backup", "mutex": True}
    p = cli.run("-x", "--id", "backup", "--", "touch", str(marker))
    assert p.returncode == NOT_EXECUTED_EXIT["OVERLAP"] == 100
    assert not marker.exists()
    cli.release(holder)
    assert holder.wait(10) == 0
    # free again
    assert cli.run("-x", "--id", "backup", "--", "true").returncode == 0
    statuses = [r["status"] for r in cli.history("backup")]
    assert statuses == ["COMPLETED", "OVERLAP", "COMPLETED"]
    lines = cli.read_lines(lp, lambda line: json.loads(line)["event"] == "overlap")
    ev = json.loads(lines[-1])
    assert ev["detail"] == {"group": "backup", "holder": h["instance_id"]}


def test_excl_group_spans_jobs_and_plain_runs_of_the_job_count(cli):
    holder = cli.spawn_gated("writer-a", "-x", "--excl-group", "db")
    cli.wait_state("writer-a", "EXECUTING")
    assert cli.run("-x", "--excl-group", "db", "--id", "writer-b", "--", "true").returncode == 100
    assert cli.run("-x", "--id", "writer-b", "--", "true").returncode == 0  # its own group is free
    cli.release(holder)
    plain = cli.spawn_gated("report")  # no -x: still a run of the job executing
    cli.wait_state("report", "EXECUTING")
    assert cli.run("-x", "--id", "report", "--", "true").returncode == 100
    cli.release(plain)


@pytest.mark.slow
def test_fifty_simultaneous_mutually_exclusive_runs_execute_exactly_once(cli, wait_until, tmp_path):
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    # The one that executes blocks on the fifo until every other run has decided.
    procs = [
        cli.spawn_run("-x", "--id", "once", "--", "cat", str(fifo), stdout=subprocess.DEVNULL)
        for _ in range(50)
    ]
    wait_until(lambda: sum(p.poll() is not None for p in procs) >= 49, 90, "49 runs to end")
    assert sorted(p.returncode for p in procs if p.returncode is not None) == [100] * 49

    def open_writer() -> int | None:  # succeeds once the executing run's `cat` has the fifo open
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            assert e.errno == errno.ENXIO
            return None

    os.close(wait_until(open_writer, 30, "the executing run to open the fifo"))
    assert [p.wait(30) for p in procs].count(0) == 1
    h = cli.history("once")
    assert len(h) == 50
    assert sorted(r["status"] for r in h) == ["COMPLETED"] + ["OVERLAP"] * 49
    assert [r["started_at"] is not None for r in h].count(True) == 1


# -- --requires -----------------------------------------------------------------------------


def test_requires_runs_only_while_a_matching_run_is_active(cli, tmp_path):
    marker = tmp_path / "ran"
    p = cli.run("--id", "child", "--requires", "parent", "--", "touch", str(marker))
    assert p.returncode == NOT_EXECUTED_EXIT["UNSATISFIED"] == 103
    assert not marker.exists()
    h = cli.history("child")[0]
    assert h["status"] == "UNSATISFIED" and "parent" in h["error"]
    parent = cli.spawn_gated("parent")
    cli.wait_state("parent", "EXECUTING")
    assert cli.run("--id", "child", "--requires", "parent", "--", "touch", str(marker)).returncode == 0
    assert marker.exists()
    # every pattern must be satisfied
    assert cli.run("--id", "child", "--requires", "parent", "--requires", "nope*", "--", "true").returncode == 103
    cli.release(parent)


# -- --after --------------------------------------------------------------------------------


def test_after_waits_for_the_active_run_then_executes_if_it_succeeded(cli):
    first = cli.spawn_gated("extract")
    cli.wait_state("extract", "EXECUTING")
    later = cli.spawn_run("--id", "load", "--after", "extract", "--", "true")
    w = cli.wait_state("load", "WAITING")
    assert w["detail"].startswith("WAITING for extract@")
    cli.release(first)
    assert first.wait(10) == 0
    assert later.wait(10) == 0
    runs = {r["job_id"]: r for r in cli.history()}
    assert runs["load"]["started_at"] > runs["extract"]["ended_at"]


def test_after_a_failed_predecessor_is_unsatisfied(cli, tmp_path):
    marker = tmp_path / "ran"
    first = cli.spawn_gated("extract", after="exit 3")
    cli.wait_state("extract", "EXECUTING")
    later = cli.spawn_run("--id", "load", "--after", "extract", "--", "touch", str(marker))
    cli.wait_state("load", "WAITING")
    cli.release(first)
    assert first.wait(10) == 3
    assert later.wait(10) == NOT_EXECUTED_EXIT["UNSATISFIED"]
    assert not marker.exists()
    h = cli.history("load")[0]
    assert h["status"] == "UNSATISFIED" and "FAILED" in h["error"]


def test_after_looks_at_the_most_recent_ended_run(cli):
    assert cli.run("--id", "a", "--", "false").returncode == 1
    assert cli.run("--id", "b", "--after", "a", "--", "true").returncode == 103
    assert cli.run("--id", "a", "--", "true").returncode == 0
    assert cli.run("--id", "b", "--after", "a", "--", "true").returncode == 0


def test_after_with_no_run_ever_has_nothing_to_wait_for(cli):
    # nothing ahead and nothing ended: nothing holds it back (it used to wait forever)
    assert cli.run("--id", "b", "--after", "a", "--", "true").returncode == 0
    assert cli.run("--id", "c", "--after", "c", "--", "true").returncode == 0  # only itself matches
    assert cli.history("b")[0]["status"] == "COMPLETED"


def test_after_timeout_ends_timeout_without_executing(cli):
    ahead = cli.spawn_gated("a")
    cli.wait_state("a", "EXECUTING")
    p = cli.run("--id", "b", "--after", "a", "--after-timeout", "0.2", "--", "true")
    assert p.returncode == NOT_EXECUTED_EXIT["TIMEOUT"] == 106
    h = cli.history("b")[0]
    assert h["status"] == "TIMEOUT" and h["started_at"] is None
    cli.release(ahead)
    assert ahead.wait(10) == 0


def test_two_runs_after_their_own_job_run_one_after_the_other(cli):
    assert cli.run("--id", "chain", "--", "true").returncode == 0
    first = cli.spawn_gated("chain", "--after", "chain")
    cli.wait_state("chain", "EXECUTING")
    second = cli.spawn_run("--id", "chain", "--after", "chain", "--", "true")
    cli.wait_state("chain", "WAITING")
    cli.release(first)
    assert first.wait(10) == 0 and second.wait(10) == 0
