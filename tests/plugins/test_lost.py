"""A run whose wrapper is killed with its command ends LOST in whichever process notices it; that
process hands the end to a detached deliverer, so the LOST end still reaches the notifiers and
the event log — exactly once, also when two reapers notice it at the same moment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from .receiver import Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def deliverers(home) -> list[int]:
    """Live deliverer processes started for this test's $RUNTOOLS_HOME."""
    found = []
    mark = f"RUNTOOLS_HOME={home}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"runtools.plugins.deliver" not in f.read():
                    continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if mark not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        found.append(int(entry))
    return found


def kill_run(cli, job: str) -> dict:
    """Start a run of `job`, then kill -9 its wrapper and its command: the run is left active."""
    proc = cli.spawn_gated(job)
    run = cli.wait_state(job, "EXECUTING")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    os.killpg(run["child_pid"], signal.SIGKILL)
    return run


def ended_lines(cli, iid: str) -> list[dict]:
    path = cli.home / "local" / "events.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [ev for ev in lines if ev["instance_id"] == iid and ev["event"] == "ended"]


def _config(cli, receiver) -> None:
    (cli.cwd / "runtools.toml").write_text(f'[notifiers.ops]\ntype = "webhook"\nurl = "{receiver.url}/hook"\n'
                                           '\n[eventlog]\nenabled = true\n')


def test_a_lost_run_is_notified_and_logged_once_by_the_reaper(cli, receiver, wait_until):
    _config(cli, receiver)
    run = kill_run(cli, "victim")
    assert receiver.requests == []  # nobody noticed yet
    assert cli.taro("ps").returncode == 0  # notices the dead lease: ends the run LOST, hands it over
    wait_until(lambda: receiver.requests, what="the LOST notification")
    wait_until(lambda: not deliverers(cli.home), what="the deliverer to finish")
    (req,) = receiver.requests
    doc = json.loads(req["body"])
    assert doc["event"] == "ended" and doc["status"] == "LOST" and doc["instance_id"] == run["instance_id"]
    assert doc["run"]["outcome"] == "FAULT"
    (line,) = ended_lines(cli, run["instance_id"])
    assert line["status"] == "LOST"
    (stored,) = cli.history("victim")
    assert stored["status"] == "LOST" and stored["warnings"] == []
    assert cli.taro("ps").returncode == 0  # nothing more to reap: nothing more is sent
    assert not deliverers(cli.home) and len(receiver.requests) == 1


def test_two_reapers_at_once_deliver_once(cli, receiver, wait_until):
    _config(cli, receiver)
    run = kill_run(cli, "victim")
    reapers = [cli.spawn(["taro", "ps"]) for _ in range(2)]
    for p in reapers:
        assert p.wait(30) == 0
    wait_until(lambda: receiver.requests, what="the LOST notification")
    wait_until(lambda: not deliverers(cli.home), what="the deliverers to finish")
    assert len(receiver.requests) == 1
    assert len(ended_lines(cli, run["instance_id"])) == 1


def test_a_failed_delivery_is_a_warning_on_the_lost_run(cli, wait_until):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    (cli.cwd / "runtools.toml").write_text(f'[notifiers.down]\ntype = "webhook"\nurl = "http://127.0.0.1:{port}/"\n'
                                           'retries = 0\n')
    kill_run(cli, "victim")
    assert cli.taro("ps").returncode == 0
    wait_until(lambda: cli.runs(job="victim")[0]["warnings"], what="the failed delivery's warning")
    (stored,) = cli.history("victim")
    assert stored["status"] == "LOST"
    assert stored["warnings"][0].startswith("notify down (webhook) failed: cannot reach http://127.0.0.1")


def test_taro_ps_without_a_reap_imports_no_delivery(cli):
    (cli.cwd / "runtools.toml").write_text('[notifiers.ops]\ntype = "webhook"\nurl = "http://127.0.0.1:9/"\n')
    assert cli.run("--id", "j", "--", "true").returncode == 0
    p = subprocess.run([sys.executable, "-X", "importtime", cli.bin("taro"), "ps"], capture_output=True, text=True,
                       timeout=30, env=cli._env(None), cwd=cli.cwd)
    assert p.returncode == 0, p.stderr
    mods = {line.split("|")[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert not mods & {"runtools.plugins", "runtools.plugins.deliver", "json", "urllib.request"}, mods


def test_a_lost_run_on_postgres_is_notified_once(cli, receiver, wait_until, monkeypatch):
    server = pytest.importorskip("pg.server")
    url = server.postgres_url(password=True)  # skips without PostgreSQL, fails under CI
    monkeypatch.setenv("RUNTOOLS_ENV", url)
    _config(cli, receiver)
    run = kill_run(cli, "victim")
    reapers = [cli.spawn(["taro", "ps"]) for _ in range(2)]
    for p in reapers:
        assert p.wait(30) == 0
    wait_until(lambda: receiver.requests, what="the LOST notification")
    wait_until(lambda: not deliverers(cli.home), what="the deliverers to finish")
    (req,) = receiver.requests
    doc = json.loads(req["body"])
    assert doc["status"] == "LOST" and doc["instance_id"] == run["instance_id"]
    (log,) = cli.home.glob("events-*.jsonl")  # the event log of a PostgreSQL environment
    ended = [json.loads(x) for x in log.read_text().splitlines() if '"ended"' in x]
    assert [(e["instance_id"], e["status"]) for e in ended] == [(run["instance_id"], "LOST")]
