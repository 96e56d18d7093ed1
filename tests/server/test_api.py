"""taro serve's JSON API, black box: a real `taro serve` subprocess on a free loopback port,
real runs (`run job`), real HTTP. Auth matrix, filters, keyset paging, output, errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from ._serve import OPERATE, READ, Served

READ_ROUTES = ["/", "/api/runs", "/api/runs/x@y", "/api/stats", "/api/jobs/disabled", "/metrics",
               "/api/openapi.json", "/api/session", "/assets/app.js"]
CONTROL_ROUTES = ["/api/runs/x@y/stop", "/api/runs/x@y/approve", "/api/runs/x@y/deny", "/api/release",
                  "/api/jobs/some-job/disable", "/api/jobs/some-job/enable"]


def test_auth_matrix_none_wrong_read_operate(served):
    for path in READ_ROUTES:
        for token, want in ((None, 401), ("wrong-token-123456", 401)):
            r = served.get(path, token)
            assert r.status_code == want, (path, token, r.text)
            if path != "/":
                assert "error" in r.json()
        assert served.get(path, READ).status_code in (200, 404), path
        assert served.get(path, OPERATE).status_code in (200, 404), path
    body = {"latch": "L"}
    for path in CONTROL_ROUTES:
        assert served.post(path, body if path == "/api/release" else {}, None).status_code == 401, path
        assert served.post(path, body if path == "/api/release" else {}, "nope-nope-nope").status_code == 401
        r = served.post(path, body if path == "/api/release" else {}, READ)
        assert r.status_code == 403, (path, r.text)
        assert "operate" in r.json()["error"]
        assert served.post(path, body if path == "/api/release" else {}, OPERATE).status_code in (200, 404)
    # a Basic scheme or a token in the query string is no way in
    with served.client(None) as c:
        assert c.get("/api/runs", headers={"Authorization": f"Basic {OPERATE}"}).status_code == 401
        assert c.get(f"/api/runs?token={OPERATE}").status_code == 401
    me = served.get("/api/session", READ).json()
    assert me["name"] == "bob" and me["role"] == "read"


def test_runs_filters_paging_and_errors(cli, served):
    for i in range(7):
        assert cli.run("--id", f"job{i % 2}", "--", "sh", "-c", f"exit {int(i % 3 == 0)}").returncode in (0, 1)
    cli_all = cli.history()
    api_all = served.get("/api/runs").json()
    assert [r["instance_id"] for r in api_all] == [r["instance_id"] for r in cli_all]
    assert api_all[0].keys() == cli_all[0].keys()  # the same documented keys as --json
    # keyset paging: every run exactly once, newest first, whatever the page size
    seen, cursor = [], None
    while True:
        r = served.get("/api/runs", params={"limit": 3, **({"before": cursor} if cursor else {})})
        assert r.status_code == 200
        seen += [x["instance_id"] for x in r.json()]
        cursor = r.headers.get("x-next-cursor")
        if not cursor:
            break
    assert seen == [r["instance_id"] for r in api_all]
    # filters mirror taro history
    assert {r["job_id"] for r in served.get("/api/runs", params={"pattern": "job1"}).json()} == {"job1"}
    failed = served.get("/api/runs", params=[("status", "FAILED")]).json()
    assert failed and all(r["status"] == "FAILED" for r in failed)
    assert [r["instance_id"] for r in served.get("/api/runs", params={"outcome": "fault"}).json()] == \
        [r["instance_id"] for r in failed]
    last = served.get("/api/runs", params={"last": "true"}).json()
    assert sorted(r["job_id"] for r in last) == ["job0", "job1"]
    assert served.get("/api/runs", params={"active": "true"}).json() == []
    assert served.get("/api/runs", params={"since": "1h", "limit": 2}).status_code == 200
    one = served.get(f"/api/runs/{api_all[0]['instance_id']}")
    assert one.status_code == 200 and one.json()["instance_id"] == api_all[0]["instance_id"]
    stats = served.get("/api/stats").json()
    assert {s["job_id"]: s["runs"] for s in stats} == {"job0": 4, "job1": 3}
    # a bad parameter is a 400 that says what to fix, never a 500
    for params, words in (({"limit": "x"}, "whole number"), ({"limit": "-1"}, "0 to"), ({"status": "NOPE"}, "status"),
                          ({"outcome": "MAYBE"}, "outcome"), ({"since": "whenever"}, "since"),
                          ({"active": "sometimes"}, "true or false"), ({"pattern": "a b"}, "pattern"),
                          ({"before": "garbage"}, "X-Next-Cursor"), ({"colour": "red"}, "unknown parameter")):
        r = served.get("/api/runs", params=params)
        assert r.status_code == 400, (params, r.text)
        assert words in r.json()["error"], (params, r.json())
    r = served.get("/api/runs/nobody@nothing")
    assert r.status_code == 404 and "no run" in r.json()["error"]
    assert served.get("/api/nowhere").status_code == 404
    assert served.post("/api/runs/a@b/stop", None).status_code == 404
    with served.client() as c:
        r = c.post("/api/release", content=b"{not json")
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        assert c.post("/api/release", json={"latch": 5}).status_code == 400
        assert c.post("/api/release", json={}).status_code == 400
        assert c.delete("/api/runs").status_code == 405


def test_output_whole_tail_and_follow_streams_through_the_server(cli, served, wait_until):
    p = cli.spawn_gated("talker", before="echo first; echo err-line >&2", after="echo second")
    run = cli.wait_state("talker")
    iid = run["instance_id"]
    wait_until(lambda: "first" in served.get(f"/api/runs/{iid}/output").text, what="first line stored")
    assert served.get(f"/api/runs/{iid}/output", params={"stream": "stderr"}).text == "err-line\n"
    with served.client() as c, c.stream("GET", f"/api/runs/{iid}/output", params={"follow": "true",
                                                                                  "stream": "stdout"}) as resp:
        assert resp.status_code == 200
        chunks = resp.iter_bytes()
        got = b""
        while b"first" not in got:
            got += next(chunks)
        cli.release(p)
        for chunk in chunks:
            got += chunk
    assert got == b"first\nsecond\n"  # the stream ended with the run
    assert p.wait(10) == 0
    assert served.get(f"/api/runs/{iid}/output", params={"tail": 1, "stream": "stdout"}).text == "second\n"
    assert served.get(f"/api/runs/{iid}/output", params={"stream": "both"}).status_code == 400


def test_control_actions_are_recorded_with_the_token_name_and_idempotent(cli, served, wait_until):
    gated = cli.spawn_run("--id", "deploy", "--approval", "ops", "--", "true")
    pending = cli.wait_state("deploy", "PENDING")
    iid = pending["instance_id"]
    r = served.post(f"/api/runs/{iid}/approve")
    assert r.status_code == 200, r.text
    assert gated.wait(10) == 0
    rec = served.get(f"/api/runs/{iid}").json()
    assert rec["status"] == "COMPLETED"
    assert [(a["action"], a["by"]) for a in rec["actions"]] == [("approved", "alice (taro serve)")]
    again = served.post(f"/api/runs/{iid}/approve")  # idempotent: the first answer stands
    assert again.status_code == 200 and again.json()["already"] is True
    assert served.post(f"/api/runs/{iid}/deny").status_code == 409  # approved: cannot be denied now

    d = cli.spawn_run("--id", "risky", "--approval", "cab", "--", "true")
    iid = cli.wait_state("risky", "PENDING")["instance_id"]
    assert served.post(f"/api/runs/{iid}/deny", {"reason": "not today"}).status_code == 200
    assert d.wait(10) == 102
    rec = served.get(f"/api/runs/{iid}").json()
    assert rec["status"] == "DENIED"
    assert rec["actions"][0]["by"] == "alice (taro serve)" and rec["actions"][0]["reason"] == "not today"

    s = cli.spawn_gated("sleeper")
    iid = cli.wait_state("sleeper")["instance_id"]
    r = served.post(f"/api/runs/{iid}/stop", {"interrupt": False})
    assert r.status_code == 200, r.text
    s.wait(10)
    rec = wait_until(lambda: (x := served.get(f"/api/runs/{iid}").json())["stage"] == "ENDED" and x)
    assert rec["status"] == "STOPPED"
    assert rec["actions"][-1]["action"] == "stopped" and rec["actions"][-1]["by"] == "alice (taro serve)"
    again = served.post(f"/api/runs/{iid}/stop")
    assert again.status_code == 200 and again.json()["already"] is True
    assert served.post(f"/api/runs/{iid}/stop", {"interrupt": "yes"}).status_code == 400

    # latch release and disable/enable, idempotent
    a = cli.spawn_run("--id", "nightly", "--pending", "L1", "--", "true")
    cli.wait_state("nightly", "PENDING")
    r = served.post("/api/release", {"latch": "L1"})
    assert r.status_code == 200 and len(r.json()["released"]) == 1
    assert a.wait(10) == 0
    assert served.post("/api/release", {"latch": "L1"}).json()["released"] == []
    assert served.post("/api/jobs/nightly/disable").json()["changed"] is True
    assert served.post("/api/jobs/nightly/disable").json()["changed"] is False
    listed = served.get("/api/jobs/disabled").json()
    assert [(x["pattern"], x["by"]) for x in listed] == [("nightly", "alice (taro serve)")]
    assert cli.run("--id", "nightly", "--", "true").returncode == 101  # DISABLED
    assert served.post("/api/jobs/nightly/enable").json()["changed"] is True
    assert served.post("/api/jobs/nightly/enable").json()["changed"] is False
    assert served.post("/api/jobs/a%20b/disable").status_code == 400


def test_metrics_are_prometheus_text(cli, served):
    cli.run("--id", "m", "--", "false")
    text = served.get("/metrics").text
    assert 'runtools_active_runs{state="EXECUTING"} 0' in text
    assert 'runtools_runs_ended_last_hour{status="FAILED"} 1' in text
    assert "# TYPE runtools_run_duration_seconds histogram" in text


def test_generated_token_is_owner_only_and_never_printed(cli, tmp_path, home):
    s = Served(cli, tmp_path, tokens=False)
    try:
        path = home / "local" / "serve.tokens"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        secret = next(w for w in path.read_text().split() if w.startswith("operate:")).split(":", 1)[1]
        assert s.get("/api/runs", secret).status_code == 200
        assert s.get("/api/runs", "x" + secret).status_code == 401
    finally:
        err = s.stop()
    assert str(path) in err
    assert secret not in err


def test_runtools_token_variable_and_bind_note(cli, tmp_path):
    s = Served(cli, tmp_path, "--bind", "0.0.0.0", tokens=False, env={"RUNTOOLS_TOKEN": "read:env-token-1234"})
    try:
        assert s.get("/api/runs", "env-token-1234").status_code == 200
        assert s.post("/api/release", {"latch": "x"}, "env-token-1234").status_code == 403
    finally:
        err = s.stop()
    assert "not only on this machine" in err
    assert "env-token-1234" not in err


def test_bad_options_exit_2(cli):
    p = cli.taro("serve", "--port", "70000")
    assert p.returncode == 2 and "--port" in p.stderr
    p = cli.taro("serve", "--port", "0", "--token-file", "/nonexistent/tokens")
    assert p.returncode == 2 and "cannot read" in p.stderr


def test_run_job_and_taro_ps_never_import_the_server_stack(cli):
    for argv in ([cli.bin("run"), "job", "--", "true"], [cli.bin("taro"), "ps"], [cli.bin("taro"), "history"]):
        p = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True,
                           timeout=30, env=cli._env(None), cwd=cli.cwd)
        assert p.returncode == 0, p.stderr
        for heavy in ("starlette", "uvicorn", "anyio", "httpx", "runtools.server", "runtools.remote"):
            assert f" {heavy}" not in p.stderr, (argv, heavy)


@pytest.mark.parametrize("path", ["/api/openapi.json"])
def test_openapi_lists_every_route(served, path):
    spec = served.get(path).json()
    assert spec["openapi"].startswith("3.")
    for route in ("/api/runs", "/api/runs/{instance_id}", "/api/runs/{instance_id}/output", "/api/events",
                  "/api/runs/{instance_id}/stop", "/api/runs/{instance_id}/approve", "/api/runs/{instance_id}/deny",
                  "/api/release", "/api/jobs/{job}/disable", "/api/jobs/{job}/enable", "/api/stats", "/metrics"):
        assert route in spec["paths"], route
    json.dumps(spec)
    assert os.path.basename(path) == "openapi.json"
