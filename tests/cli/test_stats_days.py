"""taro stats --days N: per job and local day, runs, success rate and p50/p95/max."""

from __future__ import annotations

import json


def test_stats_per_day(cli):
    for cmd in ("true", "true", "false"):
        assert cli.run("--id", "daily", "--", cmd).returncode in (0, 1)
    rows = json.loads(cli.taro("stats", "--days", "7", "--json").stdout)
    (row,) = rows
    assert row["job_id"] == "daily" and row["runs"] == 3 and row["succeeded"] == 2 and row["failed"] == 1
    assert abs(row["success_rate"] - 2 / 3) < 1e-3 and row["p95_s"] is not None and len(row["day"]) == 10
    text = cli.taro("stats", "--days", "1").stdout
    assert text.splitlines()[0].split() == ["DAY", "JOB", "RUNS", "SUCCESS", "P50", "P95", "MAX"]
    assert "67%" in text
    p = cli.taro("stats", "--days", "0")
    assert p.returncode == 2 and "--days" in p.stderr
