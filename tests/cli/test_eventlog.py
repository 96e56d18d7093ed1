"""The unified event log: every lifecycle event of the environment's runs as JSON lines (the
`taro listen --json` objects), owner-only, rotated by size; `taro log [PATTERN] [-f]` reads it."""

from __future__ import annotations

import json
import stat


def test_events_are_logged_and_taro_log_reads_them(cli):
    (cli.cwd / "runtools.toml").write_text("[eventlog]\nenabled = true\n")
    assert cli.run("--id", "a", "--", "true").returncode == 0
    assert cli.run("--id", "b", "--output-warn", "W", "--", "sh", "-c", "echo W; exit 1").returncode == 1
    path = cli.home / "local" / "events.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    docs = [json.loads(x) for x in cli.taro("log", "--json").stdout.splitlines()]
    events = [(d["job_id"], d["event"]) for d in docs]
    assert events == [("a", "created"), ("a", "executing"), ("a", "ended"),
                      ("b", "created"), ("b", "executing"), ("b", "warning"), ("b", "ended")]
    assert set(docs[0]) >= {"event", "instance_id", "job_id", "run_id", "stage", "state", "status", "timestamp",
                            "detail", "run"}
    assert docs[-1]["status"] == "FAILED" and docs[-1]["run"]["exit_code"] == 1
    last = cli.taro("log", "b", "--json", "-n", "1").stdout.splitlines()
    assert [json.loads(x)["job_id"] for x in last] == ["b"]
    text = cli.taro("log", "a").stdout.splitlines()
    assert len(text) == 3 and "a@" in text[2] and "ended" in text[2] and "COMPLETED" in text[2]


def test_the_log_rotates_by_size(cli):
    (cli.cwd / "runtools.toml").write_text('[eventlog]\nenabled = true\nmax_size = "4K"\nkeep = 2\n')
    for i in range(8):
        assert cli.run("--id", f"r{i}", "--", "true").returncode == 0
    d = cli.home / "local"
    assert (d / "events.jsonl.1").exists() and (d / "events.jsonl.2").exists()
    assert not (d / "events.jsonl.3").exists()
    for f in ("events.jsonl", "events.jsonl.1", "events.jsonl.2"):
        if not (d / f).exists():  # the last write may just have rotated the current file away
            assert f == "events.jsonl"
            continue
        assert stat.S_IMODE((d / f).stat().st_mode) == 0o600
        for line in (d / f).read_text().splitlines():
            json.loads(line)  # whole lines only
    docs = [json.loads(x) for x in cli.taro("log", "--json").stdout.splitlines()]
    assert docs[-1]["job_id"] == "r7" and docs[-1]["event"] == "ended"


def test_taro_log_follow_goes_on_with_live_events(cli, wait_until):
    (cli.cwd / "runtools.toml").write_text("[eventlog]\nenabled = true\n")
    assert cli.run("--id", "before", "--", "true").returncode == 0
    f = cli.spawn(["taro", "log", "-f", "--json", "--timeout", "20"])
    lines = cli.read_lines(f, lambda ln: b'"ended"' in ln)
    assert json.loads(lines[-1])["job_id"] == "before"
    wait_until(lambda: cli.listeners() > 0, what="taro log -f subscribed")
    assert cli.run("--id", "after", "--", "true").returncode == 0
    lines = cli.read_lines(f, lambda ln: b'"ended"' in ln)
    assert [json.loads(x)["event"] for x in lines] == ["created", "executing", "ended"]
    assert json.loads(lines[-1])["job_id"] == "after"


def test_without_config_nothing_is_logged(cli):
    assert cli.run("--id", "a", "--", "true").returncode == 0
    assert not (cli.home / "local" / "events.jsonl").exists()
    p = cli.taro("log")
    assert p.returncode == 0 and "event log is off" in p.stderr
