"""A real network partition: the holder's wrapper runs in a network namespace whose link to the
server is then cut (packets dropped, nothing closed). The holder must stop its command before
the server lets its lease go, so the taker never runs beside it (DESIGN §8).

Timings are shortened for the test: lease grace 2 s (RUNTOOLS_PG_LEASE_GRACE), the server drops
a silent host's sessions after 9 s (RUNTOOLS_PG_SILENT_DROP), --kill-after 1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from .server import Server, server

TUNE = {"RUNTOOLS_PG_LEASE_GRACE": "2", "RUNTOOLS_PG_SILENT_DROP": "9"}


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns():
    """A network namespace joined to this one by a veth pair: (namespace, our address, its
    address, our end of the link)."""
    server()  # skips (or fails under CI) where PostgreSQL cannot run at all
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a network partition needs root and ip(8)")
    n = os.getpid() % 10000
    name, ours, theirs = f"rt-part-{n}", f"rtp{n}a", f"rtp{n}b"
    net = f"10.{77 + n % 100}.{n % 250}"
    try:
        ip("netns", "add", name)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"no network namespaces here: {e.stderr.decode().strip()}")
    try:
        ip("link", "add", ours, "type", "veth", "peer", "name", theirs)
        ip("link", "set", theirs, "netns", name)
        ip("addr", "add", f"{net}.1/24", "dev", ours)
        ip("link", "set", ours, "up")
        ip("netns", "exec", name, "ip", "addr", "add", f"{net}.2/24", "dev", theirs)
        ip("netns", "exec", name, "ip", "link", "set", theirs, "up")
        ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name, f"{net}.1", ours
    finally:
        subprocess.run(["ip", "link", "del", ours], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_a_partitioned_holder_stops_its_command_before_anyone_takes_over(cli, netns, wait_until):
    ns, addr, link = netns
    own = Server(listen=f"127.0.0.1,{addr}")
    holder = None
    try:
        own.start()
        here, there = own.url("part"), own.url("part", host=addr)
        holder = cli.spawn(["ip", "netns", "exec", ns, cli.bin("run"), "job", "-e", there, "-x", "--kill-after", "1",
                            "--id", "job", "--", "sleep", "300"], env={**TUNE, "RUNTOOLS_HOST": "host-a"})

        def executing() -> list[dict]:
            p = cli.taro("ps", "-e", here, "--json")
            return [r for r in json.loads(p.stdout) if r["state"] == "EXECUTING"] if p.returncode == 0 else []

        (run,) = wait_until(executing, 15, "the holder to execute")
        command = run["child_pid"]
        cut = time.monotonic()
        ip("link", "set", link, "down")  # silence: no packet passes, no connection is closed
        probe = f"if kill -0 {command} 2>/dev/null; then echo beside; else echo alone; fi"
        stopped = None
        while True:  # each try is a whole `run job`: no sleep needed between them
            p = cli.run("-e", here, "-x", "--id", "job", "--", "sh", "-c", probe,
                        env={**TUNE, "RUNTOOLS_HOST": "host-b"})
            if stopped is None and not os.path.exists(f"/proc/{command}"):
                stopped = time.monotonic() - cut
            if p.returncode != 100:
                break
            assert time.monotonic() - cut < 40, "the partitioned holder's lease was never let go"
        took = time.monotonic() - cut
        assert (p.returncode, p.stdout) == (0, "alone\n"), p.stderr  # never two copies
        assert stopped is not None and 2 <= stopped < 7  # the grace (2 s) after the last confirmation
        assert took > stopped + 2  # the server let the lease go well after (9-11 s)
        print(f"partition: holder's command stopped after {stopped:.1f} s, taker ran after {took:.1f} s")
        assert holder.poll() is None or holder.returncode == 125  # it cannot record its end yet
    finally:
        if holder is not None and holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)  # it would wait for the server to record its end
            holder.wait(10)
        own.stop()
