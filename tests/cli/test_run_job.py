"""`run job`: options, exit codes, what is recorded, and bad input (black box, subprocess)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

RUN_KEYS = {
    "instance_id", "job_id", "run_id", "stage", "state", "status", "outcome", "exit_code", "created_at",
    "started_at", "ended_at", "duration_s", "tags", "host", "pid", "command", "warnings", "progress",
}


def only(runs: list[dict]) -> dict:
    assert len(runs) == 1, runs
    return runs[0]


def script(path: Path, body: str, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


# -- the first run ---------------------------------------------------------------------------


def test_hello_prints_exits_zero_and_is_recorded(cli):
    p = cli.run("--id", "hello", "--", "echo", "hi")
    assert (p.returncode, p.stdout, p.stderr) == (0, "hi\n", "")
    r = only(cli.history())
    assert RUN_KEYS <= r.keys()
    assert r["instance_id"] == f"hello@{r['run_id']}"
    assert (r["job_id"], r["stage"], r["state"], r["status"], r["outcome"], r["exit_code"]) == (
        "hello", "ENDED", None, "COMPLETED", "SUCCESS", 0)
    assert r["command"] == ["echo", "hi"]
    assert r["pid"] > 0 and r["host"]
    for k in ("created_at", "started_at", "ended_at"):
        assert r[k][-6] in "+-" and r[k][-3] == ":", r[k]  # ISO 8601 with offset
    assert r["created_at"] <= r["started_at"] <= r["ended_at"]
    assert r["duration_s"] >= 0
    assert cli.ps() == []


def test_taro_exec_is_run_job(cli):
    p = cli.taro("exec", "--id", "viaexec", "--tag", "t1", "--", "echo", "from exec")
    assert (p.returncode, p.stdout) == (0, "from exec\n")
    r = only(cli.history("viaexec"))
    assert (r["status"], r["tags"]) == ("COMPLETED", ["t1"])


def test_default_job_id_is_command_basename_without_extension(cli):
    script(cli.cwd / "my-task.sh", "echo task")
    p = cli.run("./my-task.sh")
    assert (p.returncode, p.stdout) == (0, "task\n")
    assert only(cli.history())["job_id"] == "my-task"


def test_tags_and_run_id(cli):
    p = cli.run("--id", "tagged", "--run-id", "r-42", "--tag", "nightly", "--tag", "db", "--", "true")
    assert p.returncode == 0, p.stderr
    r = only(cli.history())
    assert (r["instance_id"], r["run_id"], r["tags"]) == ("tagged@r-42", "r-42", ["nightly", "db"])
    assert only(cli.history("nightly"))["instance_id"] == "tagged@r-42"
    assert only(cli.history("tagged@r-4*"))["run_id"] == "r-42"


def test_streams_go_to_the_terminal_and_storage_separately(cli):
    p = cli.run("--id", "streams", "--", "sh", "-c", "echo out1; echo err1 >&2; echo out2")
    assert (p.returncode, p.stdout, p.stderr) == (0, "out1\nout2\n", "err1\n")
    r = only(cli.history())
    assert Path(r["stdout_path"]).read_text() == "out1\nout2\n"
    assert Path(r["stderr_path"]).read_text() == "err1\n"
    o = cli.taro("output", "streams")
    assert (o.returncode, o.stdout, o.stderr) == (0, "out1\nout2\n", "err1\n")


def test_bypass_output_leaves_output_alone_and_stores_nothing(cli, home):
    p = cli.run("-b", "--id", "bypass", "--", "sh", "-c", "echo visible; echo e >&2")
    assert (p.returncode, p.stdout, p.stderr) == (0, "visible\n", "e\n")
    r = only(cli.history())
    assert r["stdout_path"] is None and r["stderr_path"] is None
    assert not (home / "local" / "output" / "bypass").exists()
    o = cli.taro("output", "bypass")
    assert o.returncode == 3 and "bypass-output" in o.stderr


# -- exit codes ------------------------------------------------------------------------------


def test_exit_code_of_the_command_and_failed_status(cli):
    p = cli.run("--id", "three", "--", "sh", "-c", "exit 3")
    assert p.returncode == 3
    r = only(cli.history())
    assert (r["status"], r["outcome"], r["exit_code"]) == ("FAILED", "FAULT", 3)


def test_command_not_found_exits_127(cli):
    p = cli.run("--id", "missing", "--", "./no-such-command")
    assert p.returncode == 127
    assert p.stderr.count("\n") == 1 and "not found" in p.stderr
    r = only(cli.history())
    assert (r["status"], r["exit_code"]) == ("ERROR", 127)


def test_command_not_executable_exits_126(cli):
    script(cli.cwd / "noexec.sh", "echo never", mode=0o644)
    p = cli.run("./noexec.sh")
    assert p.returncode == 126, p.stderr
    assert "never" not in p.stdout
    assert only(cli.history())["exit_code"] == 126


def test_child_killed_by_signal_exits_128_plus_n(cli):
    p = cli.run("--id", "sig", "--", "sh", "-c", "kill -USR1 $$")
    assert p.returncode == 128 + 10
    r = only(cli.history())
    assert (r["status"], r["exit_code"]) == ("FAILED", 138)


def test_timeout_terms_the_group_and_exits_124(cli):
    p = cli.run("--id", "slow", "--timeout", "0.3", "--", "sleep", "30", timeout=10)
    assert p.returncode == 124
    r = only(cli.history())
    assert (r["status"], r["outcome"], r["exit_code"]) == ("TIMEOUT", "REJECTED", 124)
    assert r["duration_s"] < 5


def test_kill_after_kills_a_command_that_ignores_term(cli):
    # `trap "" TERM` makes sh and its sleep ignore TERM: only the KILL after --kill-after ends it.
    p = cli.run("--id", "stubborn", "--timeout", "0.2", "--kill-after", "0.3", "--",
                "sh", "-c", "trap '' TERM; sleep 30", timeout=10)
    assert p.returncode == 124
    r = only(cli.history())
    assert r["status"] == "TIMEOUT"
    assert 0.4 <= r["duration_s"] < 5


# -- warnings and progress -------------------------------------------------------------------


def test_output_warn_is_recorded(cli):
    p = cli.run("--id", "warny", "--output-warn", "ERR[A-Z]+", "--",
                "sh", "-c", "echo fine; echo ERROR disk full")
    assert p.returncode == 0
    r = only(cli.history())
    assert len(r["warnings"]) == 1 and "ERROR disk full" in r["warnings"][0]
    h = cli.taro("history")
    assert "ERROR disk full" in h.stdout


def test_time_warn_is_recorded_while_running(cli, wait_until):
    p = cli.spawn_gated("longish", "--time-warn", "0.1")
    run = wait_until(lambda: [r for r in cli.ps("longish") if r["warnings"]], what="time warning in ps")
    assert "exceeded" in run[0]["warnings"][0]
    cli.release(p)
    assert p.wait(10) == 0
    assert only(cli.history())["warnings"] == run[0]["warnings"]


@pytest.mark.parametrize("line, expected", [
    ("event=[downloading] completed=[3] total=[10] unit=[files]",
     {"event": "downloading", "completed": 3, "total": 10, "unit": "files"}),
    ("event=uploading completed=7 total=8", {"event": "uploading", "completed": 7, "total": 8}),
])
def test_progress_is_shown_in_ps(cli, wait_until, line, expected):
    p = cli.spawn_gated("prog", before=f"echo '{line}'")

    def progress():
        runs = cli.ps("prog")
        return runs and runs[0]["progress"]

    prog = wait_until(progress, what="progress in ps")
    assert {k: prog[k] for k in expected} == expected
    assert "prog" in cli.taro("ps").stdout
    cli.release(p)
    assert p.wait(10) == 0
    assert only(cli.history())["progress"]["event"] == expected["event"]


def test_run_is_recorded_from_its_first_moment(cli, wait_until):
    p = cli.spawn_gated("early")
    r = cli.wait_state("early", "EXECUTING")
    ps = only(cli.ps())
    assert (ps["instance_id"], ps["stage"], ps["state"], ps["status"]) == (
        r["instance_id"], "RUNNING", "EXECUTING", None)
    assert ps["ended_at"] is None
    assert only(cli.history("--active"))["instance_id"] == r["instance_id"]
    assert cli.history() == []  # history shows ended runs by default
    cli.release(p)
    assert p.wait(10) == 0
    assert only(cli.history())["status"] == "COMPLETED"


# -- detach ----------------------------------------------------------------------------------


def test_detach_prints_the_record_at_once_and_runs_in_background(cli, tmp_path, wait_until):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    p = cli.run("-d", "--id", "bg", "--", "sh", "-c", f"read _ < {gate}; echo done", timeout=15)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["job_id"] == "bg" and doc["stage"] in ("CREATED", "RUNNING") and doc["status"] is None
    iid = doc["instance_id"]
    assert only(cli.ps())["instance_id"] == iid
    with open(gate, "w") as g:  # opens once the command reads the fifo, then releases it
        g.write("go\n")
    wait_until(lambda: cli.history(iid), what="detached run to end")
    r = only(cli.history(iid))
    assert r["status"] == "COMPLETED"
    assert cli.taro("output", iid).stdout == "done\n"


# -- environments ----------------------------------------------------------------------------


def test_env_by_name(cli, home):
    assert cli.run("-e", "other", "--id", "in-other", "--", "true").returncode == 0
    assert (home / "other").is_dir()
    assert cli.history() == []
    assert only(cli.history("-e", "other"))["job_id"] == "in-other"


def test_env_from_runtools_env_variable(cli, home):
    env = {"RUNTOOLS_ENV": "fromvar"}
    assert cli.run("--id", "v", "--", "true", env=env).returncode == 0
    assert (home / "fromvar").is_dir()
    assert only(cli.json("history", env=env))["job_id"] == "v"
    assert cli.history() == []


def test_env_as_directory(cli, tmp_path):
    d = tmp_path / "some" / "dir"
    assert cli.run("-e", str(d), "--id", "indir", "--", "true").returncode == 0
    assert (d / "runs.db").exists()
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert only(cli.history("-e", str(d)))["job_id"] == "indir"
    assert cli.history() == []


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--no-such-flag", "--", "true"],
    [],
    ["--"],
    ["--timeout", "soon", "--", "true"],
    ["--kill-after", "-1", "--", "true"],
    ["--time-warn", "1x", "--", "true"],
    ["--id", "../x", "--", "true"],
    ["--id", "a b", "--", "true"],
    ["--run-id", "../../etc", "--", "true"],
    ["--tag", "has space", "--", "true"],
    ["--output-warn", "([", "--", "true"],
    ["-e", "bad name", "--id", "x", "--", "true"],
    ["--requires", "[x", "--", "true"],
    ["--after", "a b", "--", "true"],
])
def test_bad_input_is_one_line_exit_2_nothing_written(cli, home, args):
    p = cli.run(*args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stdout == ""
    assert not (home / "local" / "runs.db").exists() or cli.runs() == []
    assert not (home / "local" / "output").exists() or not any((home / "local" / "output").iterdir())


def test_unknown_subcommand_is_usage_error(cli):
    p = cli.exec(["run", "jbo", "--", "true"])
    assert p.returncode == 2 and p.stderr.count("\n") == 1
