"""taro clean (--older-than / --keep per job, --dry-run, never active runs, output files gone)
and automatic retention from runtools.toml piggybacked on run job's end (at most once per interval)."""

from __future__ import annotations

import json
import os

import pytest


def _runs(cli, job: str, n: int) -> None:
    for i in range(n):
        p = cli.run("--id", job, "--", "sh", "-c", f"echo {job}-{i}")
        assert p.returncode == 0, p.stderr


def test_keep_n_per_job_dry_run_first_and_output_files_go(cli):
    _runs(cli, "a", 4)
    _runs(cli, "b", 2)
    before = cli.history()
    outputs = [r["stdout_path"] for r in before if r["job_id"] == "a"]
    assert all(os.path.exists(p) for p in outputs)
    dry = cli.taro("clean", "--keep", "2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would remove a@") == 2 and "would remove b@" not in dry.stdout
    assert "dry run: nothing removed" in dry.stdout
    assert len(cli.history()) == 6
    doc = json.loads(cli.taro("clean", "--keep", "2", "--json").stdout)
    assert doc["removed"] == 2 and not doc["dry_run"]
    oldest_two = sorted(before, key=lambda r: r["created_at"])
    oldest_a = [r["instance_id"] for r in oldest_two if r["job_id"] == "a"][:2]
    assert [r["instance_id"] for r in doc["runs"]] == oldest_a
    after = cli.history()
    assert sorted(r["job_id"] for r in after) == ["a", "a", "b", "b"]
    gone = [r["stdout_path"] for r in before if r["instance_id"] in oldest_a]
    assert not any(os.path.exists(p) for p in gone)
    assert all(os.path.exists(r["stdout_path"]) for r in after)


def test_older_than_never_removes_active_runs_and_pattern_limits(cli):
    _runs(cli, "old", 2)
    _runs(cli, "other", 1)
    gated = cli.spawn_gated("busy")
    cli.wait_state("busy")
    p = cli.taro("clean", "old", "busy", "--older-than", "0s")
    assert p.returncode == 0, p.stderr
    assert "removed 2 runs" in p.stdout
    assert [r["job_id"] for r in cli.history()] == ["other"]
    assert [r["job_id"] for r in cli.ps()] == ["busy"]
    cli.release(gated)
    assert gated.wait(timeout=30) == 0
    assert {r["job_id"] for r in cli.history()} == {"other", "busy"}


def test_clean_usage_errors(cli):
    for argv, word in ((["clean"], "--older-than"), (["clean", "--keep", "x"], "--keep"),
                       (["clean", "--older-than", "soon"], "--older-than"), (["clean", "[x", "--keep", "1"], "[x")):
        p = cli.taro(*argv)
        assert p.returncode == 2 and word in p.stderr and len(p.stderr.splitlines()) == 1, (argv, p.stderr)


def test_automatic_retention_runs_at_most_once_per_interval(cli, wait_until):
    _runs(cli, "auto", 4)
    (cli.cwd / "runtools.toml").write_text('[retention]\nkeep = 2\ninterval = "1h"\n')
    assert cli.run("--id", "auto", "--", "true").returncode == 0  # due: no stamp yet
    wait_until(lambda: len(cli.history()) == 2, what="automatic retention kept 2 runs")
    stamp = cli.home / "local" / ".retention-stamp"
    assert stamp.exists()
    won = stamp.stat().st_mtime_ns
    _runs(cli, "auto", 2)  # not due again within the hour: nothing removed
    assert len(cli.history()) == 4
    assert stamp.stat().st_mtime_ns == won  # no wrapper won the stamp: no worker started (not one just slow)
    os.utime(stamp, (0, 0))  # an hour (and more) later
    assert cli.run("--id", "auto", "--", "true").returncode == 0
    wait_until(lambda: len(cli.history()) == 2, what="automatic retention ran again")


def test_automatic_retention_of_a_named_postgres_environment(cli, wait_until):
    server = pytest.importorskip("pg.server")
    url = server.postgres_url()  # skips without PostgreSQL, fails under CI
    assert cli.taro("env", "add", "shared", url).returncode == 0
    for _ in range(3):
        assert cli.run("-e", "shared", "--id", "pgjob", "--", "true").returncode == 0
    (cli.cwd / "runtools.toml").write_text('[retention]\nkeep = 1\n')
    assert cli.run("-e", "shared", "--id", "pgjob", "--", "true").returncode == 0
    wait_until(lambda: len(cli.history("-e", "shared")) == 1, what="automatic retention on postgres")
    assert (cli.home / ".retention-stamp-shared").exists()


def test_automatic_retention_of_a_postgres_environment_given_by_url(cli, wait_until):
    server = pytest.importorskip("pg.server")
    url = server.postgres_url(password=True)  # skips without PostgreSQL, fails under CI
    for _ in range(3):
        assert cli.run("-e", url, "--id", "pgjob", "--", "true").returncode == 0
    (cli.cwd / "runtools.toml").write_text('[retention]\nkeep = 1\n')
    assert cli.run("-e", url, "--id", "pgjob", "--", "true").returncode == 0
    wait_until(lambda: len(cli.history("-e", url)) == 1, what="automatic retention on a raw URL")
    (stamp,) = cli.home.glob(".retention-stamp-pg-*")  # one per database and schema; no URL, no password
    assert server.PASSWORD not in stamp.name
    # the same database named in the config ([environments.NAME] url = ...) shares that stamp
    (cli.cwd / "runtools.toml").write_text(f'[retention]\nkeep = 1\n\n[environments.shared]\nurl = "{url}"\n')
    os.utime(stamp, (0, 0))  # due again
    assert cli.run("-e", "shared", "--id", "pgjob", "--", "true").returncode == 0
    wait_until(lambda: len(cli.history("-e", "shared")) == 1, what="automatic retention of [environments.NAME]")
    assert list(cli.home.glob(".retention-stamp-pg-*")) == [stamp]
