"""`taro stop` of a run whose wrapper was killed (`kill -9`) while its command runs on.

The command keeps the run's lease, so the run stays active; nobody serves its control socket.
`taro stop` then signals the command's process group itself — only once the recorded start time
proves the pid is still that command — TERM, then KILL after --kill-after, and the run ends
STOPPED (INTERRUPTED with --interrupt) with who asked and when, not LOST.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from cli.test_orchesjob import OJ, gate, oj  # noqa: F401 - oj is a fixture
from conftest import wait_until


def _start_time(pid: int) -> str | None:
    """Start time field of /proc/PID/stat, or None if the process is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def _orphan(cli, job: str, command: str) -> dict:
    """A run of `job` executing `command`, whose wrapper was then killed with -9."""
    wrapper = cli.spawn_run("--id", job, "--", "sh", "-c", command)
    run = cli.wait_state(job, "EXECUTING")
    assert run["pid"] == wrapper.pid and run["child_pid"]
    wrapper.kill()  # SIGKILL: no end is recorded, the command runs on
    wrapper.wait(10)
    assert _start_time(run["child_pid"]) is not None
    assert [r["instance_id"] for r in cli.ps()] == [run["instance_id"]]  # still holds its lease: active
    return run


@pytest.mark.parametrize(("flags", "status", "action"), [((), "STOPPED", "stopped"),
                                                          (("--interrupt",), "INTERRUPTED", "interrupted")])
def test_stop_of_an_orphaned_command_ends_it_with_the_asked_status(cli, flags, status, action):
    run = _orphan(cli, "orphan", "sleep 600")
    p = cli.taro("stop", "orphan", *flags)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"{action} {run['instance_id']} (its wrapper was gone")
    assert _start_time(run["child_pid"]) is None  # the command is gone
    assert cli.ps() == []
    (ended,) = cli.history("orphan")
    assert (ended["status"], ended["instance_id"]) == (status, run["instance_id"])
    (act,) = ended["actions"]
    assert act["action"] == action and "taro" in act["by"] and "wrapper was gone" in act["reason"]
    assert "wrapper was gone" in ended["error"] and ended["ended_at"] is not None
    assert ended["exit_code"] is None  # not our child: its exit status is unknown, and not made up


def test_a_command_that_ignores_term_is_killed_after_kill_after(cli):
    run = _orphan(cli, "stubborn", "trap '' TERM; while :; do sleep 0.05; done")
    t0 = time.monotonic()
    p = cli.taro("stop", "stubborn", "--kill-after", "0.3s")
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 >= 0.3  # TERM was ignored: KILL came after the grace
    assert _start_time(run["child_pid"]) is None
    assert cli.history("stubborn")[0]["status"] == "STOPPED"


@pytest.mark.local_only("writes the local store's orphan-stop mark directly")
def test_a_stop_recorded_before_the_command_ended_is_not_lost(cli):
    """A reader that notices the end first (here: the command ends by itself right after the stop
    was recorded) still ends the run with the stop's status: the request is on the record."""
    from runtools.env import open_environment
    from runtools.env.local import store

    run = _orphan(cli, "racy", "sleep 600")
    with open_environment("local") as env, env.transaction() as tx:
        r = tx.get(run["instance_id"])
        r.extra[store.ORPHAN_STOP] = "STOPPED"
        tx.update(r)
    os.killpg(run["child_pid"], signal.SIGKILL)
    wait_until(lambda: _start_time(run["child_pid"]) is None, what="the command to end")
    wait_until(lambda: cli.ps() == [], what="the run to be reaped")
    assert cli.history("racy")[0]["status"] == "STOPPED"


@pytest.mark.local_only("plants a run with a local lease file")
def test_a_reused_pid_is_never_signalled(cli):
    """The recorded pid runs another process now (start time differs): hands off, exit 1."""
    from runtools.env import open_environment
    from runtools.env.local.lease import FileLease, lease_path
    from runtools.model.run import RunRecord
    from runtools.model.status import Stage, State

    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        with open_environment("local") as env:
            r = RunRecord("ghost", "r1", time.time(), stage=Stage.RUNNING, state=State.EXECUTING,
                          pid=2**22 + 1,  # a wrapper pid that does not exist (past pid_max)
                          child_pid=bystander.pid, child_start=1.0)  # not the bystander's start time
            env.writable_conn()
            os.makedirs(os.path.dirname(lease_path(env.dir, r.instance_id)), exist_ok=True)
            lease = FileLease(lease_path(env.dir, r.instance_id))  # held: the run is active
            with env.transaction() as tx:
                tx.insert(r)
        try:
            p = cli.taro("stop", "ghost", "--kill-after", "0.1s")
            assert p.returncode == 1
            assert "cannot be told safely from another process" in p.stderr and p.stderr.count("\n") == 1
            assert bystander.poll() is None  # untouched
        finally:
            lease.release()
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.local_only("hides the wrapper's unix socket; postgres control goes through the server")
def test_a_live_wrapper_out_of_reach_is_not_bypassed(cli):
    """Another XDG_RUNTIME_DIR cannot reach the wrapper's socket: the wrapper is alive (its
    start time is before its command's), so its command is not signalled behind its back."""
    cli.spawn_gated("reachable")
    run = cli.wait_state("reachable", "EXECUTING")
    other = tempfile.mkdtemp(prefix="rt-other-", dir="/tmp")
    try:
        p = cli.taro("stop", "reachable", env={"XDG_RUNTIME_DIR": other})
    finally:
        shutil.rmtree(other)
    assert p.returncode == 1 and "may be alive" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert _start_time(run["child_pid"]) is not None
    assert cli.ps()[0]["instance_id"] == run["instance_id"]
    assert cli.taro("stop", "reachable").returncode == 0  # from the wrapper's own runtime dir


def test_orchesjob_abort_stops_the_command_of_a_killed_worker(oj: OJ, tmp_path: Path) -> None:  # noqa: F811
    _fifo, cmd = gate(tmp_path)
    d = oj.ok("start", "--run-key", "w", "--", *cmd)
    os.kill(d["worker_pid"], signal.SIGKILL)
    wait_until(lambda: _start_time(d["worker_pid"]) is None, what="the worker to die")
    target = d["target_pid"]
    assert _start_time(target) is not None and oj.status("w")["status"] == "RUNNING"
    a = oj.ok("abort", "--run-key", "w", "--grace-seconds", "1")
    assert a["sent_term_target"] and a["status"] == "ABORTED"
    assert _start_time(target) is None
    assert oj.status("w")["status"] == "ABORTED"  # the gate was never opened: stopped, not finished
