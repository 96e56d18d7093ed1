"""orchesjob homes on PostgreSQL, across hosts: two homes (two hosts: different $RUNTOOLS_HOST and
$ORCHESJOB_HOME) point at one environment. Starts race from both at the same instant, and every
command of one host sees and acts on the job of the other. (The whole orchesjob suite also runs
on a PostgreSQL home: RUNTOOLS_TEST_ENV=postgres, as scripts/test does.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cli.test_orchesjob import BIN, gate, open_gate, point_home_at_postgres
from conftest import pid_alive

from .server import PASSWORD, postgres_url, server


class Host:
    """orchesjob as run on one host: its own home (pointing at the shared environment) and name."""

    def __init__(self, home: Path, name: str) -> None:
        self.home = home
        self.name = name
        self.procs: list[subprocess.Popen] = []

    def env(self) -> dict[str, str]:
        return {**os.environ, "ORCHESJOB_HOME": str(self.home), "RUNTOOLS_HOST": self.name}

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "orchesjob"), *args], capture_output=True, text=True, timeout=60,
                              env=self.env(), stdin=subprocess.DEVNULL)

    def ok(self, *args: str) -> dict | list:
        p = self(*args)
        assert (p.returncode, p.stderr) == (0, ""), f"orchesjob {' '.join(args)} on {self.name}: {p.stderr}"
        return json.loads(p.stdout)

    def poised(self, *args: str) -> subprocess.Popen:
        """`orchesjob ARGS` that starts the moment its stdin is closed (see `go`)."""
        p = subprocess.Popen(["sh", "-c", 'read _ || :; exec "$0" "$@"', str(BIN / "orchesjob"), *args],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=self.env(), start_new_session=True)
        self.procs.append(p)
        return p


@pytest.fixture
def hosts(tmp_path: Path):
    server()
    url = postgres_url()
    a, b = Host(tmp_path / "a" / "oj", "host-a"), Host(tmp_path / "b" / "oj", "host-b")
    for h in (a, b):
        point_home_at_postgres(h.home, url)
    yield a, b
    for h in (a, b):
        for p in h.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None and not f.closed:
                    f.close()


def test_two_hosts_starting_one_key_at_the_same_instant_run_it_once(hosts, tmp_path: Path) -> None:
    a, b = hosts
    fifo, cmd = gate(tmp_path)
    a.ok("status", "--running")  # both homes exist, the schema does not yet: reads as empty
    poised = [h.poised("start", "--run-key", "race", "--", *cmd) for _ in range(6) for h in (a, b)]
    for p in poised:  # all at once
        p.stdin.close()
        p.stdin = None  # (communicate() would flush it)
    outs = []
    for p in poised:
        out, err = p.communicate(timeout=60)
        assert (p.returncode, err) == (0, ""), err
        outs.append(json.loads(out))
    assert sum(o["accepted"] for o in outs) == 1
    assert len({o["job_id"] for o in outs}) == 1
    assert all(o["existing"] and o["status"] == "RUNNING" for o in outs if not o["accepted"])
    assert len(a.ok("status", "--run-key", "race", "--all")) == 1 == len(b.ok("status", "--run-key", "race", "--all"))
    (winner,) = [o for o in outs if o["accepted"]]
    assert winner["status"] == "RUNNING"
    open_gate(fifo)
    ended = b.ok("start", "--run-key", "race", "--sync", "--", "true")  # after the end: a new job
    assert (ended["accepted"], ended["attempt_no"], ended["rerun_of_job_id"]) == (True, 2, winner["job_id"])
    assert a.ok("status", "--run-key", "race")["job_id"] == ended["job_id"]


def test_every_command_of_one_host_acts_on_the_job_of_another(hosts, tmp_path: Path) -> None:
    a, b = hosts
    d = a.ok("start", "--run-key", "k", "--", "sh", "-c", "printf '1\\n2\\n3\\n'; echo e >&2; sleep 60")
    assert (d["status"], d["stdout_file"]) == ("RUNNING", str(a.home / "logs" / f"{d['job_id']}.stdout"))
    again = b.ok("start", "--run-key", "k", "--", "echo", "a second copy")  # B finds A's job
    assert (again["accepted"], again["existing"], again["job_id"]) == (False, True, d["job_id"])
    assert [j["job_id"] for j in b.ok("status", "--running")] == [d["job_id"]]
    assert b.ok("status", "--run-key", "k")["status"] == "RUNNING"

    def logged(h: Host, *args: str) -> str:
        p = h("logs", *(args if "--job-id" in args else ("--run-key", "k", *args)))
        assert p.returncode == 0, p.stderr
        return p.stdout

    deadline = time.monotonic() + 15
    while logged(b) != "1\n2\n3\n":  # B reads the copy in the environment (the file is on A)
        assert time.monotonic() < deadline, logged(b)
        time.sleep(0.05)  # the wrapper stores output in chunks as it comes: poll interval of a deadline loop
    assert logged(b, "--tail", "2") == "2\n3\n" and logged(b, "--tail", "0") == ""
    assert logged(b, "--stream", "stderr") == "e\n" == logged(a, "--stream", "stderr")
    follower = subprocess.Popen([str(BIN / "orchesjob"), "logs", "--run-key", "k", "--follow"], env=b.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                start_new_session=True)
    b.procs.append(follower)
    assert [follower.stdout.readline() for _ in range(3)] == ["1\n", "2\n", "3\n"]
    p = b("abort", "--run-key", "k", "--reason", "from B", "--grace-seconds", "1")
    assert p.returncode == 0, p.stderr
    ab = json.loads(p.stdout)
    assert (ab["status"], ab["abort_reason"], ab["aborted"]) == ("ABORTED", "from B", True)
    assert ab["sent_term_target"] is True
    assert not pid_alive(d["target_pid"])  # ended (recorded) by its worker, which exits now
    deadline = time.monotonic() + 10
    while pid_alive(d["worker_pid"]):
        assert time.monotonic() < deadline, "the worker did not exit"
        time.sleep(0.02)  # poll interval of a deadline loop
    rest, err = follower.communicate(timeout=15)  # the job ended: so does the follower
    assert (follower.returncode, rest, err) == (0, "", "")
    p = b("abort", "--run-key", "k")
    assert (p.returncode, p.stderr) == (4, f"orchesjob: Job is not running: {d['job_id']} status=ABORTED\n")
    assert a.ok("status", "--run-key", "k")["status"] == "ABORTED"
    f = a.ok("start", "--run-key", "r", "--strict", "--sync", "--", "sh", "-c", "echo hi")
    assert b.ok("start", "--run-key", "r", "--strict", "--", "true")["job_id"] == f["job_id"]  # used, ever
    assert b.ok("unlock", "--run-key", "r", "--reason", "again")["unlocked"] is True
    assert a.ok("status", "--run-key", "r")["strict_override"]["reason"] == "again"
    r = b.ok("rerun", "--run-key", "r", "--sync", "--reason", "on B")  # runs on B, with A's command
    assert (r["attempt_no"], r["rerun_of_job_id"], r["status"]) == (2, f["job_id"], "SUCCEEDED")
    assert r["stdout_file"] == str(b.home / "logs" / f"{r['job_id']}.stdout")
    assert logged(a, "--job-id", r["job_id"]) == "hi\n" == logged(b, "--job-id", f["job_id"])
    c = a.ok("clean", "--job-id", f["job_id"])
    assert c["deleted"] == 1 and not Path(f["stdout_file"]).exists()
    p = b("status", "--job-id", f["job_id"])
    assert (p.returncode, p.stderr) == (3, f"orchesjob: Job not found: {f['job_id']}\n")


def test_a_job_whose_processes_vanish_on_one_host_is_lost_for_the_other(hosts, tmp_path: Path) -> None:
    a, b = hosts
    _fifo, cmd = gate(tmp_path)
    d = a.ok("start", "--run-key", "gone", "--", *cmd)
    os.kill(d["worker_pid"], signal.SIGKILL)
    assert b.ok("status", "--run-key", "gone")["status"] == "RUNNING"  # the target holds the lease
    os.killpg(d["target_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while b.ok("status", "--run-key", "gone")["status"] != "LOST":
        assert time.monotonic() < deadline, "not LOST"
        time.sleep(0.05)  # the target's lease connection closing: poll interval of a deadline loop
    assert b.ok("start", "--run-key", "gone", "--sync", "--", "true")["attempt_no"] == 2


def test_an_unreachable_server_is_exit_5_without_the_password(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    h = Host(tmp_path / "oj", "host-a")
    point_home_at_postgres(h.home, f"postgresql://jobs:{PASSWORD}@127.0.0.1:{port}/ops?schema=nightly")
    assert oct((h.home / "postgres.url").stat().st_mode & 0o777) == "0o600"
    for args in (("status", "--running"), ("start", "--run-key", "k", "--", "true"), ("logs", "--job-id", "x")):
        p = h(*args)
        assert p.returncode == 5, (args, p.stderr)
        assert p.stdout == "" and p.stderr.count("\n") == 1 and p.stderr.startswith("orchesjob: ")
        assert PASSWORD not in p.stderr and "jobs:***@127.0.0.1" in p.stderr, p.stderr
