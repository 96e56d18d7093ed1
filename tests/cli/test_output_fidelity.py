"""What the command sees of its output is what it would see bare (README: "exactly as they would
without the wrapper"): a terminal at a terminal, one ordered channel when stdout and stderr are
the same file, a broken pipe when our reader goes away; and no run may fill a disk."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

PY = sys.executable


def only(runs: list[dict]) -> dict:
    assert len(runs) == 1, runs
    return runs[0]


def read_until_eof(fd: int, timeout: float = 20.0, until: bytes | None = None) -> bytes:
    """Read a pty master until EIO/EOF (or until `until` appears), with a deadline."""
    import selectors

    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while until is None or until not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"timed out reading the terminal; read {buf!r}")
            if not sel.select(remaining):
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: every slave end is closed
                break
            if not chunk:
                break
            buf += chunk
    return buf


@contextlib.contextmanager
def at_terminal(cli, *args: str, rows: int = 24, cols: int = 80, stdin=subprocess.DEVNULL, stderr_too: bool = True):
    """`run job ARGS` with stdout (and stderr) a real pseudo-terminal of ours: yields (process, master)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    try:
        p = subprocess.Popen([cli.bin("run"), "job", *args], stdin=stdin, stdout=slave,
                             stderr=slave if stderr_too else subprocess.PIPE, cwd=cli.cwd)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    try:
        yield p, master
    finally:
        os.close(master)
        for f in (p.stdin, p.stderr):
            if f is not None:
                f.close()
        if p.poll() is None:
            p.kill()


def run_at_terminal(cli, *args: str, rows: int = 30, cols: int = 100, stderr_too: bool = True):
    """`run job ARGS` at a terminal of ours, to its end: (rc, screen bytes, stderr bytes)."""
    with at_terminal(cli, *args, rows=rows, cols=cols, stderr_too=stderr_too) as (p, master):
        screen = read_until_eof(master)
        err = p.stderr.read() if p.stderr is not None else b""
        return p.wait(timeout=20), screen, err


def test_at_a_terminal_the_command_sees_a_terminal_with_its_size(cli):
    code = "import os, sys; print(sys.stdout.isatty(), sys.stderr.isatty(), os.get_terminal_size())"
    rc, screen, _ = run_at_terminal(cli, "--id", "tty", "--", PY, "-c", code, rows=33, cols=111)
    assert rc == 0
    assert screen == b"True True os.terminal_size(columns=111, lines=33)\r\n"
    r = only(cli.history("tty"))
    # stored: the bytes the command wrote (no \r added), stderr merged into stdout at a terminal
    assert Path(r["stdout_path"]).read_bytes() == b"True True os.terminal_size(columns=111, lines=33)\n"
    assert Path(r["stderr_path"]).read_bytes() == b""


def test_ls_at_a_terminal_has_colours_and_columns(cli, tmp_path):
    d = tmp_path / "listing"
    d.mkdir()
    for name in ("adir", "bdir"):
        (d / name).mkdir()
    rc, screen, _ = run_at_terminal(cli, "--id", "ls", "--", "ls", "--color=auto", str(d))
    assert rc == 0
    assert b"\x1b[" in screen  # colours: ls saw a terminal
    assert screen.count(b"\r\n") == 1  # columns: both names on one line


def test_terminal_order_of_stdout_and_stderr_is_kept(cli):
    rc, screen, _ = run_at_terminal(cli, "--id", "order", "--", "sh", "-c", "echo a; echo b >&2; echo c")
    assert (rc, screen) == (0, b"a\r\nb\r\nc\r\n")


def test_python_is_line_buffered_at_a_terminal(cli):
    # a terminal makes Python flush each line: "first" is on the screen while the command waits
    code = "import sys; print('first'); sys.stdin.readline(); print('second')"
    with at_terminal(cli, "--id", "lb", "--", PY, "-c", code, stdin=subprocess.PIPE) as (p, master):
        assert b"first" in read_until_eof(master, until=b"first")
        p.stdin.close()
        assert b"second" in read_until_eof(master)
        assert p.wait(timeout=20) == 0


def test_window_size_changes_reach_the_command(cli):
    code = ("import os, signal, sys\n"
            "signal.signal(signal.SIGWINCH, lambda *a: (print(os.get_terminal_size()), sys.exit(0)))\n"
            "print('ready', flush=True)\n"
            "while True: signal.pause()\n")
    with at_terminal(cli, "--id", "winch", "--", PY, "-c", code, rows=24, cols=80) as (p, master):
        read_until_eof(master, until=b"ready")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        p.send_signal(signal.SIGWINCH)  # what the terminal sends its foreground group on a resize
        assert b"os.terminal_size(columns=120, lines=40)" in read_until_eof(master)
        assert p.wait(timeout=20) == 0


def test_stdout_a_terminal_stderr_a_pipe_stay_apart(cli):
    code = "import sys; print(sys.stdout.isatty(), sys.stderr.isatty()); print('err', file=sys.stderr)"
    rc, screen, err = run_at_terminal(cli, "--id", "split", "--", PY, "-c", code, stderr_too=False)
    assert (rc, screen, err) == (0, b"True False\r\n", b"err\n")
    r = only(cli.history("split"))
    assert Path(r["stdout_path"]).read_bytes() == b"True False\n"
    assert Path(r["stderr_path"]).read_bytes() == b"err\n"


def test_same_file_for_both_streams_keeps_their_order(cli, tmp_path):
    log = tmp_path / "log"
    cmd = "for i in 1 2 3 4 5 6 7 8; do echo o$i; echo e$i >&2; done"
    with open(log, "ab") as f:
        p = subprocess.run([cli.bin("run"), "job", "--id", "same", "--", "sh", "-c", cmd],
                           stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, cwd=cli.cwd, timeout=30)
    assert p.returncode == 0
    expected = "".join(f"o{i}\ne{i}\n" for i in range(1, 9))
    assert log.read_text() == expected
    r = only(cli.history("same"))
    assert Path(r["stdout_path"]).read_text() == expected  # one channel, stored as stdout
    assert Path(r["stderr_path"]).read_text() == ""


def test_same_pipe_for_both_streams_keeps_their_order(cli):
    p = subprocess.run([cli.bin("run"), "job", "--", "sh", "-c", "echo a; echo b >&2; echo c"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       cwd=cli.cwd, timeout=30)
    assert (p.returncode, p.stdout) == (0, b"a\nb\nc\n")


def test_plain_pipes_are_not_terminals(cli):
    p = cli.run("--", PY, "-c", "import sys; print(sys.stdout.isatty(), sys.stderr.isatty())")
    assert (p.returncode, p.stdout) == (0, "False False\n")


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_closed_reader_ends_the_command_as_it_would_bare(cli, stream):
    """`run job -- yes | head -2`: yes gets SIGPIPE (exit 141) instead of running forever."""
    cmd = ["yes"] if stream == "stdout" else ["sh", "-c", "yes >&2"]
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL} if stream == "stdout" else \
        {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    p = subprocess.Popen([cli.bin("run"), "job", "--id", "yes", "--", *cmd], stdin=subprocess.DEVNULL,
                         cwd=cli.cwd, **kw)
    pipe = p.stdout if stream == "stdout" else p.stderr
    assert pipe.read(4) == b"y\ny\n"
    pipe.close()
    try:
        assert p.wait(timeout=20) == 141
    finally:
        if p.poll() is None:
            p.kill()
    r = only(cli.history("yes"))
    assert (r["status"], r["exit_code"]) == ("FAILED", 141)
    assert any(f"reader of {stream} went away" in w for w in r["warnings"]), r["warnings"]
    assert os.path.getsize(r[f"{stream}_path"]) < 64 << 20


def test_output_limit_keeps_the_tail_and_says_so(cli):
    code = "import sys\nfor i in range(200000): sys.stdout.write(f'line {i:06d}\\n')"
    p = cli.run("--id", "big", "--output-limit", "64K", "--", PY, "-c", code, binary=True)
    assert p.returncode == 0
    assert p.stdout.count(b"\n") == 200000  # the terminal gets everything
    r = only(cli.history("big"))
    stored = Path(r["stdout_path"]).read_bytes()
    assert 16 << 10 <= len(stored) <= 64 << 10
    assert stored.startswith(b"line ") and stored.endswith(b"line 199999\n")  # cut at a line start
    lines = stored.splitlines()
    assert [int(x.split()[1]) for x in lines] == list(range(200000 - len(lines), 200000))
    assert any("output limit" in w for w in r["warnings"]), r["warnings"]
    assert cli.taro("tail", "-n", "1", "big").stdout == "line 199999\n"
    assert cli.taro("output", "big", binary=True).stdout == stored


def test_output_limit_from_the_environment_and_zero_for_none(cli):
    code = "print('x' * 99999)"
    p = cli.run("--id", "envlim", "--", PY, "-c", code, env={"RUNTOOLS_OUTPUT_LIMIT": "10K"})
    assert p.returncode == 0
    r = only(cli.history("envlim"))
    assert os.path.getsize(r["stdout_path"]) <= 10 << 10
    p = cli.run("--id", "nolim", "--output-limit", "0", "--", PY, "-c", code, env={"RUNTOOLS_OUTPUT_LIMIT": "10K"})
    r = only(cli.history("nolim"))
    assert (p.returncode, os.path.getsize(r["stdout_path"]), r["warnings"]) == (0, 100000, [])


@pytest.mark.parametrize("value", ["1x", "-1", "K", "nan", "1e400G"])
def test_bad_output_limit_is_a_usage_error(cli, home, value):
    p = cli.run("--output-limit", value, "--", "true")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--output-limit" in p.stderr, p.stderr
    p = cli.run("--", "true", env={"RUNTOOLS_OUTPUT_LIMIT": value})
    assert p.returncode == 2 and "RUNTOOLS_OUTPUT_LIMIT" in p.stderr, p.stderr
    assert not (home / "local").exists()


def test_below_the_free_space_floor_storing_stops_and_output_flows(cli):
    p = cli.run("--id", "floor", "--", "sh", "-c", "echo visible; echo also >&2",
                env={"RUNTOOLS_OUTPUT_FLOOR": "1000000T"})
    assert (p.returncode, p.stdout, p.stderr) == (0, "visible\n", "also\n")
    r = only(cli.history("floor"))
    assert Path(r["stdout_path"]).read_bytes() == b""
    assert any("below the floor" in w for w in r["warnings"]), r["warnings"]


def test_durations_beyond_25_days_work(cli):
    p = cli.run("--timeout", "30d", "--time-warn", "40d", "--", "true")
    assert (p.returncode, p.stderr) == (0, "")
    assert json.loads(cli.taro("history", "--json").stdout)[0]["status"] == "COMPLETED"
