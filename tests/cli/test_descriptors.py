"""Every command with a standard descriptor closed (cron does that), with stdout to a pipe
whose reader is gone, and at a real terminal: the documented exit code, never a traceback.

With fd 1 closed, the first file a command opens would get fd 1, and whatever it prints or
forwards "to the terminal" would land in that file (the database): every entry point puts
/dev/null on closed standard descriptors first (`cli.common.guard_stdio`).
"""

from __future__ import annotations

import os
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

# (argv, exit code): argv[0] is a console script of the venv (or the interpreter itself)
COMMANDS: list[tuple[list[str], int]] = [
    (["run", "job", "--id", "seven", "--", "sh", "-c", "echo out; echo err >&2; exit 7"], 7),
    (["run", "job", "--help"], 0),
    (["run", "job", "--pending", "", "--", "true"], 2),
    (["taro", "history"], 0),
    (["taro", "ps", "--json"], 0),
    (["taro", "history", "--help"], 0),
    (["taro", "history", "-n", "99999999999999999999999"], 2),
    (["taro", "output", "seed"], 0),
    (["taro", "unlock", "nokey"], 3),
    (["taro", "listen", "--timeout", "0"], 0),
    (["orchesjob", "start", "--sync", "--run-key", "d", "--", "sh", "-c", "echo out; exit 7"], 0),
    (["orchesjob", "status", "--running"], 0),
    (["orchesjob", "--help"], 0),
    (["orchesjob", "status", "--job-id", "nope"], 3),
    ([sys.executable, "-m", "orchesjob", "status", "--running"], 0),
    (["runcue-sim", "--list-scenarios"], 0),
    (["runcue-sim", "--help"], 0),
    (["runcue-sim", "-n", "0"], 2),
]
IDS = [" ".join(Path(a[0]).name if i == 0 else a for i, a in enumerate(argv))[:60] for argv, _ in COMMANDS]


@pytest.fixture
def seeded(home: Path, tmp_path: Path) -> dict[str, str]:
    """An environment with one run (so `taro history`/`output` print something), an orchesjob home."""
    env = {**os.environ, "ORCHESJOB_HOME": str(tmp_path / "oj")}
    env.pop("RUNTOOLS_NOTIFY_FD", None)
    p = subprocess.run([str(BIN / "run"), "job", "--id", "seed", "--", "sh", "-c", "seq 3000"], env=env,
                       capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    return env


def _argv(argv: list[str]) -> list[str]:
    return [str(BIN / argv[0]) if (BIN / argv[0]).exists() else argv[0], *argv[1:]]


def _clean(text: bytes) -> None:
    s = text.decode("utf-8", "replace")
    assert "Traceback" not in s and "internal error" not in s, s


def _db_sane(home: Path) -> None:
    db = home / "local" / "runs.db"
    if db.exists():
        with sqlite3.connect(db) as c:
            assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize("fd", [0, 1, 2])
@pytest.mark.parametrize(("argv", "code"), COMMANDS, ids=IDS)
def test_closed_standard_descriptor(argv: list[str], code: int, fd: int, seeded: dict[str, str], home: Path) -> None:
    """`CMD <&-`, `CMD >&-`, `CMD 2>&-`: the same exit code as with the descriptor open."""
    p = subprocess.run(["sh", "-c", f'exec "$@" {fd}>&-', "sh", *_argv(argv)], env=seeded, capture_output=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == code, (p.stdout, p.stderr)
    _clean(p.stdout + p.stderr)
    if fd == 1:
        assert p.stdout == b""
    _db_sane(home)


def test_closed_stdout_reaches_neither_the_database_nor_the_command(seeded: dict[str, str], home: Path) -> None:
    """With fd 1 closed the command gets /dev/null (its writes succeed), its output is stored
    as usual, and nothing it prints lands in a file of the environment."""
    run = str(BIN / "run")
    for opts, marker in ((["-b"], "BYPASSED"), ([], "CAPTURED")):  # inherited directly, and captured
        p = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", run, "job", *opts, "--id", "quiet", "--", "sh", "-c",
                            f"echo {marker}-$((6 * 7)); test -w /dev/stdout"], env=seeded, capture_output=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
    p = subprocess.run([str(BIN / "taro"), "output", "quiet"], env=seeded, capture_output=True, timeout=30)
    assert p.returncode == 0 and p.stdout == b"CAPTURED-42\n"  # the captured run's output is stored
    p = subprocess.run([str(BIN / "taro"), "history", "quiet", "--json"], env=seeded, capture_output=True, timeout=30)
    assert p.returncode == 0 and p.stdout.count(b'"instance_id"') == 2
    _db_sane(home)
    for f in home.rglob("*"):  # --bypass-output stores nothing: the line is nowhere
        if f.is_file():
            assert b"BYPASSED-42" not in f.read_bytes(), f


@pytest.mark.parametrize(("argv", "code"), COMMANDS, ids=IDS)
def test_stdout_to_a_pipe_whose_reader_is_gone(argv: list[str], code: int, seeded: dict[str, str]) -> None:
    """`CMD | head -0`: exit quietly (0 for our own output; `run job` keeps the command's code)."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run(_argv(argv), env=seeded, stdout=w, stderr=subprocess.PIPE, timeout=60,
                           stdin=subprocess.DEVNULL)
    finally:
        os.close(w)
    assert p.returncode == code, p.stderr
    _clean(p.stderr)


@pytest.mark.parametrize(("argv", "code"), COMMANDS, ids=IDS)
def test_at_a_terminal(argv: list[str], code: int, seeded: dict[str, str]) -> None:
    """stdin, stdout and stderr on a real pty."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(_argv(argv), env={**seeded, "COLUMNS": "80"}, stdin=slave, stdout=slave,
                                stderr=slave, start_new_session=True)
    finally:
        os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every holder of the slave side is gone
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None and not select.select([master], [], [], 0)[0]:
                break
        assert proc.wait(30) == code, out
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _clean(out)
