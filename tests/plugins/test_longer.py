""""Longer than usual" is on by default: with no config file at all, a run executing past k x p95
of its job's last successful runs (k 2, at least 10 of them) gets the warning; `enabled = false`
turns it off; a job with fewer than 10 successful runs is never flagged."""

from __future__ import annotations

from runtools.config import Config
from runtools.job.longer import LongerWatch, from_config


def test_on_by_default_without_any_config(cli, wait_until):
    for _ in range(10):
        assert cli.run("--id", "usual", "--", "true").returncode == 0
    assert not (cli.cwd / "runtools.toml").exists()
    p = cli.spawn_run("--id", "usual", "--", "sleep", "30")
    (run,) = wait_until(lambda: [r for r in cli.runs(active=True, job="usual") if r["warnings"]], timeout=20,
                        what="the longer-than-usual warning")
    assert run["warnings"][0].startswith("longer than usual: executing longer than ")
    assert "(2 x p95 " in run["warnings"][0] and "of the last 10 successful runs)" in run["warnings"][0]
    (shown,) = cli.ps("usual")
    assert shown["warnings"] == run["warnings"]
    cli.taro("stop", "usual", "-f")
    p.wait(timeout=30)


def test_defaults_and_off_switch():
    class Job:
        pass

    w = from_config(Job(), Config())
    assert isinstance(w, LongerWatch) and w.k == 2.0 and w.min_runs == 10
    assert from_config(Job(), Config("x.toml", {"longer_than_usual": {"enabled": False}})) is None


def test_too_few_past_runs_is_no_limit(cli):
    from runtools.env import RunQuery, open_environment

    for _ in range(9):
        assert cli.run("--id", "young", "--", "true").returncode == 0
    assert cli.run("--id", "young", "--", "false").returncode == 1  # a failure does not count

    class Job:
        pass

    with open_environment() as env:
        job = Job()
        job.env = env
        job.record = env.find_runs(RunQuery(limit=1))[0]
        assert LongerWatch(job).limit() == (None, "")
        assert cli.run("--id", "young", "--", "true").returncode == 0
        limit, text = LongerWatch(job).limit()
        assert limit is not None and limit > 0 and "of the last 10 successful runs" in text
