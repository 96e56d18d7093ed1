"""Waits answer from the current state (black box): `taro wait` on a run that already ended (or can
no longer reach the state), `--after` with nothing to wait for, extreme durations; and the stored
`exit_code` of every run equals what its wrapper exited with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtools.model.status import NOT_EXECUTED_EXIT

# -- taro wait: already reached, or unreachable -----------------------------------------------


def detached(cli, *args: str) -> dict:
    p = cli.run("-d", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_wait_on_a_detached_run_never_hangs_whether_it_ended_first_or_not(cli):
    """The CI pattern: start detached, then wait. The run may end before `taro wait` starts."""
    r = detached(cli, "--id", "ci", "--", "sh", "-c", "exit 3")
    p = cli.taro("wait", r["instance_id"], "--json", "--timeout", "30d", timeout=15)
    assert p.returncode == 0, p.stderr
    ev = json.loads(p.stdout)
    assert (ev["instance_id"], ev["status"], ev["run"]["exit_code"]) == (r["instance_id"], "FAILED", 3)
    # now surely ended: answered at once, with no --timeout at all
    p = cli.taro("wait", r["instance_id"], timeout=15)
    assert p.returncode == 0 and "FAILED" in p.stdout and "exit=3" in p.stdout


@pytest.mark.parametrize(
    ("state", "code"),
    [("ended", 0), ("failed", 0), ("fault", 0), ("executing", 0), ("running", 0), ("created", 0),
     ("completed", 4), ("success", 4), ("stopped", 4), ("queued", 4), ("pending", 4)],
)
def test_wait_on_an_ended_run_answers_at_once(cli, state, code):
    assert cli.run("--id", "done", "--", "false").returncode == 1
    p = cli.taro("wait", "done", state, "--json", timeout=15)
    assert p.returncode == code, p.stderr
    ev = json.loads(p.stdout)  # the run that answered, either way
    assert (ev["event"], ev["job_id"], ev["status"]) == ("current", "done", "FAILED")
    if code == 4:
        assert p.stderr.count("\n") == 1 and "can no longer reach" in p.stderr


def test_wait_judges_the_latest_run_and_a_disabled_run_never_executed(cli):
    assert cli.run("--id", "j", "--", "false").returncode == 1
    assert cli.run("--id", "j", "--", "true").returncode == 0
    assert cli.taro("wait", "j", "completed", timeout=15).returncode == 0
    assert cli.taro("disable", "off").returncode == 0
    assert cli.run("--id", "off", "--", "true").returncode == NOT_EXECUTED_EXIT["DISABLED"]
    assert cli.taro("wait", "off", "executing", timeout=15).returncode == 4
    assert cli.taro("wait", "off", "disabled", timeout=15).returncode == 0


def test_wait_for_a_run_that_does_not_exist(cli):
    p = cli.taro("wait", "nope@1j0000000000000", timeout=15)
    assert p.returncode == 3 and p.stderr.count("\n") == 1
    # a job pattern may still get a run: that waits (here until its --timeout)
    assert cli.taro("wait", "nope", "--timeout", "0.2", timeout=15).returncode == 124


def test_wait_for_an_active_run_that_ends_otherwise_gives_up(cli, wait_until):
    p = cli.spawn_gated("doomed", after="exit 3")
    r = cli.wait_state("doomed")
    w = cli.spawn(["taro", "wait", r["instance_id"], "completed", "--json", "--timeout", "30d"])
    wait_until(lambda: cli.listeners() >= 1, what="taro wait to listen")
    assert w.poll() is None
    cli.release(p)
    out, err = w.communicate(timeout=15)
    assert w.returncode == 4, err
    assert json.loads(out)["status"] == "FAILED"


def test_wait_for_an_active_run_already_in_the_state(cli):
    p = cli.spawn_gated("busy")
    r = cli.wait_state("busy")
    for state in ("executing", "running", "created"):
        w = cli.taro("wait", r["instance_id"], state, "--json", timeout=15)
        assert w.returncode == 0 and json.loads(w.stdout)["event"] == "current"
    cli.release(p)
    assert p.wait(10) == 0


# -- --after: nothing to wait for means run -------------------------------------------------


def test_after_matching_nothing_or_only_itself_runs(cli):
    assert cli.run("--id", "c", "--after", "c", "--", "true").returncode == 0
    assert cli.run("--id", "d", "--after", "no-such-*", "--after", "d", "--", "true").returncode == 0
    # a second self-matching run sees the first one's success
    assert cli.run("--id", "c", "--after", "c", "--", "true").returncode == 0
    assert [r["status"] for r in cli.history("c")] == ["COMPLETED", "COMPLETED"]


# -- durations far beyond what one blocking call takes ---------------------------------------


def test_long_pending_timeout_released(cli):
    p = cli.spawn_run("--id", "far", "--pending", "far", "--pending-timeout", "36500d", "--", "true")
    cli.wait_state("far", "PENDING")
    assert cli.taro("release", "far").returncode == 0
    assert p.wait(10) == 0


def test_long_after_timeout_and_wait_timeout(cli, wait_until):
    ahead = cli.spawn_gated("ahead")
    cli.wait_state("ahead")
    later = cli.spawn_run("--id", "later", "--after", "ahead", "--after-timeout", "36500d", "--", "true")
    cli.wait_state("later", "WAITING")
    w = cli.spawn(["taro", "wait", "ahead", "--timeout", "36500d"])
    wait_until(lambda: cli.listeners() >= 2, what="taro wait and the waiting run to listen")
    cli.release(ahead)
    assert ahead.wait(10) == 0 and later.wait(10) == 0 and w.wait(10) == 0


# -- exit_code stored == the wrapper's exit code, for every run --------------------------------


def test_every_run_stores_the_exit_code_its_wrapper_returned(cli, tmp_path):
    codes: dict[str, int] = {}

    def run(job: str, *opts: str, cmd: tuple[str, ...] = ("true",)) -> int:
        rc = cli.run("--id", job, *opts, "--", *cmd).returncode
        codes.setdefault(job, rc)
        return rc

    assert run("ok") == 0
    assert run("three", cmd=("sh", "-c", "exit 3")) == 3
    assert run("slow", "--timeout", "0.2", cmd=("sleep", "30")) == 124
    assert run("missing", cmd=("no-such-command-xyz",)) == 127
    assert run("killed", cmd=("sh", "-c", "kill -KILL $$")) == 137
    assert run("req", "--requires", "nothing-active") == NOT_EXECUTED_EXIT["UNSATISFIED"]
    assert run("gate", "--pending", "never", "--pending-timeout", "0.1") == NOT_EXECUTED_EXIT["TIMEOUT"]
    assert cli.taro("disable", "dis").returncode == 0
    assert run("dis") == NOT_EXECUTED_EXIT["DISABLED"]
    holder = cli.spawn_gated("excl", "-x")
    cli.wait_state("excl")
    assert run("overlap", "-x", "--excl-group", "excl") == NOT_EXECUTED_EXIT["OVERLAP"]
    # a run ahead that fails makes --after UNSATISFIED
    assert cli.run("--id", "pred", "--", "false").returncode == 1
    codes["pred"] = 1
    assert run("after", "--after", "pred") == NOT_EXECUTED_EXIT["UNSATISFIED"]
    cli.release(holder)
    assert holder.wait(10) == 0
    codes["excl"] = 0
    for job, how in (("denied", ("deny", "denied")), ("cancelled", ("stop", "-f", "cancelled"))):
        p = cli.spawn_run("--id", job, "--pending", "x", "--", "true")
        cli.wait_state(job, "PENDING")
        assert cli.taro(*how).returncode == 0
        codes[job] = p.wait(10)
    assert codes["denied"] == NOT_EXECUTED_EXIT["DENIED"] and codes["cancelled"] == NOT_EXECUTED_EXIT["CANCELLED"]
    # SIGINT to the wrapper while executing and while pending
    for job, opts in (("int-exec", ()), ("int-pending", ("--pending", "y"))):
        p = cli.spawn_run("--id", job, *opts, "--", "sleep", "30")
        cli.wait_state(job, "PENDING" if opts else "EXECUTING")
        os.kill(p.pid, signal.SIGINT)
        codes[job] = p.wait(10)
        assert codes[job] == 130
    # a strict key that already ran: 105, and no new run
    assert run("key", "--run-key", "K", "--strict") == 0
    assert cli.run("--id", "key2", "--run-key", "K", "--strict", "--", "false").returncode == 105

    history = cli.history()
    assert {r["job_id"] for r in history} == set(codes)
    for r in history:
        assert r["exit_code"] == codes[r["job_id"]], r


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(code=st.integers(0, 255))
def test_executed_exit_code_is_stored_as_returned(cli, code):
    job = f"code{code}"
    p = cli.run("--id", job, "--", "sh", "-c", f"exit {code}")
    assert p.returncode == code
    (r,) = [x for x in cli.history(job)][:1]
    assert r["exit_code"] == code


def test_python_api_result_and_record_agree(home):
    import runtools

    for target, expected in ((["sh", "-c", "exit 7"], 7), (["true"], 0)):
        result = runtools.run(target, job_id="api")
        assert result.exit_code == expected == result.run.exit_code
    with runtools.environment() as env:
        assert [r.exit_code for r in env.find_runs(runtools.RunQuery(limit=2))] == [0, 7]


# -- orchesjob: waits with extreme values, and on jobs that already ended ---------------------


def orchesjob(tmp_path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    env = {**os.environ, "ORCHESJOB_HOME": str(tmp_path / "oj")}
    argv = [str(Path(sys.executable).parent / "orchesjob"), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def test_orchesjob_waits_take_a_century_and_answer_ended_jobs_at_once(tmp_path):
    century = str(100 * 365 * 86400)
    p = orchesjob(tmp_path, "start", "--run-key", "k", "--start-timeout", century, "--", "sh", "-c", "echo hi")
    assert p.returncode == 0, p.stderr
    p = orchesjob(tmp_path, "start", "--run-key", "k2", "--sync", "--start-timeout", century, "--", "true")
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "SUCCEEDED", p.stderr
    # k2 has ended: a follow prints what there is and answers at once
    p = orchesjob(tmp_path, "logs", "--run-key", "k2", "--follow")
    assert p.returncode == 0, p.stderr
    p = orchesjob(tmp_path, "start", "--run-key", "long", "--", "sleep", "30")
    assert p.returncode == 0, p.stderr
    p = orchesjob(tmp_path, "abort", "--run-key", "long", "--grace-seconds", century, timeout=15)
    assert p.returncode == 0, p.stderr  # TERM ends it long before the grace: no overflow, no hang
