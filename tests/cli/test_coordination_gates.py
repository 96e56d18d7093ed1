"""Gates: --pending LATCH / --approval NAME, taro release|approve|resume|deny, --pending-timeout (black box)."""

from __future__ import annotations

import json

from runtools.model.status import NOT_EXECUTED_EXIT


def listen(cli, wait_until):
    """`taro listen --json` in the background, subscribed before returning."""
    before = cli.listeners()
    p = cli.spawn(["taro", "listen", "--json"])
    wait_until(lambda: cli.listeners() > before, what="taro listen to subscribe")
    return p


def events_until(cli, proc, pred):
    return [json.loads(x) for x in cli.read_lines(proc, lambda line: pred(json.loads(line)))]


def test_pending_run_waits_until_its_latch_is_released(cli, wait_until, tmp_path):
    marker = tmp_path / "ran"
    p = cli.spawn_run("--id", "nightly-job", "--pending", "nightly", "--", "touch", str(marker))
    r = cli.wait_state("nightly-job", "PENDING")
    assert r["detail"] == "PENDING latch nightly"
    assert r["coordination"]["latch"] == "nightly"
    ps = cli.taro("ps")
    assert "PENDING latch nightly" in ps.stdout
    assert not marker.exists()

    rel = cli.taro("release", "nightly")
    assert rel.returncode == 0, rel.stderr
    assert f"released {r['instance_id']}" in rel.stdout
    assert p.wait(10) == 0
    assert marker.exists()
    h = cli.history("nightly-job")[0]
    assert h["status"] == "COMPLETED"
    (action,) = h["actions"]
    assert action["action"] == "released" and action["latch"] == "nightly" and "taro" in action["by"]


def test_release_lets_through_every_run_on_the_latch_and_only_those(cli, wait_until):
    a = cli.spawn_run("--id", "a", "--pending", "L1", "--", "true")
    b = cli.spawn_run("--id", "b", "--pending", "L1", "--", "true")
    c = cli.spawn_run("--id", "c", "--pending", "L2", "--", "true")
    for job in ("a", "b", "c"):
        cli.wait_state(job, "PENDING")
    rel = cli.taro("release", "L1")
    assert rel.returncode == 0
    assert len(rel.stdout.splitlines()) == 2
    assert a.wait(10) == 0 and b.wait(10) == 0
    assert cli.ps()[0]["job_id"] == "c"  # still pending on L2
    assert cli.taro("release", "L2").returncode == 0
    assert c.wait(10) == 0


def test_release_of_an_unknown_latch_says_so(cli):
    p = cli.taro("release", "nobody-waits")
    assert p.returncode == 3
    assert "no run is pending on latch nobody-waits" in p.stderr


def test_approve_and_resume_release_matching_approval_runs(cli):
    a = cli.spawn_run("--id", "deploy", "--approval", "ops", "--", "true")
    b = cli.spawn_run("--id", "migrate", "--approval", "ops", "--", "true")
    assert cli.wait_state("deploy", "PENDING")["detail"] == "PENDING approval ops"
    cli.wait_state("migrate", "PENDING")
    ok = cli.taro("approve", "deploy")
    assert ok.returncode == 0 and ok.stdout.startswith("approved deploy@")
    assert a.wait(10) == 0
    assert cli.wait_state("migrate", "PENDING")  # untouched
    assert cli.taro("resume", "migr*").returncode == 0
    assert b.wait(10) == 0
    for job in ("deploy", "migrate"):
        h = cli.history(job)[0]
        assert h["status"] == "COMPLETED"
        assert [a["action"] for a in h["actions"]] == ["approved"]


def test_denied_run_never_executes_and_records_who_and_why(cli, wait_until, tmp_path):
    marker = tmp_path / "ran"
    lp = listen(cli, wait_until)
    p = cli.spawn_run("--id", "risky", "--approval", "cab", "--", "touch", str(marker))
    cli.wait_state("risky", "PENDING")
    d = cli.taro("deny", "risky", "--reason", "change freeze")
    assert d.returncode == 0, d.stderr
    assert p.wait(10) == NOT_EXECUTED_EXIT["DENIED"] == 102
    assert not marker.exists()
    h = cli.history("risky")[0]
    assert (h["status"], h["outcome"], h["started_at"]) == ("DENIED", "REJECTED", None)
    (action,) = h["actions"]
    assert action["action"] == "denied" and action["reason"] == "change freeze" and action["by"]
    assert "change freeze" in h["error"]
    evs = events_until(cli, lp, lambda e: e["event"] == "ended")
    names = [e["event"] for e in evs]
    assert names == ["created", "pending", "denied", "ended"]
    assert evs[2]["detail"]["reason"] == "change freeze"
    # text history shows the reason too
    assert "change freeze" in cli.taro("history").stdout


def test_deny_without_pending_runs_fails(cli):
    cli.run("--id", "done", "--", "true")
    p = cli.taro("deny", "done")
    assert p.returncode == 3


def test_pending_timeout_ends_timeout_without_executing(cli, tmp_path):
    marker = tmp_path / "ran"
    p = cli.run("--id", "late", "--pending", "never", "--pending-timeout", "0.2s", "--", "touch", str(marker))
    assert p.returncode == NOT_EXECUTED_EXIT["TIMEOUT"] == 106
    assert not marker.exists()
    h = cli.history("late")[0]
    assert h["status"] == "TIMEOUT" and h["started_at"] is None
    assert "not released within" in h["error"]


def test_stopping_a_pending_run_cancels_it(cli):
    p = cli.spawn_run("--id", "idle", "--pending", "x", "--", "true")
    cli.wait_state("idle", "PENDING")
    assert cli.taro("stop", "idle").returncode == 0
    assert p.wait(10) == NOT_EXECUTED_EXIT["CANCELLED"] == 104
    h = cli.history("idle")[0]
    assert h["status"] == "CANCELLED" and h["started_at"] is None


def test_taro_wait_pending_returns_for_a_run_already_pending(cli):
    cli.spawn_run("--id", "w", "--pending", "x", "--", "true")
    cli.wait_state("w", "PENDING")
    p = cli.taro("wait", "w", "PENDING", "--timeout", "5")
    assert p.returncode == 0 and "PENDING" in p.stdout


def test_approval_and_latch_gates_both_have_to_open(cli):
    p = cli.spawn_run("--id", "two", "--approval", "boss", "--pending", "L", "--", "true")
    assert cli.wait_state("two", "PENDING")["detail"] == "PENDING approval boss"
    # the latch is not the current gate yet, but its release is kept for when the run gets there
    assert cli.taro("release", "L").returncode == 0
    assert cli.taro("approve", "two").returncode == 0
    assert p.wait(10) == 0
    assert [a["action"] for a in cli.history("two")[0]["actions"]] == ["released", "approved"]
