"""Built-in notifiers against a real local HTTP receiver: webhook (HMAC, retries with backoff),
ntfy, healthchecks pings, command; rules by job pattern and outcome; a notifier that cannot
reach its target never changes the run's status or exit code (a warning on the run instead)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time

import pytest

from .receiver import Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _config(cli, text: str) -> None:
    (cli.cwd / "runtools.toml").write_text(text)


def test_webhook_on_fault_with_hmac_and_rules(cli, receiver, wait_until):
    _config(cli, f'[notifiers.ops]\ntype = "webhook"\nurl = "{receiver.url}/hook"\nsecret = "k3y"\n'
                 'jobs = ["backup*"]\non = ["FAULT"]\n')
    assert cli.run("--id", "backup-db", "--", "sh", "-c", "exit 3").returncode == 3
    assert cli.run("--id", "backup-db", "--", "true").returncode == 0  # SUCCESS: not notified
    assert cli.run("--id", "other", "--", "false").returncode == 1  # not a backup* job
    (req,) = receiver.requests  # the wrapper waited for the delivery before exiting
    assert req["path"] == "/hook" and req["headers"]["Content-Type"] == "application/json"
    sig = hmac.new(b"k3y", req["body"], hashlib.sha256).hexdigest()
    assert req["headers"]["X-Runtools-Signature"] == f"sha256={sig}"
    doc = json.loads(req["body"])
    assert doc["event"] == "ended" and doc["status"] == "FAILED" and doc["run"]["exit_code"] == 3
    assert doc["run"]["job_id"] == "backup-db"
    assert cli.history("backup-db")[1]["warnings"] == []


def test_webhook_retries_with_backoff_then_delivers(cli, receiver):
    receiver.codes = [500, 503]
    _config(cli, f'[notifiers.ops]\ntype = "webhook"\nurl = "{receiver.url}/"\nretries = 3\n')
    assert cli.run("--id", "j", "--", "false").returncode == 1
    assert [r["code"] for r in receiver.requests] == [500, 503, 200]
    gaps = [b["at"] - a["at"] for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # 0.25 s, then doubled
    assert cli.history("j")[0]["warnings"] == []


def test_unreachable_target_is_a_warning_never_a_different_status(cli):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    _config(cli, f'[notifiers.down]\ntype = "webhook"\nurl = "http://127.0.0.1:{port}/x"\non = ["ended"]\n'
                 'retries = 2\ntimeout = "3s"\n')
    t0 = time.monotonic()
    p = cli.run("--id", "j", "--", "true")
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 3 + 2.5  # bounded by the notifier's timeout
    (run,) = cli.history("j")
    assert run["status"] == "COMPLETED" and run["exit_code"] == 0
    (warning,) = run["warnings"]
    assert warning.startswith("notify down (webhook) failed: cannot reach http://127.0.0.1") and "3 attempts" in warning
    # a 4xx is not retried
    r = Receiver([404])
    try:
        _config(cli, f'[notifiers.gone]\ntype = "webhook"\nurl = "{r.url}/"\non = ["ended"]\n')
        assert cli.run("--id", "k", "--", "false").returncode == 1
        assert len(r.requests) == 1
        assert cli.history("k")[0]["warnings"] == ["notify gone (webhook) failed: HTTP 404 from " + r.url]
        assert cli.history("k")[0]["status"] == "FAILED"
    finally:
        r.close()


def test_healthchecks_pings_start_success_and_fail(cli, receiver):
    _config(cli, f'[notifiers.hc]\ntype = "healthchecks"\nurl = "{receiver.url}/ping/abc"\n')
    assert cli.run("--id", "ok", "--", "true").returncode == 0
    assert cli.run("--id", "bad", "--", "false").returncode == 1
    paths = [r["path"] for r in receiver.requests]
    assert len(paths) == 4, paths
    rid_ok = paths[0].split("rid=")[1]
    assert paths[0] == f"/ping/abc/start?rid={rid_ok}" and paths[1] == f"/ping/abc?rid={rid_ok}"
    rid_bad = paths[2].split("rid=")[1]
    assert rid_bad != rid_ok and paths[3] == f"/ping/abc/fail?rid={rid_bad}"


def test_ntfy_posts_one_plain_line(cli, receiver):
    _config(cli, f'[notifiers.phone]\ntype = "ntfy"\nurl = "{receiver.url}/mytopic"\npriority = "high"\n')
    assert cli.run("--id", "nightly", "--", "sh", "-c", "exit 2").returncode == 2
    (req,) = receiver.requests
    run = cli.history("nightly")[0]
    body = req["body"].decode()
    assert body.startswith(f"{run['instance_id']} FAILED (exit 2) after ") and "\n" not in body
    assert req["headers"]["Title"] == "nightly: FAILED" and req["headers"]["Priority"] == "high"


def test_command_notifier_gets_the_event_json_on_stdin(cli, tmp_path):
    out = tmp_path / "got.json"
    _config(cli, f'[notifiers.script]\ntype = "command"\ncommand = ["sh", "-c", "cat > {out}"]\non = ["ended"]\n')
    assert cli.run("--id", "c", "--", "true").returncode == 0
    doc = json.loads(out.read_text())
    assert doc["event"] == "ended" and doc["run"]["status"] == "COMPLETED"
    _config(cli, '[notifiers.script]\ntype = "command"\ncommand = ["sh", "-c", "echo nope >&2; exit 7"]\n'
                 'on = ["ended"]\n')
    assert cli.run("--id", "d", "--", "true").returncode == 0
    assert cli.history("d")[0]["warnings"] == ["notify script (command) failed: command sh exited 7: nope"]


def test_longer_than_usual_warns_and_notifies(cli, receiver, wait_until):
    for _ in range(10):
        assert cli.run("--id", "slowish", "--", "true").returncode == 0
    _config(cli, f'[longer_than_usual]\nenabled = true\nk = 2\n\n[notifiers.ops]\ntype = "webhook"\n'
                 f'url = "{receiver.url}/"\non = ["longer_than_usual"]\n')
    p = cli.spawn_run("--id", "slowish", "--", "sleep", "30")
    wait_until(lambda: any(r["warnings"] for r in cli.runs(active=True, job="slowish")), timeout=20,
               what="the longer-than-usual warning")
    (run,) = cli.ps("slowish")
    assert run["warnings"][0].startswith("longer than usual: executing longer than")
    wait_until(lambda: receiver.requests, what="the notification")
    assert json.loads(receiver.requests[0]["body"])["event"] == "warning"
    cli.taro("stop", "slowish", "-f")
    p.wait(timeout=30)
