"""`taro -H TARGET VERB`: two environments behind two `taro serve` on loopback, one real sshd on a
loopback port (its own config, host key and authorized key), one target that is down, and one
that accepts connections but never answers (--host-timeout)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import need_service
from server._serve import OPERATE, Served

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path, wait_until):
    """A real sshd on 127.0.0.1:PORT accepting one generated key; yields (target, ssh options)."""
    need_service(os.path.exists(SSHD) and bool(shutil.which("ssh")) and bool(shutil.which("ssh-keygen")),
                 "openssh-server and openssh-client")
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "LogLevel ERROR\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def listening() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, 10, "sshd to listen")
    opts = (f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
            f"-i {d / 'client_key'}")
    user = os.environ.get("USER") or __import__("getpass").getuser()
    yield f"ssh://{user}@127.0.0.1:{port}", opts
    proc.terminate()
    proc.wait(10)
    proc.stderr.close()


@pytest.fixture
def hosts(cli, tmp_path, home, sshd):
    """Targets A and B (taro serve of two environments), S (ssh to a third), DOWN (refuses)."""
    env_a, env_b = tmp_path / "env-a", tmp_path / "env-b"
    assert cli.run("-e", str(env_a), "--id", "job-a", "--", "echo", "a").returncode == 0
    assert cli.run("-e", str(env_b), "--id", "job-b", "--", "false").returncode == 1
    a = Served(cli, tmp_path, "-e", str(env_a))
    b = Served(cli, tmp_path, "-e", str(env_b))
    # the far side of ssh: a wrapper that runs this venv's taro in the test's home
    far = tmp_path / "far-taro"
    far.write_text("#!/bin/sh\n"
                   f"export RUNTOOLS_HOME='{home}' XDG_RUNTIME_DIR='{os.environ['XDG_RUNTIME_DIR']}'\n"
                   f"exec '{cli.bin('taro')}' \"$@\"\n")
    far.chmod(0o755)
    assert cli.run("--id", "job-s", "--", "echo", "s").returncode == 0
    target_s, opts = sshd
    env = {"RUNTOOLS_TOKEN": OPERATE, "RUNTOOLS_REMOTE_TARO": str(far), "RUNTOOLS_SSH_OPTS": opts}
    down = f"http://127.0.0.1:{free_port()}"
    yield {"A": a.url, "B": b.url, "S": target_s, "DOWN": down, "env": env, "env_a": env_a, "env_b": env_b}
    a.stop()
    b.stop()


def test_history_on_many_hosts_json_table_and_a_down_host(cli, hosts):
    env = hosts["env"]
    t0 = time.monotonic()
    p = cli.taro("-H", f"{hosts['A']},{hosts['B']}", "-H", hosts["S"], "-H", hosts["DOWN"], "history", "--json",
                 env=env)
    assert p.returncode == 1, p.stderr  # one host failed
    recs = json.loads(p.stdout)
    assert {(r["remote"], r["job_id"]) for r in recs} == {(hosts["A"], "job-a"), (hosts["B"], "job-b"),
                                                          (hosts["S"], "job-s")}
    assert all(r["host"] for r in recs)  # the run's own host stays beside "remote"
    (line,) = p.stderr.splitlines()
    assert line.startswith(f"taro: {hosts['DOWN']}: cannot connect")
    assert time.monotonic() - t0 < 10

    p = cli.taro("-H", f"{hosts['A']},{hosts['B']},{hosts['S']}", "history", env=env)
    assert p.returncode == 0, p.stderr
    head, *rows = p.stdout.splitlines()
    assert head.split()[:2] == ["HOST", "JOB"]
    assert sorted(r.split()[1] for r in rows) == ["job-a", "job-b", "job-s"]

    p = cli.taro("-H", f"{hosts['A']},{hosts['B']},{hosts['S']}", "stats", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert {(s["remote"], s["job_id"], s["success_rate"]) for s in json.loads(p.stdout)} == {
        (hosts["A"], "job-a", 1.0), (hosts["B"], "job-b", 0.0), (hosts["S"], "job-s", 1.0)}

    p = cli.taro("-H", f"{hosts['A']},{hosts['S']}", "output", "job-*", env=env)
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == sorted([f"{hosts['A']}  a", f"{hosts['S']}  s"])

    p = cli.taro("-H", f"{hosts['A']},{hosts['S']}", "tail", "job-*", "--json", env=env)
    assert p.returncode == 0, p.stderr
    lines = sorted((d["remote"], d["line"]) for d in map(json.loads, p.stdout.splitlines()))
    assert lines == sorted([(hosts["A"], "a"), (hosts["S"], "s")])


def test_wait_over_http_and_ssh(cli, hosts):
    env = hosts["env"]
    p = cli.taro("-H", f"{hosts['A']},{hosts['S']}", "wait", "job-*", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert sorted((d["remote"], d["event"], d["job_id"]) for d in map(json.loads, p.stdout.splitlines())) == \
        sorted([(hosts["A"], "current", "job-a"), (hosts["S"], "current", "job-s")])
    # a wait that ended without reaching its state exits as `taro wait` does locally, each host said
    p = cli.taro("-H", hosts["B"], "wait", "job-b", "completed", env=env)
    assert p.returncode == 4, p.stderr
    assert p.stderr == f"taro: {hosts['B']}: job-b@{_run_id(cli, hosts['env_b'])} ended FAILED: it can no longer " \
        "reach COMPLETED\n"
    p = cli.taro("-H", hosts["S"], "wait", "job-s", "failed", env=env)  # over ssh: the far side's exit 4
    assert p.returncode == 4, p.stderr
    assert p.stderr.startswith(f"taro: {hosts['S']}: job-s@") and "it can no longer reach FAILED" in p.stderr
    p = cli.taro("-H", f"{hosts['A']},{hosts['S']}", "wait", "nothing-yet", "--timeout", "0.5s", env=env)
    assert p.returncode == 124
    assert p.stderr.count("timed out waiting for ended") == 2, p.stderr
    p = cli.taro("-H", f"{hosts['A']},{hosts['S']}", "wait", "job-x@nope", env=env)
    assert p.returncode == 3 and p.stderr.count("no run job-x@nope") == 2, p.stderr
    p = cli.taro("-H", f"{hosts['B']},{hosts['DOWN']}", "wait", "job-b", "completed", env=env)
    assert p.returncode == 1 and p.stderr.count("\n") == 2, p.stderr  # a host that failed: 1, as for every verb
    live = cli.spawn_gated("w-live", "-e", str(hosts["env_a"]))
    waiter = cli.spawn(["taro", "-H", hosts["A"], "wait", "w-live", "--json"], env=env)
    cli.release(live)
    assert live.wait(10) == 0
    assert waiter.wait(15) == 0
    (d,) = [json.loads(x) for x in waiter.stdout.read().splitlines()]
    assert d["job_id"] == "w-live" and d["run"]["status"] == "COMPLETED" and d["remote"] == hosts["A"]


def _run_id(cli, env: Path) -> str:
    (r,) = cli.history("-e", str(env))
    return r["run_id"]


def test_listen_on_many_hosts(cli, hosts):
    listener = cli.spawn(["taro", "-H", f"{hosts['A']},{hosts['S']}", "listen", "--json", "--timeout", "20s"],
                         env=hosts["env"])
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(listener.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 20
    seen: set = set()
    buf = b""
    while seen != {hosts["A"], hosts["S"]} and time.monotonic() < deadline:
        # a run on each side until both hosts' events arrive (the listeners subscribe meanwhile)
        assert cli.run("-e", str(hosts["env_a"]), "--id", "ev-a", "--", "true").returncode == 0
        assert cli.run("--id", "ev-s", "--", "true").returncode == 0
        while sel.select(0.5):
            chunk = os.read(listener.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            d = json.loads(line)
            assert {"remote", "event", "instance_id", "run"} <= set(d)
            seen.add(d["remote"])
    sel.close()
    assert seen == {hosts["A"], hosts["S"]}
    listener.kill()


def test_control_on_many_hosts_is_recorded_and_timeouts_are_reported(cli, hosts, wait_until):
    env = hosts["env"]
    a = cli.spawn_gated("sleeper", "-e", str(hosts["env_a"]))
    s = cli.spawn_gated("sleeper")
    wait_until(lambda: cli.json("ps", "-e", str(hosts["env_a"])) and cli.ps(), what="both sleepers")
    p = cli.taro("-H", f"{hosts['A']},{hosts['S']}", "ps", env=env)
    assert p.returncode == 0, p.stderr
    assert len([x for x in p.stdout.splitlines() if "sleeper" in x]) == 2
    p = cli.taro("-H", f"{hosts['A']},{hosts['S']}", "stop", "sleeper", env=env)
    assert p.returncode == 0, p.stderr
    assert a.wait(10) != 0 and s.wait(10) != 0
    by_a = cli.json("history", "-e", str(hosts["env_a"]), "sleeper")[0]
    by_s = cli.history("sleeper")[0]
    assert by_a["status"] == by_s["status"] == "STOPPED"
    assert by_a["actions"][-1]["by"] == "alice (taro serve)"  # the name of the token it used
    assert "taro, pid" in by_s["actions"][-1]["by"]  # the far side's own taro stop

    d = cli.spawn_run("-e", str(hosts["env_b"]), "--id", "deploy", "--approval", "ops", "--", "true")
    wait_until(lambda: cli.json("ps", "-e", str(hosts["env_b"])), what="deploy pending")
    p = cli.taro("-H", hosts["B"], "approve", "deploy", env=env)
    assert p.returncode == 0, p.stderr
    assert d.wait(10) == 0

    # a host that accepts the connection and never answers: reported after --host-timeout
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        t0 = time.monotonic()
        p = cli.taro("-H", hosts["A"], "-H", f"http://127.0.0.1:{mute.getsockname()[1]}", "--host-timeout", "2",
                     "ps", "--json", env=env)
        took = time.monotonic() - t0
    assert p.returncode == 1
    assert "no answer within 2s" in p.stderr
    assert took < 6
    assert json.loads(p.stdout) == []  # the other host still answered (no run active there now)


def test_usage_errors_exit_2_before_any_host_is_asked(cli):
    for argv, words in ((["-H", "ftp://x", "ps"], "invalid target"), (["-H", "http://x:1"], "name a verb"),
                        (["-H", "http://x:1", "serve"], "does not work across hosts"),
                        (["-H", "http://x:1", "history", "--limit", "x"], "whole number"),
                        (["-H", "http://x:1", "--host-timeout", "0", "ps"], "more than 0")):
        p = cli.taro(*argv)
        assert p.returncode == 2, (argv, p.stderr)
        assert words in p.stderr, (argv, p.stderr)


def test_named_host_groups_from_the_config_file(cli, tmp_path, hosts):
    cfg = Path(os.environ["XDG_CONFIG_HOME"]) / "runtools"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "runtools.toml").write_text(f'[remote.groups]\nboth = ["{hosts["A"]}", "{hosts["B"]}"]\n')
    p = cli.taro("-H", "both", "history", "--json", env=hosts["env"])
    assert p.returncode == 0, p.stderr
    assert sorted(r["job_id"] for r in json.loads(p.stdout)) == ["job-a", "job-b"]
