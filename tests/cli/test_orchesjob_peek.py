"""The lean paths of orchesjob: a start that finds its key held answers from one read of the
database file (runtools.orchesjob.peek), and the everyday commands import nothing heavy."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

from cli.test_orchesjob import BIN, OJ, gate, oj, open_gate, wait_until  # noqa: F401 - oj is a fixture
from runtools.env.local import LocalEnvironment
from runtools.model.run import RunRecord
from runtools.model.status import Stage
from runtools.orchesjob import DB_NAME
from runtools.orchesjob.peek import ACTIVE_OF_KEY, lease_path, live_holder


def test_live_holder_is_the_environments_active_run(oj: OJ, tmp_path: Path) -> None:  # noqa: F811
    fifo, cmd = gate(tmp_path)
    d = oj.ok("start", "--run-key", "p", "--", *cmd)
    with LocalEnvironment(str(oj.home), db_name=DB_NAME) as env:
        [active] = [r for r in env.active_runs() if r.run_key == "p"]
        held = live_holder(str(oj.home), "p")
        assert held is not None and held.run_id == d["job_id"] == active.run_id
        assert held.to_dict() == active.to_dict()
        assert lease_path(str(oj.home), held.instance_id) == env._lease_path(held)  # the layout it relies on
        assert env.lease_alive(held)
    assert live_holder(str(oj.home), "other") is None
    open_gate(fifo)
    wait_until(lambda: oj.status("p")["status"] == "SUCCEEDED", what="the job's end")
    assert live_holder(str(oj.home), "p") is None


def test_live_holder_is_none_without_a_database(tmp_path: Path) -> None:
    assert live_holder(str(tmp_path / "nowhere"), "k") is None
    assert not (tmp_path / "nowhere").exists()


def test_a_run_whose_lease_is_gone_is_not_a_holder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with LocalEnvironment(str(home), db_name=DB_NAME) as env, env.transaction() as tx:
        tx.insert(RunRecord(job_id="orchesjob", run_id="dead", created_at=time.time(), stage=Stage.RUNNING,
                            run_key="k", pid=1, child_pid=2))
    assert live_holder(str(home), "k") is None  # the ordinary way (the worker's claim) ends it LOST


def test_a_start_on_a_dead_holder_starts_a_new_job(oj: OJ) -> None:  # noqa: F811
    oj.ok("status", "--running")  # reads as empty, creates nothing: the transaction below creates it
    with LocalEnvironment(str(oj.home), db_name=DB_NAME) as env, env.transaction() as tx:
        tx.insert(RunRecord(job_id="orchesjob", run_id="0d0d0d0d-0000-4000-8000-000000000000",
                            created_at=time.time(), stage=Stage.RUNNING, run_key="k", attempt_no=1, pid=1,
                            child_pid=2))
    d = oj.ok("start", "--run-key", "k", "--sync", "--", "true")
    assert (d["accepted"], d["existing"], d["status"], d["attempt_no"]) == (True, False, "SUCCEEDED", 2)
    assert d["rerun_of_job_id"] == "0d0d0d0d-0000-4000-8000-000000000000"


def test_the_read_uses_the_active_runs_index(oj: OJ) -> None:  # noqa: F811
    oj.ok("start", "--run-key", "x", "--sync", "--", "true")  # create the database (a read creates nothing)
    with sqlite3.connect(oj.home / DB_NAME) as c:
        plan = " ".join(str(row) for row in c.execute(f"EXPLAIN QUERY PLAN {ACTIVE_OF_KEY}", ("k",)))
    assert "runs_active" in plan, plan


HEAVY = ("json", "re", "argparse", "enum", "functools", "typing", "datetime", "subprocess", "uuid", "signal",
         "shutil", "socket")


def imported(oj: OJ, *args: str) -> set[str]:  # noqa: F811
    env = {**oj.env(), "PYTHONPROFILEIMPORTTIME": "1"}  # the console script, as users run it
    p = subprocess.run([str(BIN / "orchesjob"), *args], capture_output=True, text=True, env=env, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}


def test_everyday_commands_import_nothing_heavy(oj: OJ, tmp_path: Path) -> None:  # noqa: F811
    fifo, cmd = gate(tmp_path)
    d = oj.ok("start", "--run-key", "h", "--", *cmd)
    try:
        held = imported(oj, "start", "--run-key", "h", "--", *cmd)
        assert not held & set(HEAVY), held & set(HEAVY)
        # one read through the store and a lease check: the environment itself is not loaded
        loaded = {"runtools.env.local.environment", "runtools.env.local.events", "runtools.env.local.control"}
        assert not held & loaded, sorted(held & loaded)
        for args in (("status", "--run-key", "h"), ("status", "--job-id", d["job_id"]), ("status", "--running")):
            mods = imported(oj, *args)
            assert not mods & set(HEAVY), (args, mods & set(HEAVY))
    finally:
        open_gate(fifo)
    wait_until(lambda: oj.status("h")["status"] == "SUCCEEDED", what="the job's end")
    mods = imported(oj, "logs", "--run-key", "h")
    assert not mods & set(HEAVY), mods & set(HEAVY)


def test_output_is_json_dumps_indent_2(oj: OJ) -> None:  # noqa: F811
    d = oj.ok("start", "--run-key", "ü-☃", "--sync", "--", "sh", "-c", "exit 3")
    p = oj("status", "--run-key", "ü-☃")
    assert p.stdout == json.dumps(json.loads(p.stdout), indent=2) + "\n"
    assert json.loads(p.stdout)["exit_code"] == 3 == d["exit_code"]
    p = oj("status", "--run-key", "ü-☃", "--all")
    assert p.stdout == json.dumps(json.loads(p.stdout), indent=2) + "\n"
    p = oj("clean", "--all", "--dry-run")
    assert p.stdout == json.dumps(json.loads(p.stdout), indent=2) + "\n"
