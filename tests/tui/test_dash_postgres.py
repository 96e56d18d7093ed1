"""taro dash on a PostgreSQL environment: the same screen, live from LISTEN/NOTIFY events."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("textual")

from pg.server import postgres_url
from runtools.env import open_environment
from runtools.model.status import State
from runtools.tui.app import DashApp

from .test_dash import rows, until


def test_dash_on_postgres(cli):
    url = postgres_url()
    assert cli.run("-e", url, "--id", "first", "--", "true").returncode == 0
    gated = cli.spawn_gated("gate", "-e", url, "--approval", "boss")

    async def main() -> None:
        with open_environment(url) as env:
            app = DashApp(env, env_name="pg")
            async with app.run_test(size=(120, 30)) as pilot:
                await until(pilot, lambda: len(rows(app, "active")) == 1, what="the pending run on screen")
                iid = rows(app, "active")[0]
                assert iid.startswith("gate@") and app.active[iid].state is State.PENDING
                assert [r.split("@")[0] for r in rows(app, "history")] == ["first"]
                await pilot.press("a")
                await until(pilot, lambda: iid in app.active and app.active[iid].state is State.EXECUTING,
                            what="EXECUTING after approve")
                cli.release(gated)
                await until(pilot, lambda: rows(app, "history")[:1] == [iid], what="the ended run in history")
                assert rows(app, "active") == []
                await pilot.press("q")

    asyncio.run(main())
    assert gated.wait(timeout=30) == 0
