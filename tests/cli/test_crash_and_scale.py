"""Crashes, signals, volume and concurrency through `run job` (black box, subprocess)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import group_alive, pid_alive

MB = 1024 * 1024


# -- signals to the wrapper ------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_to_wrapper_interrupts_and_kills_the_whole_group(cli, wait_until, sig, code):
    # The command leaves two grandchildren in its process group; all must go.
    p = cli.spawn_run("--id", "victim", "--", "sh", "-c", "sleep 300 & sleep 300 & wait")
    r = cli.wait_state("victim")
    pgid = r["child_pid"]
    wait_until(lambda: group_alive(pgid), what="the command's group")
    os.kill(p.pid, sig)
    assert p.wait(10) == code
    wait_until(lambda: not group_alive(pgid), 5, "the command's process group to be gone")
    h = cli.history("victim")
    assert len(h) == 1
    assert (h[0]["status"], h[0]["outcome"], h[0]["exit_code"]) == ("INTERRUPTED", "ABORTED", code)
    assert any(a["action"] == "interrupted" and sig.name in (a["by"] or "") for a in h[0]["actions"])
    assert cli.ps() == []


# -- kill -9 of the wrapper: LOST ------------------------------------------------------------


def test_kill9_wrapper_run_stays_active_while_command_runs_then_lost(cli, wait_until):
    """The command inherits the wrapper's lease (docs/coordination.md): the run is active while the
    orphaned command runs, and becomes LOST when it ends. `taro wait` sees the LOST end."""
    p = cli.spawn_gated("orphan")
    r = cli.wait_state("orphan")
    child = r["child_pid"]
    os.kill(p.pid, signal.SIGKILL)
    p.wait(5)
    assert pid_alive(child)
    # first half: the orphaned command still holds the lease, so the run is still active
    ps = cli.ps()
    assert [x["instance_id"] for x in ps] == [r["instance_id"]]
    assert cli.history() == []
    waiter = cli.spawn(["taro", "wait", "orphan", "--json", "--timeout", "20"])
    wait_until(lambda: cli.listeners() >= 1, what="taro wait to listen")
    # second half: the command ends (its stdin pipe closes), the lease is gone -> LOST
    cli.release(p)
    wait_until(lambda: not pid_alive(child), what="the orphaned command to exit")
    out, err = waiter.communicate(timeout=15)
    assert waiter.returncode == 0, err
    assert b'"LOST"' in out
    assert cli.ps() == []
    h = cli.history()
    assert len(h) == 1
    assert (h[0]["instance_id"], h[0]["status"], h[0]["outcome"]) == (r["instance_id"], "LOST", "FAULT")
    assert h[0]["ended_at"] is not None


def test_kill9_of_wrapper_and_command_is_lost_at_once(cli):
    p = cli.spawn_gated("gone")
    r = cli.wait_state("gone")
    # wrapper first: killing the command first would let the wrapper record its end (FAILED)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(5)
    os.kill(r["child_pid"], signal.SIGKILL)
    assert cli.ps() == []
    h = cli.history("gone")
    assert [(x["instance_id"], x["status"]) for x in h] == [(r["instance_id"], "LOST")]
    assert cli.taro("history").stdout.count("LOST") == 1


# -- output volume and bytes -----------------------------------------------------------------


def test_binary_output_is_byte_exact_on_terminal_and_in_storage(cli):
    data = bytes(range(256)) * 64 + b"\r\n\x00no newline at end \xff\xfe"
    code = f"import sys; sys.stdout.buffer.write({data!r}); sys.stderr.buffer.write(b'\\x00\\x01err')"
    p = cli.run("--id", "bin", "--", sys.executable, "-c", code, binary=True)
    assert p.returncode == 0
    assert p.stdout == data
    assert p.stderr == b"\x00\x01err"
    r = cli.history("bin")[0]
    assert Path(r["stdout_path"]).read_bytes() == data
    assert Path(r["stderr_path"]).read_bytes() == b"\x00\x01err"
    o = cli.taro("output", "bin", binary=True)
    assert (o.returncode, o.stdout, o.stderr) == (0, data, b"\x00\x01err")


RSS_PROBE = textwrap.dedent("""
    import resource, subprocess, sys
    out = open(sys.argv[1], "wb")
    rc = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.DEVNULL).returncode
    print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
""")


def max_rss_kb(cli, out: Path, *argv: str) -> tuple[int, int]:
    """Exit code and max RSS (KiB) of the largest process under `argv` (its own tree)."""
    p = cli.exec([sys.executable, "-c", RSS_PROBE, str(out), cli.bin("run"), "job", *argv], timeout=120)
    assert p.returncode == 0, p.stderr
    rc, rss = p.stdout.split()
    return int(rc), int(rss)


@pytest.mark.slow
def test_50mb_output_flows_with_flat_memory(cli, tmp_path):
    size = 50 * MB
    # `yes | head` keeps the producer tiny, so the largest process measured is the wrapper
    cmd = f"yes 'line of output with a key=value and some more text' | head -c {size}"
    rc, small = max_rss_kb(cli, tmp_path / "small.out", "--id", "small", "--", "sh", "-c", "echo hi")
    assert rc == 0
    rc, big = max_rss_kb(cli, tmp_path / "big.out", "--id", "big", "--", "sh", "-c", cmd)
    assert rc == 0
    assert (tmp_path / "big.out").stat().st_size == size
    r = cli.history("big")[0]
    assert r["status"] == "COMPLETED"
    assert Path(r["stdout_path"]).stat().st_size == size
    assert big < 60 * 1024, f"wrapper max RSS {big} KiB with 50 MB of output"
    assert big - small < 12 * 1024, f"wrapper RSS grew from {small} to {big} KiB with 50 MB of output"


# -- many wrappers at once -------------------------------------------------------------------


@pytest.mark.slow
def test_100_wrappers_at_once_are_all_recorded(cli):
    n = 100
    procs = [cli.spawn_run("--id", f"burst{i % 5}", "--tag", "burst", "--", "true") for i in range(n)]
    errors = []
    for p in procs:
        _out, err = p.communicate(timeout=120)
        if p.returncode != 0 or err:
            errors.append((p.returncode, err.decode()))
    assert errors == []
    h = cli.history("burst", "-n", "1000")
    assert len(h) == n
    assert {r["status"] for r in h} == {"COMPLETED"}
    assert len({r["instance_id"] for r in h}) == n
    assert cli.ps() == []
    stats = {s["job_id"]: s["runs"] for s in cli.json("stats")}
    assert stats == {f"burst{i}": n // 5 for i in range(5)}


def test_concurrent_readers_and_writers_never_see_a_locked_database(cli):
    writers = [cli.spawn_run("--id", "w", "--", "true") for _ in range(20)]
    readers = [cli.spawn(["taro", verb, "--json"]) for verb in ("ps", "history", "stats") * 5]
    for p in writers + readers:
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and b"locked" not in err, err
    assert len(cli.history("w")) == 20


def test_wrapper_exit_codes_summary(cli):
    """0, 3, 124, 126, 127 and 128+N in one place (the others have their own tests)."""
    cases = {
        ("true",): 0,
        ("sh", "-c", "exit 3"): 3,
        ("sh", "-c", "kill -KILL $$"): 137,
        ("./missing",): 127,
    }
    for argv, code in cases.items():
        assert cli.run("--id", "codes", "--", *argv).returncode == code, argv
    assert cli.run("--id", "codes", "--timeout", "0.1", "--", "sleep", "10").returncode == 124
    (cli.cwd / "plain.txt").write_text("not a program\n")
    assert cli.run("--id", "codes", "--", "./plain.txt").returncode == 126
    statuses = [r["status"] for r in cli.history("codes")]
    assert statuses == ["ERROR", "TIMEOUT", "ERROR", "FAILED", "FAILED", "COMPLETED"]


def test_a_command_whose_readers_went_away_ends_as_it_would_bare(cli):
    """The wrapper's stdout reader closed: the command's next write gets SIGPIPE, as without the
    wrapper, instead of the wrapper storing an endless writer's output until the disk is full.
    What was stored before is kept whole, and the run says why it ended."""
    p = cli.spawn_run("--id", "pipe", "--", "sh", "-c", "i=0; while :; do i=$((i+1)); echo line $i; done")
    assert p.stdout.readline().startswith(b"line ")  # it runs and writes
    p.stdout.close()  # nobody reads the wrapper's stdout any more
    assert p.wait(20) == 141
    r = cli.history("pipe")[0]
    assert (r["status"], r["exit_code"]) == ("FAILED", 141)
    assert any("went away" in w for w in r["warnings"]), r["warnings"]
    stored = Path(r["stdout_path"]).read_text().splitlines()
    assert stored and stored == [f"line {i}" for i in range(1, len(stored) + 1)]


def test_listen_sees_every_end_of_a_burst(cli, wait_until):
    """A burst of runs must not overflow a listener (the kernel queues ~10 datagrams per socket)."""
    import json

    lst = cli.spawn(["taro", "listen", "--json", "flood*"])
    wait_until(lambda: cli.listeners() >= 1, what="taro listen to listen")
    procs = [cli.spawn_run("--id", f"flood{i}", "--", "true") for i in range(30)]
    for p in procs:
        assert p.wait(60) == 0
    ended: set[str] = set()

    def count(line: bytes) -> bool:
        ev = json.loads(line)
        if ev["event"] == "ended":
            ended.add(ev["job_id"])
        return len(ended) == 30

    cli.read_lines(lst, count, timeout=20)
    assert ended == {f"flood{i}" for i in range(30)}
