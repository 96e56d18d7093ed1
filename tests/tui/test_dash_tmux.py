"""taro dash in a real terminal (tmux), read back with capture-pane: the screen a person sees."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

from conftest import need_service

pytest.importorskip("textual")


def test_dash_screen_in_tmux(cli, wait_until):
    need_service(shutil.which("tmux") is not None, "tmux")
    assert cli.run("--id", "nightly-backup", "--", "true").returncode == 0
    assert cli.run("--id", "report", "--", "sh", "-c", "exit 3").returncode == 3
    gated = cli.spawn_gated("sync", "--approval", "ops")
    pending = cli.wait_state("sync", "PENDING")
    sock = f"rt-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", sock]
    env = cli._env(None)
    subprocess.run([*tmux, "new-session", "-d", "-x", "110", "-y", "24", "-s", "dash",
                    f"{cli.bin('taro')} dash; echo EXIT=$?; sleep 60"], env=env, cwd=cli.cwd, check=True, timeout=30)
    try:
        def screen() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p", "-t", "dash"], capture_output=True, text=True,
                                  timeout=10).stdout

        def ready() -> str | None:
            s = screen()
            return s if "report@" in s and pending["instance_id"] in s and "q quit" in s else None

        text = wait_until(ready, timeout=20, what="the dashboard on screen")
        lines = text.splitlines()
        assert lines[0].lstrip().startswith("env local   1 active (1 pending)")
        assert any(pending["instance_id"] in ln and "PENDING approval ops" in ln for ln in lines)
        assert any("report@" in ln and "FAILED" in ln for ln in lines)
        subprocess.run([*tmux, "send-keys", "-t", "dash", "a"], check=True, timeout=10)
        wait_until(lambda: "EXECUTING" in screen(), timeout=20, what="the approved run executing")
        subprocess.run([*tmux, "send-keys", "-t", "dash", "q"], check=True, timeout=10)
        wait_until(lambda: "EXIT=0" in screen(), timeout=20, what="taro dash quit with 0")
    finally:
        subprocess.run([*tmux, "kill-server"], timeout=10)
        cli.release(gated)
    assert gated.wait(timeout=30) == 0
