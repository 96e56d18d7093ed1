"""taro ps, history (hist), stats: filters, patterns, JSON keys (black box, subprocess)."""

from __future__ import annotations

import pytest

RUN_KEYS = {
    "instance_id", "job_id", "run_id", "stage", "state", "status", "outcome", "exit_code", "created_at",
    "started_at", "ended_at", "duration_s", "tags", "host", "pid", "command", "warnings", "progress",
}
STATS_KEYS = {"job_id", "runs", "success_rate", "last_status", "p50_s", "p95_s", "max_s"}


@pytest.fixture
def ran(cli) -> list[dict]:
    """Six ended runs (oldest first): a ok, b fails, a ok (tag nightly), c not found, b ok, a exit 3."""
    for args in (
        ("--id", "a", "--", "true"),
        ("--id", "b", "--", "false"),
        ("--id", "a", "--tag", "nightly", "--", "true"),
        ("--id", "c", "--", "./missing"),
        ("--id", "b", "--run-id", "special", "--", "true"),
        ("--id", "a", "--", "sh", "-c", "exit 3"),
    ):
        cli.run(*args)
    runs = cli.history()
    assert len(runs) == 6
    return list(reversed(runs))


def ids(runs: list[dict]) -> list[str]:
    return [r["instance_id"] for r in runs]


def test_history_newest_first_with_documented_keys(cli, ran):
    h = cli.history()
    assert ids(h) == ids(reversed(ran))
    for r in h:
        assert RUN_KEYS <= r.keys()
    assert [r["status"] for r in h] == ["FAILED", "COMPLETED", "ERROR", "COMPLETED", "FAILED", "COMPLETED"]
    assert cli.json("hist") == h


def test_history_table_for_people(cli, ran):
    p = cli.taro("history")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert lines[0].split()[:2] == ["JOB", "RUN"]
    assert len(lines) == 7
    assert "special" in p.stdout and "FAILED" in p.stdout


def test_history_limit(cli, ran):
    assert ids(cli.history("-n", "2")) == ids(reversed(ran[-2:]))
    assert ids(cli.history("--limit", "1")) == [ran[-1]["instance_id"]]
    assert cli.history("-n", "0") == []


@pytest.mark.parametrize("patterns, expected", [
    (["a"], [0, 2, 5]),
    (["b", "c"], [1, 3, 4]),
    (["!a"], [1, 3, 4]),
    (["?"], [0, 1, 2, 3, 4, 5]),
    (["nightly"], [2]),
    (["special"], [4]),
    (["b@spec*"], [4]),
    (["*@special"], [4]),
    (["[ab]", "!nightly"], [0, 1, 4, 5]),
    (["nomatch"], []),
])
def test_history_patterns(cli, ran, patterns, expected):
    assert ids(cli.history(*patterns)) == ids(reversed([ran[i] for i in expected]))


def test_history_status_and_outcome(cli, ran):
    assert ids(cli.history("--status", "FAILED")) == ids(reversed([ran[1], ran[5]]))
    fault = ids(reversed([ran[1], ran[3], ran[5]]))
    assert ids(cli.history("--status", "failed", "--status", "error")) == fault
    assert ids(cli.history("--outcome", "FAULT")) == fault
    assert ids(cli.history("--outcome", "success", "a")) == ids(reversed([ran[0], ran[2]]))
    assert cli.history("--outcome", "REJECTED") == []


def test_history_last_per_job(cli, ran):
    assert ids(cli.history("--last")) == ids(reversed([ran[3], ran[4], ran[5]]))
    assert ids(cli.history("--last", "!a")) == ids(reversed([ran[3], ran[4]]))


def test_history_since_until(cli, ran):
    mid = ran[3]["created_at"]
    assert ids(cli.history("--since", mid)) == ids(reversed(ran[3:]))
    assert ids(cli.history("--until", mid)) == ids(reversed(ran[:3]))
    assert ids(cli.history("--since", ran[1]["created_at"], "--until", mid)) == ids(reversed(ran[1:3]))
    assert ids(cli.history("--since", "1h")) == ids(reversed(ran))
    assert ids(cli.history("--since", "today")) == ids(reversed(ran))
    assert cli.history("--until", "2000-01-01") == []


def test_history_active_includes_running(cli, ran):
    p = cli.spawn_gated("live")
    r = cli.wait_state("live")
    assert r["instance_id"] not in ids(cli.history())
    assert cli.history("--active")[0]["instance_id"] == r["instance_id"]
    cli.release(p)
    assert p.wait(10) == 0


def test_ps_shows_active_runs_only_with_patterns(cli, ran):
    assert cli.ps() == []
    assert cli.taro("ps").stdout == ""
    p1 = cli.spawn_gated("svc-one", "--tag", "svc")
    one = cli.wait_state("svc-one")
    p2 = cli.spawn_gated("other")
    two = cli.wait_state("other")
    ps = cli.ps()
    assert ids(ps) == [one["instance_id"], two["instance_id"]]  # oldest first
    for r in ps:
        assert RUN_KEYS <= r.keys()
        assert (r["stage"], r["state"], r["status"], r["outcome"], r["ended_at"]) == (
            "RUNNING", "EXECUTING", None, None, None)
    assert ids(cli.ps("svc")) == [one["instance_id"]]
    assert ids(cli.ps("!svc-*")) == [two["instance_id"]]
    assert ids(cli.ps(one["instance_id"])) == [one["instance_id"]]
    table = cli.taro("ps").stdout.splitlines()
    assert table[0].split()[:3] == ["JOB", "RUN", "ID"] and len(table) == 3
    assert "EXECUTING" in table[1]
    for p in (p1, p2):
        cli.release(p)
        assert p.wait(10) == 0
    assert cli.ps() == []


def test_stats(cli, ran):
    s = cli.json("stats")
    assert [r["job_id"] for r in s] == ["a", "b", "c"]
    for r in s:
        assert STATS_KEYS <= r.keys()
    a, b, c = s
    assert (a["runs"], a["success_rate"], a["last_status"]) == (3, round(2 / 3, 4), "FAILED")
    assert (b["runs"], b["success_rate"], b["last_status"]) == (2, 0.5, "COMPLETED")
    assert (c["runs"], c["success_rate"], c["last_status"]) == (1, 0.0, "ERROR")
    for r in (a, b):
        assert 0 <= r["p50_s"] <= r["p95_s"] <= r["max_s"]
    assert [r["job_id"] for r in cli.json("stats", "b")] == ["b"]
    assert cli.json("stats", "--since", "2999-01-01") == []
    t = cli.taro("stats")
    assert t.returncode == 0 and t.stdout.splitlines()[0].split()[:2] == ["JOB", "RUNS"]


@pytest.mark.parametrize("args", [
    ["history", "[abc"],
    ["history", "a b"],
    ["history", "!"],
    ["history", "--since", "the other day"],
    ["history", "--until", "soonish"],
    ["history", "--status", "GREAT"],
    ["history", "--outcome", "MEH"],
    ["history", "-n", "-1"],
    ["history", "--bogus"],
    ["ps", "x@y@z"],
    ["stats", "--since", "xyz"],
    ["frobnicate"],
])
def test_bad_input_one_line_exit_2(cli, args):
    p = cli.taro(*args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stdout == ""


def test_views_on_a_fresh_home_are_empty(cli):
    for verb in ("ps", "history", "stats"):
        assert cli.json(verb) == []
