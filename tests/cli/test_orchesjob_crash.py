"""orchesjob under races and crashes: one run per key, never a second copy, never a stuck key."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from cli.test_orchesjob import BIN, OJ, gate, oj, open_gate, wait_until  # noqa: F401 - oj is a fixture
from conftest import pid_alive


def test_32_simultaneous_starts_accept_exactly_one(oj: OJ, tmp_path: Path) -> None:  # noqa: F811
    fifo, cmd = gate(tmp_path)
    oj.ok("status", "--running")  # create the state directory first, as a deployed host has it
    procs = [oj.spawn("start", "--run-key", "race", "--", *cmd) for _ in range(32)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    assert sum(o["accepted"] for o in outs) == 1
    assert len({o["job_id"] for o in outs}) == 1
    assert all(o["existing"] for o in outs if not o["accepted"])
    assert len(oj.ok("status", "--run-key", "race", "--all")) == 1
    open_gate(fifo)


def test_killed_worker_never_lets_a_second_copy_start(oj: OJ, tmp_path: Path) -> None:  # noqa: F811
    fifo, cmd = gate(tmp_path)
    d = oj.ok("start", "--run-key", "w", "--", *cmd)
    os.kill(d["worker_pid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(d["worker_pid"]), what="worker gone")
    again = oj.ok("start", "--run-key", "w", "--", *cmd)
    assert (again["existing"], again["job_id"], again["status"]) == (True, d["job_id"], "RUNNING")
    assert oj.status("w")["status"] == "RUNNING"  # the command still runs: not LOST
    open_gate(fifo)  # now the command ends, with nobody to record it
    wait_until(lambda: oj.status("w")["status"] == "LOST", what="LOST once the command is gone")
    new = oj.ok("start", "--run-key", "w", "--sync", "--", "true")
    assert (new["accepted"], new["attempt_no"], new["rerun_of_job_id"]) == (True, 2, d["job_id"])


def test_killed_starter_leaves_the_job_running_and_recorded(oj: OJ, tmp_path: Path) -> None:  # noqa: F811
    fifo, cmd = gate(tmp_path)
    starter = oj.spawn("start", "--run-key", "s", "--sync", "--", *cmd)
    d = wait_until(lambda: _running(oj, "s"), what="the job to run")
    starter.kill()
    starter.communicate()
    assert oj.status("s")["status"] == "RUNNING"
    open_gate(fifo)
    wait_until(lambda: oj.status("s")["status"] == "SUCCEEDED", what="the job to end, recorded by its worker")
    assert oj.status("s")["job_id"] == d["job_id"]


def _running(o: OJ, key: str) -> dict | None:
    p = o("status", "--run-key", key)
    if p.returncode != 0:
        return None
    d = json.loads(p.stdout)
    return d if d["status"] == "RUNNING" else None


DIES_BEFORE_LAUNCH = r"""
import os, signal, sys
from runtools.env.local import LocalEnvironment
from runtools.job.instance import JobRun
from runtools.job.phase import ExecutionPhase
from runtools.job.runkey import RunKeyClaim

class Die(ExecutionPhase):
    def execute(self, ctx):
        os.kill(os.getpid(), signal.SIGKILL)  # killed after the run was recorded, before launching

if os.path.exists(os.path.join(sys.argv[1], "postgres.url")):  # a home on PostgreSQL
    from runtools.env import open_environment
    env = open_environment(sys.argv[1])
else:
    env = LocalEnvironment(sys.argv[1], db_name="orchesjob.db")
JobRun(env, "orchesjob", Die(), admission=[RunKeyClaim("half")], run_id=sys.argv[2], run_key="half",
       command=["true"]).run()
"""


def test_start_killed_half_way_does_not_leave_the_key_stuck(oj: OJ) -> None:  # noqa: F811
    oj.ok("status", "--running")
    job_id = "0b9c3f0e-1111-4222-8333-944445555666"
    p = subprocess.run([sys.executable, "-c", DIES_BEFORE_LAUNCH, str(oj.home), job_id], capture_output=True,
                       timeout=30)
    assert p.returncode == -signal.SIGKILL, p.stderr
    s = oj.status("half")
    assert (s["job_id"], s["status"]) == (job_id, "LOST")
    new = oj.ok("start", "--run-key", "half", "--sync", "--", "true")
    assert (new["accepted"], new["status"], new["attempt_no"]) == (True, "SUCCEEDED", 2)


def test_starter_killed_at_any_point_never_sticks(oj: OJ) -> None:  # noqa: F811
    """Kill the starter's whole session the moment it has forked (the worker is already on
    its own): the key ends up with a finished job, never a STARTING one."""
    oj.ok("status", "--running")
    for i in range(5):
        p = subprocess.Popen([str(BIN / "orchesjob"), "start", "--run-key", f"k{i}", "--", "true"],
                             env=oj.env(), start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        wait_until(lambda p=p: _children(p.pid) or p.poll() is not None, what="the fork")
        with contextlib.suppress(ProcessLookupError):  # it may have finished already
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        r = oj(*("status", "--run-key", f"k{i}"))
        if r.returncode == 3:
            continue  # killed before the worker recorded anything: nothing to be stuck
        wait_until(lambda i=i: oj.status(f"k{i}")["status"] in ("SUCCEEDED", "LOST"), what="a final status")


def _children(pid: int) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return False
