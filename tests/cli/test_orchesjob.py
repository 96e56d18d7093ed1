"""orchesjob, black-box: every subcommand, flag, key, status, exit code and message of seed 004
(and issue 4), each test in its own $ORCHESJOB_HOME."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from conftest import pid_alive

BIN = Path(sys.executable).parent

JOB_KEYS = [
    "job_id", "run_key", "command", "pid", "pid_kind", "worker_pid", "target_pid", "status", "exit_code",
    "stdout_file", "stderr_file", "attempt_no", "strict", "rerun_of_job_id", "rerun_reason", "abort_reason",
    "started_at", "started_at_iso", "finished_at", "finished_at_iso", "updated_at", "updated_at_iso",
    "aborted_at", "aborted_at_iso",
]
START_KEYS = [*JOB_KEYS, "accepted", "existing", "mode", "strict_override_used"]
ABORT_KEYS = [*JOB_KEYS, "aborted", "sent_term_target", "sent_term_worker", "sent_kill_target", "sent_kill_worker"]
OVERRIDE_KEYS = ["allowed_at", "allowed_at_iso", "used_at", "used_at_iso", "reason", "expires_at", "expires_at_iso"]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


class OJ:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.procs: list[subprocess.Popen] = []

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, "ORCHESJOB_HOME": str(self.home), **(extra or {})}

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 30
                 ) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "orchesjob"), *args], capture_output=True, text=True, timeout=timeout,
                              env=self.env(env), stdin=subprocess.DEVNULL)

    def ok(self, *args: str, **kw) -> dict | list:
        p = self(*args, **kw)
        assert p.returncode == 0, f"orchesjob {' '.join(args)} exited {p.returncode}: {p.stderr}"
        assert p.stderr == ""
        return json.loads(p.stdout)

    def fails(self, code: int, message: str, *args: str, **kw) -> None:
        p = self(*args, **kw)
        assert (p.returncode, p.stderr) == (code, f"orchesjob: {message}\n"), p.stdout
        assert p.stdout == ""

    def spawn(self, *args: str) -> subprocess.Popen:
        p = subprocess.Popen([str(BIN / "orchesjob"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, env=self.env(), start_new_session=True, text=True)
        self.procs.append(p)
        return p

    def status(self, key: str) -> dict:
        return self.ok("status", "--run-key", key)


ON_POSTGRES = os.environ.get("RUNTOOLS_TEST_ENV") == "postgres"
local_only = pytest.mark.skipif(ON_POSTGRES, reason="about the local home's SQLite file")


@pytest.fixture
def oj(tmp_path: Path):
    o = OJ(tmp_path / "oj")
    if ON_POSTGRES:  # the home points at a PostgreSQL environment (a schema of its own)
        point_home_at_postgres(o.home)
    yield o
    for p in o.procs:
        if p.poll() is None:
            p.kill()
        p.communicate()
    _kill_leftovers(o.home)


def point_home_at_postgres(home: Path, url: str | None = None) -> str:
    """Make `home` an orchesjob home whose runs live in PostgreSQL, as `taro env add HOME URL` does."""
    from pg.server import postgres_url

    url = url or postgres_url()
    p = subprocess.run([str(BIN / "taro"), "env", "add", str(home), url], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return url


def home_env(home: Path):
    """The environment of an orchesjob home (its orchesjob.db, or the PostgreSQL one it points at)."""
    from runtools.env import open_environment
    from runtools.env.local import LocalEnvironment

    if (home / "postgres.url").exists():
        return open_environment(str(home))
    return LocalEnvironment(str(home), db_name="orchesjob.db")


def _kill_leftovers(home: Path) -> None:
    """Kill whatever a test left running (targets by process group, workers by pid)."""
    if not (home / "orchesjob.db").exists() and not (home / "postgres.url").exists():
        return
    from runtools.env.base import RunQuery

    try:
        with home_env(home) as env:
            rows = [r.to_dict() for r in env.find_runs(RunQuery(active=True))]
    except Exception:  # nothing recorded (the schema was never created)
        return
    for d in rows:
        for pid, group in ((d.get("child_pid"), True), (d.get("pid"), False)):
            if pid:
                try:
                    (os.killpg if group else os.kill)(pid, 9)
                except OSError:
                    pass


def gate(tmp_path: Path, name: str = "gate") -> tuple[Path, list[str]]:
    """A FIFO and a command that blocks until `open_gate` is called on it."""
    fifo = tmp_path / name
    os.mkfifo(fifo)
    return fifo, ["sh", "-c", f"cat '{fifo}' >/dev/null; echo done"]


def open_gate(fifo: Path) -> None:
    fd = os.open(fifo, os.O_WRONLY)
    os.close(fd)


def wait_until(cond, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)  # poll interval of a deadline loop


def listeners(home: Path | None = None) -> int:
    """Event listener sockets in this test's runtime dir (a waiting `start --sync` has one); on
    a PostgreSQL home, the subscriptions open on its environment."""
    if home is not None and (home / "postgres.url").exists():
        from pg.server import listeners as pg_listeners

        return pg_listeners((home / "postgres.url").read_text().strip())
    base = Path(os.environ["XDG_RUNTIME_DIR"]) / "runtools"
    if not base.is_dir():
        return 0
    return sum(len(os.listdir(d / "l")) for d in base.iterdir() if (d / "l").is_dir())


def check_times(d: dict) -> None:
    for k in ("started_at", "finished_at", "updated_at", "aborted_at"):
        v, s = d[k], d[f"{k}_iso"]
        if v is None:
            assert s is None
        else:
            assert isinstance(v, int)
            assert ISO.match(s), s
            assert int(datetime.fromisoformat(s).timestamp()) == v


# -- start -------------------------------------------------------------------------------------


def test_start_sync_success_has_every_key(oj: OJ) -> None:
    d = oj.ok("start", "--run-key", "nightly", "--sync", "--", "sh", "-c", "echo out; echo err >&2")
    assert list(d) == START_KEYS
    assert uuid.UUID(d["job_id"])
    assert d["status"] == "SUCCEEDED" and d["exit_code"] == 0
    assert (d["accepted"], d["existing"], d["mode"], d["strict"], d["strict_override_used"]) == (
        True, False, "sync", False, False)
    assert d["command"] == ["sh", "-c", "echo out; echo err >&2"]
    assert d["pid_kind"] == "target" and d["pid"] == d["target_pid"] and d["worker_pid"] != d["target_pid"]
    assert d["attempt_no"] == 1 and d["rerun_of_job_id"] is None and d["abort_reason"] is None
    assert d["stdout_file"] == str(oj.home / "logs" / f"{d['job_id']}.stdout")
    assert d["stderr_file"] == str(oj.home / "logs" / f"{d['job_id']}.stderr")
    assert Path(d["stdout_file"]).read_text() == "out\n"
    assert Path(d["stderr_file"]).read_text() == "err\n"
    check_times(d)
    assert d["finished_at"] is not None and d["aborted_at"] is None
    for p in (oj.home, oj.home / "logs"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700
    assert (oj.home / ("postgres.url" if ON_POSTGRES else "orchesjob.db")).exists()


def test_failed_job_is_exit_0_with_the_code_in_json(oj: OJ) -> None:
    d = oj.ok("start", "--run-key", "f", "--sync", "--", "sh", "-c", "exit 3")
    assert (d["status"], d["exit_code"]) == ("FAILED", 3)


def test_command_that_cannot_launch_is_failed_minus_one(oj: OJ) -> None:
    d = oj.ok("start", "--run-key", "nx", "--sync", "--", "/nonexistent/cmd")
    assert (d["status"], d["exit_code"]) == ("FAILED", -1)
    d = oj.ok("start", "--run-key", "nx2", "--", "/nonexistent/cmd")  # async: it ended before running
    assert (d["status"], d["exit_code"], d["mode"]) == ("FAILED", -1, "async")


def test_async_start_returns_running_with_target_pid(oj: OJ, tmp_path: Path) -> None:
    fifo, cmd = gate(tmp_path)
    d = oj.ok("start", "--run-key", "a", "--", *cmd)
    assert (d["status"], d["mode"], d["pid_kind"], d["exit_code"], d["finished_at"]) == (
        "RUNNING", "async", "target", None, None)
    assert os.getpgid(d["target_pid"]) == d["target_pid"]  # its own process group
    assert Path(d["stdout_file"]).exists() and Path(d["stderr_file"]).exists()
    open_gate(fifo)
    wait_until(lambda: oj.status("a")["status"] == "SUCCEEDED", what="SUCCEEDED")
    assert Path(d["stdout_file"]).read_text() == "done\n"


def test_start_timeout_zero_returns_at_once(oj: OJ, tmp_path: Path) -> None:
    fifo, cmd = gate(tmp_path)
    d = oj.ok("start", "--run-key", "t0", "--start-timeout", "0", "--", *cmd)
    assert d["status"] in ("STARTING", "RUNNING")
    open_gate(fifo)


def test_second_start_returns_the_active_job(oj: OJ, tmp_path: Path) -> None:
    fifo, cmd = gate(tmp_path)
    first = oj.ok("start", "--run-key", "k", "--", *cmd)
    again = oj.ok("start", "--run-key", "k", "--", "echo", "other")
    assert again["job_id"] == first["job_id"]
    assert (again["accepted"], again["existing"], again["status"]) == (False, True, "RUNNING")
    assert again["command"] == cmd
    waiter = oj.spawn("start", "--run-key", "k", "--sync", "--", "echo", "other")  # attaches, waits for the end
    wait_until(lambda: listeners(oj.home), what="the attached start to listen for the end")
    open_gate(fifo)
    out, _ = waiter.communicate(timeout=20)
    d = json.loads(out)
    assert (d["job_id"], d["existing"], d["mode"], d["status"]) == (first["job_id"], True, "sync", "SUCCEEDED")


def test_finished_key_starts_again_with_attempt_and_rerun_of(oj: OJ) -> None:
    a = oj.ok("start", "--run-key", "r", "--sync", "--", "true")
    b = oj.ok("start", "--run-key", "r", "--sync", "--", "false")
    assert b["accepted"] and b["job_id"] != a["job_id"]
    assert (b["attempt_no"], b["rerun_of_job_id"], b["rerun_reason"]) == (2, a["job_id"], None)
    assert (b["status"], b["exit_code"]) == ("FAILED", 1)


def test_sync_returns_within_50ms_of_the_end(oj: OJ, tmp_path: Path) -> None:
    mark = tmp_path / "ended"
    lags = []
    for i in range(3):
        oj.ok("start", "--run-key", f"lat{i}", "--sync", "--", "sh", "-c", f"sleep 0.2; date +%s.%N > '{mark}'")
        lags.append(time.time() - float(mark.read_text()))
    assert min(lags) < 0.05, lags


def test_start_argument_errors(oj: OJ) -> None:
    oj.fails(2, "command is required (provide it after --)", "start", "--run-key", "k")
    oj.fails(2, "command is required (provide it after --)", "start", "--run-key", "k", "--")
    p = oj("start", "--", "true")
    assert p.returncode == 2 and p.stderr.startswith("orchesjob: ") and p.stderr.count("\n") == 1
    assert "--run-key" in p.stderr
    p = oj("start", "--run-key", "k", "--start-timeout", "soon", "--", "true")
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    p = oj("frobnicate")
    assert p.returncode == 2 and p.stderr.startswith("orchesjob: ")


# -- strict and unlock -------------------------------------------------------------------------


def test_strict_runs_once_until_unlocked(oj: OJ) -> None:
    a = oj.ok("start", "--run-key", "d", "--strict", "--sync", "--", "true")
    assert a["accepted"] and a["strict"] is True
    b = oj.ok("start", "--run-key", "d", "--strict", "--sync", "--", "true")
    assert (b["accepted"], b["existing"], b["job_id"], b["strict_override_used"]) == (False, True, a["job_id"], False)
    u = oj.ok("unlock", "--run-key", "d", "--reason", "data fix", "--ttl", "30m")
    assert list(u) == ["unlocked", "run_key", "reason", "allowed_at", "allowed_at_iso", "expires_at", "expires_at_iso"]
    assert (u["unlocked"], u["run_key"], u["reason"]) == (True, "d", "data fix")
    assert u["expires_at"] - u["allowed_at"] == 1800 and ISO.match(u["expires_at_iso"])
    s = oj.status("d")
    assert list(s["strict_override"]) == OVERRIDE_KEYS
    assert (s["strict_override"]["reason"], s["strict_override"]["expires_at"]) == ("data fix", u["expires_at"])
    c = oj.ok("start", "--run-key", "d", "--strict", "--sync", "--", "true")
    assert (c["accepted"], c["strict_override_used"], c["attempt_no"]) == (True, True, 2)
    assert (c["rerun_of_job_id"], c["rerun_reason"]) == (a["job_id"], "data fix")
    assert oj.status("d")["strict_override"] is None  # consumed
    d = oj.ok("start", "--run-key", "d", "--strict", "--sync", "--", "true")
    assert (d["existing"], d["job_id"]) == (True, c["job_id"])


def test_unlock_expires(oj: OJ) -> None:
    oj.ok("start", "--run-key", "e", "--strict", "--sync", "--", "true")
    u = oj.ok("unlock", "--run-key", "e", "--ttl", "1")
    assert u["expires_at"] == u["allowed_at"] + 1
    wait_until(lambda: oj.status("e")["strict_override"] is None, 5, "the override to expire")
    assert oj.ok("start", "--run-key", "e", "--strict", "--sync", "--", "true")["existing"] is True


@pytest.mark.parametrize(("ttl", "seconds"), [("90", 90), ("10s", 10), ("30m", 1800), ("2h", 7200), ("1d", 86400)])
def test_unlock_ttl_forms(oj: OJ, ttl: str, seconds: int) -> None:
    oj.ok("start", "--run-key", "t", "--sync", "--", "true")
    u = oj.ok("unlock", "--run-key", "t", "--ttl", ttl)
    assert u["expires_at"] - u["allowed_at"] == seconds


def test_unlock_without_ttl_never_expires(oj: OJ) -> None:
    oj.ok("start", "--run-key", "n", "--sync", "--", "true")
    u = oj.ok("unlock", "--run-key", "n")
    assert (u["expires_at"], u["expires_at_iso"], u["reason"]) == (None, None, None)


def test_unlock_errors(oj: OJ, tmp_path: Path) -> None:
    oj.fails(3, "run_key not found", "unlock", "--run-key", "nope")
    for bad, msg in (("abc", "Invalid ttl: 'abc'. Use seconds or suffix s/m/h/d"), ("0", "ttl must be positive"),
                     ("xm", "Invalid ttl: 'xm'"), ("-5m", "ttl must be positive")):
        oj.fails(2, msg, "unlock", "--run-key", "nope", f"--ttl={bad}")
    fifo, cmd = gate(tmp_path)
    oj.ok("start", "--run-key", "busy", "--", *cmd)
    oj.fails(4, "Cannot unlock active job: status=RUNNING", "unlock", "--run-key", "busy")
    open_gate(fifo)


# -- status ------------------------------------------------------------------------------------


def test_status_forms(oj: OJ, tmp_path: Path) -> None:
    a = oj.ok("start", "--run-key", "s", "--sync", "--", "true")
    b = oj.ok("start", "--run-key", "s", "--sync", "--", "false")
    s = oj.status("s")
    assert list(s) == [*JOB_KEYS, "strict_override"]
    assert (s["job_id"], s["status"], s["strict_override"]) == (b["job_id"], "FAILED", None)
    check_times(s)
    by_id = oj.ok("status", "--job-id", a["job_id"])
    assert (by_id["job_id"], by_id["status"], by_id["attempt_no"]) == (a["job_id"], "SUCCEEDED", 1)
    hist = oj.ok("status", "--run-key", "s", "--all")
    assert [h["attempt_no"] for h in hist] == [2, 1] and [h["job_id"] for h in hist] == [b["job_id"], a["job_id"]]
    assert all(list(h) == [*JOB_KEYS, "strict_override"] for h in hist)
    assert oj.ok("status", "--running") == []
    fifo, cmd = gate(tmp_path)
    r = oj.ok("start", "--run-key", "live", "--", *cmd)
    running = oj.ok("status", "--running")
    assert [x["job_id"] for x in running] == [r["job_id"]] and running[0]["status"] == "RUNNING"
    open_gate(fifo)


def test_status_errors(oj: OJ) -> None:
    oj.fails(3, "run_key not found", "status", "--run-key", "nope")
    oj.fails(3, "Job not found: 3f2a1b4c-0000-0000-0000-000000000000", "status", "--job-id",
             "3f2a1b4c-0000-0000-0000-000000000000")
    oj.fails(3, "No jobs found for run_key: nope", "status", "--run-key", "nope", "--all")
    oj.fails(2, "status --all requires --run-key", "status", "--job-id", "x", "--all")
    oj.fails(2, "Invalid job_id: contains path separator", "status", "--job-id", "../x")
    p = oj("status")
    assert p.returncode == 2 and p.stderr.startswith("orchesjob: ") and p.stderr.count("\n") == 1
    p = oj("status", "--run-key", "a", "--job-id", "b")
    assert p.returncode == 2 and p.stderr.count("\n") == 1


# -- logs --------------------------------------------------------------------------------------


def test_logs(oj: OJ) -> None:
    d = oj.ok("start", "--run-key", "l", "--sync", "--", "sh", "-c", "printf '1\\n2\\n3\\n'; echo e >&2")
    assert oj("logs", "--run-key", "l").stdout == "1\n2\n3\n"
    assert oj("logs", "--job-id", d["job_id"], "--stream", "stdout").stdout == "1\n2\n3\n"
    assert oj("logs", "--run-key", "l", "--stream", "stderr").stdout == "e\n"
    assert oj("logs", "--run-key", "l", "--tail", "2").stdout == "2\n3\n"
    assert oj("logs", "--run-key", "l", "--tail", "0").stdout == ""
    assert oj("logs", "--run-key", "l", "--tail", "9").stdout == "1\n2\n3\n"
    oj.fails(3, "run_key not found", "logs", "--run-key", "nope")
    oj.fails(3, "Job not found: nope", "logs", "--job-id", "nope")
    p = oj("logs", "--run-key", "l", "--stream", "both")
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    os.unlink(d["stdout_file"])
    oj.fails(3, f"Log file not found: {d['stdout_file']}", "logs", "--run-key", "l")


def test_logs_follow_prints_until_the_end(oj: OJ, tmp_path: Path) -> None:
    fifo = tmp_path / "g"
    os.mkfifo(fifo)
    oj.ok("start", "--run-key", "fl", "--", "sh", "-c", f"echo before; cat '{fifo}' >/dev/null; echo after")
    follower = oj.spawn("logs", "--run-key", "fl", "--follow")
    line = follower.stdout.readline()
    assert line == "before\n"
    open_gate(fifo)
    rest, _ = follower.communicate(timeout=20)
    assert rest == "after\n" and follower.returncode == 0


# -- abort -------------------------------------------------------------------------------------


def test_abort_running_job(oj: OJ, tmp_path: Path) -> None:
    _fifo, cmd = gate(tmp_path)
    d = oj.ok("start", "--run-key", "ab", "--strict", "--", *cmd)
    a = oj.ok("abort", "--run-key", "ab", "--reason", "manual intervention")
    assert list(a) == ABORT_KEYS
    assert (a["status"], a["abort_reason"], a["aborted"], a["exit_code"]) == (
        "ABORTED", "manual intervention", True, None)
    assert a["sent_term_target"] is True
    # the worker gets TERM too, unless it already recorded the end and exited between the two signals
    assert a["sent_term_worker"] is True or not pid_alive(d["worker_pid"])
    assert a["sent_kill_target"] is False
    assert a["aborted_at"] is not None and a["finished_at"] == a["aborted_at"]
    check_times(a)
    assert not pid_alive(d["target_pid"])
    s = oj.status("ab")
    assert (s["status"], s["abort_reason"]) == ("ABORTED", "manual intervention")
    # the key is consumed for strict starts
    assert oj.ok("start", "--run-key", "ab", "--strict", "--", "true")["existing"] is True
    oj.fails(4, f"Job is not running: {d['job_id']} status=ABORTED", "abort", "--job-id", d["job_id"])


def test_abort_kills_after_grace(oj: OJ) -> None:
    d = oj.ok("start", "--run-key", "stubborn", "--", "sh", "-c", "trap '' TERM; while :; do sleep 1; done")
    t0 = time.monotonic()
    a = oj.ok("abort", "--job-id", d["job_id"], "--grace-seconds", "0.5")
    assert time.monotonic() - t0 < 4
    assert (a["status"], a["sent_term_target"], a["sent_kill_target"]) == ("ABORTED", True, True)
    assert not pid_alive(d["target_pid"])


def test_abort_errors(oj: OJ) -> None:
    d = oj.ok("start", "--run-key", "done", "--sync", "--", "true")
    oj.fails(4, f"Job is not running: {d['job_id']} status=SUCCEEDED", "abort", "--run-key", "done")
    oj.fails(3, "run_key not found", "abort", "--run-key", "nope")
    oj.fails(3, "Job not found: nope", "abort", "--job-id", "nope")
    p = oj("abort", "--run-key", "done", "--grace-seconds", "x")
    assert p.returncode == 2 and p.stderr.count("\n") == 1


def test_abort_never_signals_a_reused_pid(oj: OJ, tmp_path: Path) -> None:
    """The recorded pids now belong to other processes (start times differ): hands off."""
    _fifo, cmd = gate(tmp_path)
    d = oj.ok("start", "--run-key", "reuse", "--", *cmd)
    decoy = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        with home_env(oj.home) as env, env.transaction() as tx:
            rec = tx.get(f"orchesjob@{d['job_id']}")
            rec.child_pid = rec.pid = decoy.pid
            rec.child_start = 1.0
            rec.extra["worker_start"] = 1.0
            tx.update(rec)
        a = oj.ok("abort", "--run-key", "reuse", "--grace-seconds", "0.2")
        assert a["status"] == "ABORTED"
        assert not any(a[k] for k in ("sent_term_target", "sent_term_worker", "sent_kill_target", "sent_kill_worker"))
        assert decoy.poll() is None
    finally:
        decoy.kill()
        decoy.wait()
        os.killpg(d["target_pid"], 9)


# -- rerun -------------------------------------------------------------------------------------


def test_rerun(oj: OJ) -> None:
    a = oj.ok("start", "--run-key", "rr", "--strict", "--sync", "--", "sh", "-c", "echo hi")
    r = oj.ok("rerun", "--run-key", "rr", "--sync", "--reason", "retry after disk error")
    assert list(r) == [*START_KEYS, "rerun"]
    assert (r["rerun"], r["accepted"], r["existing"], r["mode"], r["strict"]) == (True, True, False, "sync", False)
    assert (r["status"], r["attempt_no"], r["rerun_of_job_id"], r["rerun_reason"]) == (
        "SUCCEEDED", 2, a["job_id"], "retry after disk error")
    assert r["command"] == a["command"] and Path(r["stdout_file"]).read_text() == "hi\n"
    r2 = oj.ok("rerun", "--job-id", a["job_id"])  # async, from an older job: attempt still increments
    assert (r2["mode"], r2["attempt_no"], r2["rerun_of_job_id"]) == ("async", 3, a["job_id"])


def test_rerun_refuses_while_any_run_of_the_key_is_active(oj: OJ, tmp_path: Path) -> None:
    a = oj.ok("start", "--run-key", "ra", "--sync", "--", "true")
    fifo, cmd = gate(tmp_path)
    oj.ok("start", "--run-key", "ra", "--", *cmd)
    oj.fails(4, "Cannot rerun active job: status=RUNNING", "rerun", "--run-key", "ra")
    oj.fails(4, "Cannot rerun active job: status=RUNNING", "rerun", "--job-id", a["job_id"])
    oj.fails(3, "run_key not found", "rerun", "--run-key", "nope")
    oj.fails(3, "Job not found: nope", "rerun", "--job-id", "nope")
    open_gate(fifo)


# -- clean -------------------------------------------------------------------------------------


def test_clean(oj: OJ, tmp_path: Path) -> None:
    a = oj.ok("start", "--run-key", "c1", "--sync", "--", "echo", "a")
    b = oj.ok("start", "--run-key", "c2", "--sync", "--", "echo", "b")
    fifo, cmd = gate(tmp_path)
    live = oj.ok("start", "--run-key", "c3", "--", *cmd)
    dry = oj.ok("clean", "--all", "--dry-run")
    assert (dry["deleted"], dry["errors"], dry["dry_run"]) == (2, 0, True)
    assert [i["job_id"] for i in dry["items"]] == [a["job_id"], b["job_id"]]
    assert list(dry["items"][0]) == ["job_id", "run_key", "selected_at", "selected_at_iso"]
    assert dry["items"][0]["selected_at"] == a["finished_at"]
    assert Path(a["stdout_file"]).exists() and oj.status("c1")["job_id"] == a["job_id"]
    one = oj.ok("clean", "--run-key", "c1", "--all")
    assert (one["deleted"], one["dry_run"]) == (1, False) and one["items"][0]["job_id"] == a["job_id"]
    assert not Path(a["stdout_file"]).exists()
    oj.fails(3, "run_key not found", "status", "--run-key", "c1")
    assert oj.ok("clean", "--job-id", live["job_id"])["deleted"] == 0  # active: never
    assert oj.ok("clean", "--before", "2999-01-01")["deleted"] == 1  # b; not the live one
    assert oj.status("c3")["status"] == "RUNNING"
    open_gate(fifo)
    wait_until(lambda: oj.status("c3")["status"] == "SUCCEEDED", what="c3 to end")
    assert oj.ok("clean", "--after", "2999-01-01")["deleted"] == 0
    got = oj.ok("clean", "--after", "2000-01-01T00:00:00+00:00", "--before", "2999-01-01T00:00:00")
    assert got["deleted"] == 1
    assert oj.ok("clean", "--all") == {"deleted": 0, "errors": 0, "dry_run": False, "items": []}


def test_clean_by_job_id_and_local_dates(oj: OJ) -> None:
    a = oj.ok("start", "--run-key", "j", "--sync", "--", "true")
    today = datetime.fromtimestamp(a["finished_at"]).date().isoformat()  # naive: local midnight
    assert oj.ok("clean", "--before", today)["deleted"] == 0
    assert oj.ok("clean", "--after", today, "--dry-run")["deleted"] == 1
    got = oj.ok("clean", "--job-id", a["job_id"])
    assert got["deleted"] == 1 and got["items"][0]["run_key"] == "j"


def test_clean_argument_errors(oj: OJ) -> None:
    oj.fails(2, "clean: --all cannot be combined with --before or --after", "clean", "--all", "--before", "2026-01-01")
    oj.fails(2, "clean: --job-id cannot be combined with --before, --after, --all, or --run-key",
             "clean", "--job-id", "x", "--run-key", "k")
    oj.fails(2, "clean: one of --before, --after, --all, or --job-id is required", "clean")
    oj.fails(2, "clean: one of --before, --after, --all, or --job-id is required", "clean", "--run-key", "k")
    for flag in ("--before", "--after"):
        oj.fails(2, f"Invalid {flag}: 'soon'. Use ISO 8601 format, e.g. 2026-01-01 or 2026-01-01T12:00:00+09:00",
                 "clean", flag, "soon")


# -- environment, database, entry points -------------------------------------------------------


@local_only
def test_busy_database_is_exit_5(oj: OJ) -> None:
    oj.ok("start", "--run-key", "b", "--sync", "--", "true")
    holder = sqlite3.connect(oj.home / "orchesjob.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        fast = {"ORCHESJOB_LOCK_TIMEOUT": "0.2"}
        p = oj("status", "--run-key", "b", env=fast)  # a read does not wait for the write lock
        assert (p.returncode, p.stderr) == (0, "")
        for args in (("start", "--run-key", "b2", "--", "true"), ("unlock", "--run-key", "b")):
            p = oj(*args, env=fast)
            assert p.returncode == 5, (args, p.stderr)
            assert p.stderr.startswith("orchesjob: ") and p.stderr.count("\n") == 1 and "busy" in p.stderr
            assert "Traceback" not in p.stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert oj.status("b")["status"] == "SUCCEEDED"


def test_runs_show_in_taro_history_and_python_m_works(oj: OJ) -> None:
    d = oj.ok("start", "--run-key", "h", "--sync", "--", "true")
    p = subprocess.run([str(BIN / "taro"), "history", "-e", str(oj.home), "--json"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    runs = json.loads(p.stdout)
    assert [(r["run_id"], r["run_key"], r["status"]) for r in runs] == [(d["job_id"], "h", "COMPLETED")]
    p = subprocess.run([sys.executable, "-m", "orchesjob", "status", "--run-key", "h"], capture_output=True,
                       text=True, env=oj.env(), timeout=30)
    assert p.returncode == 0 and json.loads(p.stdout)["job_id"] == d["job_id"]
    p = subprocess.run([sys.executable, "-m", "orchesjob", "--version"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.startswith("orchesjob ")


@local_only
def test_an_orchesjob_home_under_runtools_home_is_a_listed_environment(home: Path) -> None:
    """An environment folder holding only orchesjob.db is a local environment like any other:
    `taro env list/show` name it, `-e NAME` reads it, and `taro env add` will not hide its history."""
    o = OJ(home / "jobs")
    d = o.ok("start", "--run-key", "e", "--sync", "--", "true")
    p = subprocess.run([str(BIN / "taro"), "env", "list", "--json"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert {"name": "jobs", "kind": "local", "location": str(home / "jobs"), "source": "$RUNTOOLS_HOME"} in \
        json.loads(p.stdout)
    p = subprocess.run([str(BIN / "taro"), "env", "show", "jobs", "--json"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0 and json.loads(p.stdout)["exists"] is True, p.stderr
    p = subprocess.run([str(BIN / "taro"), "history", "-e", "jobs", "--json"], capture_output=True, text=True,
                       timeout=30)
    assert [r["run_id"] for r in json.loads(p.stdout)] == [d["job_id"]]
    for name in ("jobs", str(home / "jobs")):  # by name, or as a directory (an orchesjob home)
        p = subprocess.run([str(BIN / "taro"), "env", "add", name, "postgresql://u@db/x"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 2 and "is a local environment with a history" in p.stderr, p.stderr
    assert not (home / "jobs" / "postgres.url").exists()
