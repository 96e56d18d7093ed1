"""Nasty states: a damaged row in the store, a full disk. Runs still run, readers still read,
and history tells the truth about what happened."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest


def _insert_raw(db: Path, instance_id: str, stage: str, status: str | None, data: str) -> None:
    job, run = instance_id.split("@")
    with sqlite3.connect(db) as c:
        c.execute(
            "INSERT INTO runs (instance_id, job_id, run_id, stage, status, created_at, data) VALUES (?,?,?,?,?,?,?)",
            (instance_id, job, run, stage, status, 1.0e9, data),
        )


def test_a_damaged_row_is_shown_not_fatal_and_repaired_once_its_run_is_gone(cli, home):
    assert cli.run("--id", "good", "--", "true").returncode == 0
    db = home / "local" / "runs.db"
    _insert_raw(db, "broken@r1", "ENDED", "COMPLETED", "{not json")
    _insert_raw(db, "stuck@r2", "RUNNING", None, '{"job_id": 5}')  # no lease: its process is gone

    h = cli.history()
    by_id = {r["instance_id"]: r for r in h}
    assert [r["status"] for r in h if r["job_id"] == "good"] == ["COMPLETED"]
    assert by_id["broken@r1"]["status"] == "COMPLETED"
    assert "damaged run record" in by_id["broken@r1"]["error"]
    assert by_id["stuck@r2"]["status"] == "LOST"  # reaped like any run whose lease is gone
    assert cli.ps() == []
    assert cli.taro("history").returncode == 0 and cli.taro("stats").returncode == 0
    # reaping rewrote the active row whole: it decodes again
    with sqlite3.connect(db) as c:
        (data,) = c.execute("SELECT data FROM runs WHERE instance_id='stuck@r2'").fetchone()
    assert json.loads(data)["status"] == "LOST"
    # and coordination is not blocked by the damaged rows
    p = cli.run("-x", "--id", "stuck", "--", "echo", "ran")
    assert (p.returncode, p.stdout) == (0, "ran\n")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs (needs root; skipped where mounting is not allowed)."""
    mnt = Path("/tmp") / f"rt-full-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if p.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {p.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()


def test_full_disk_keeps_the_command_its_output_and_a_truthful_record(cli, small_disk):
    env_dir = small_disk / "env"
    script = "head -c 5000000 /dev/zero; echo done >&2; exit 3"
    p = cli.run("-e", str(env_dir), "--id", "big", "--", "sh", "-c", script, binary=True)
    assert p.returncode == 3  # the command's own exit code
    assert len(p.stdout) == 5_000_000  # the terminal got everything
    assert p.stderr == b"done\n"
    [r] = cli.json("history", "-e", str(env_dir))
    assert (r["status"], r["exit_code"]) == ("FAILED", 3)
    assert any("No space left on device" in w and "disk full" in w for w in r["warnings"])
    stored = os.path.getsize(r["stdout_path"])
    assert 0 < stored < 5_000_000
    assert Path(r["stderr_path"]).read_bytes() == b"done\n"
