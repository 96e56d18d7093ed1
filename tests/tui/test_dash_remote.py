"""taro dash -H: one dashboard over two `taro serve` hosts (their JSON API and SSE events)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("textual")
pytest.importorskip("starlette")

from runtools.model.status import State
from runtools.tui.app import DashApp, RunScreen
from runtools.tui.remote import RemoteEnv
from server._serve import OPERATE, Served

from .test_dash import rows, until


def test_dash_over_two_hosts(cli, tmp_path, monkeypatch):
    env_a, env_b = tmp_path / "env-a", tmp_path / "env-b"
    assert cli.run("-e", str(env_a), "--id", "job-a", "--", "echo", "a").returncode == 0
    assert cli.run("-e", str(env_b), "--id", "job-b", "--", "false").returncode == 1
    a = Served(cli, tmp_path, "-e", str(env_a))
    b = Served(cli, tmp_path, "-e", str(env_b))
    gated = cli.spawn_run("-e", str(env_b), "--id", "gate", "--approval", "boss", "--", "sh", "-c",
                          "echo hello from b; sleep 30")
    monkeypatch.setenv("RUNTOOLS_TOKEN", OPERATE)

    async def main() -> None:
        with RemoteEnv([f"{a.url},{b.url}"]) as env:
            app = DashApp(env, env_name=env.name)
            async with app.run_test(size=(140, 30)) as pilot:
                await until(pilot, lambda: len(rows(app, "active")) == 1, what="the pending run of host b")
                iid = rows(app, "active")[0]
                assert iid.startswith("gate@") and app.active[iid].state is State.PENDING
                assert sorted(r.split("@")[0] for r in rows(app, "history")) == ["job-a", "job-b"]
                await pilot.press("a")
                await until(pilot, lambda: iid in app.active and app.active[iid].state is State.EXECUTING,
                            what="EXECUTING after approve over HTTP")
                await pilot.press("enter")
                assert isinstance(app.screen, RunScreen)
                log = app.screen.query_one("#output")
                await until(pilot, lambda: any("hello from b" in str(x.text) for x in log.lines), what="output")
                await pilot.press("s")
                await pilot.press("y")
                await until(pilot, lambda: iid not in app.active, what="stopped over HTTP")
                await pilot.press("escape")
                assert rows(app, "history")[0] == iid
                await pilot.press("q")

    try:
        asyncio.run(main())
        assert gated.wait(timeout=30) == 143
        run = cli.history("gate", "-e", str(env_b))[0]
        assert run["status"] == "STOPPED"
    finally:
        a.stop()
        b.stop()


def test_ssh_targets_are_refused(cli):
    with pytest.raises(Exception, match="not an http"):
        RemoteEnv(["ssh://nobody@127.0.0.1:1"])
