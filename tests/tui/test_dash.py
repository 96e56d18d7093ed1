"""taro dash driven by Textual's pilot against a real local environment: live rows from events,
Enter opens a run with its output following, s stops after y, a approves, / filters; and
1,000 active runs stay responsive."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("textual")

from runtools.env import open_environment
from runtools.model.events import Event
from runtools.model.run import RunRecord
from runtools.model.status import Stage, State
from runtools.tui.app import DashApp, RunScreen


async def until(pilot, condition, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or condition}")
        await pilot.pause(0.05)


def rows(app: DashApp, table: str) -> list[str]:
    t = app.query_one(f"#{table}")
    return [str(r.key.value) for r in t.ordered_rows]


def test_live_rows_approve_open_stop_and_filter(cli, home):
    assert cli.run("--id", "done", "--", "true").returncode == 0
    assert cli.run("--id", "broke", "--", "false").returncode == 1
    gated = cli.spawn_run("--id", "gate", "--approval", "boss", "--", "sh", "-c",
                          "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done")
    pending = cli.wait_state("gate", "PENDING")

    async def main() -> None:
        with open_environment(str(home / "local")) as env:
            app = DashApp(env, env_name="local")
            async with app.run_test(size=(120, 30)) as pilot:
                assert rows(app, "active") == [pending["instance_id"]]
                assert [r.split("@")[0] for r in rows(app, "history")] == ["broke", "done"]
                status = str(app.query_one("#status").render())
                assert "1 active (1 running)" in status or "1 active" in status
                await pilot.press("a")  # approve the selected PENDING run
                await until(pilot, lambda: app.active.get(pending["instance_id"]) is not None
                            and app.active[pending["instance_id"]].state is State.EXECUTING, what="EXECUTING")
                await pilot.press("enter")
                assert isinstance(app.screen, RunScreen)
                log = app.screen.query_one("#output")
                await until(pilot, lambda: len(log.lines) >= 2, what="output lines")
                assert "tick 1" in str(log.lines[0].text)
                await pilot.press("s")
                await pilot.press("y")
                await until(pilot, lambda: pending["instance_id"] not in app.active, what="the run ended")
                await pilot.press("escape")
                assert rows(app, "history")[0] == pending["instance_id"]
                await pilot.press("slash")
                for ch in "done":
                    await pilot.press(ch)
                await pilot.press("enter")
                await until(pilot, lambda: [r.split("@")[0] for r in rows(app, "history")] == ["done"],
                            what="the filtered history")
                await pilot.press("q")

    asyncio.run(main())
    assert gated.wait(timeout=30) == 143
    run = cli.history("gate")[0]
    assert run["status"] == "STOPPED"
    assert any(a["action"] == "approved" and "taro dash" in (a["by"] or "") for a in run["actions"])


def _run(i: int, state: State = State.EXECUTING) -> RunRecord:
    r = RunRecord(job_id=f"job{i % 50}", run_id=f"r{i:06d}", created_at=time.time() - i, host="h")
    r.stage, r.state, r.started_at = Stage.RUNNING, state, time.time() - i
    return r


def test_a_thousand_active_runs_stay_responsive(home):
    async def main() -> None:
        with open_environment(str(home / "local")) as env:
            app = DashApp(env, env_name="local")
            async with app.run_test(size=(120, 40)) as pilot:
                t0 = time.perf_counter()
                app.apply([Event("created", _run(i, State.QUEUED)) for i in range(1000)])
                await pilot.pause()
                first = time.perf_counter() - t0
                assert len(rows(app, "active")) == 1000
                t0 = time.perf_counter()
                for _ in range(10):  # ten batches of 1,000 state changes
                    app.apply([Event("executing", _run(i)) for i in range(1000)])
                    await pilot.pause()
                updates = (time.perf_counter() - t0) / 10
                t0 = time.perf_counter()
                app._tick()
                await pilot.pause()
                tick = time.perf_counter() - t0
                t0 = time.perf_counter()
                await pilot.press("down", "down", "end", "home")
                keys = time.perf_counter() - t0
                print(f"1000 runs: first {first * 1000:.0f} ms, batch of 1000 updates {updates * 1000:.0f} ms, "
                      f"tick {tick * 1000:.0f} ms, 4 keys {keys * 1000:.0f} ms")
                assert first < 3 and updates < 2 and tick < 0.5 and keys < 2
                assert "1000 active (1000 executing)" in str(app.query_one("#status").render())
                await pilot.press("q")

    asyncio.run(main())


def test_a_killed_run_ends_lost_on_screen(cli, home):
    """No event comes from a wrapper killed with its command: the dash waits on the lease."""
    import os
    import signal

    p = cli.spawn_run("--id", "doomed", "--", "sleep", "60")
    run = cli.wait_state("doomed")

    async def main() -> None:
        with open_environment(str(home / "local")) as env:
            app = DashApp(env, env_name="local")
            async with app.run_test(size=(120, 30)) as pilot:
                assert rows(app, "active") == [run["instance_id"]]
                child = app.active[run["instance_id"]].child_pid
                os.killpg(p.pid, signal.SIGKILL)  # the wrapper, then its command (its own group, holding the lease)
                os.killpg(child, signal.SIGKILL)
                await until(pilot, lambda: rows(app, "history")[:1] == [run["instance_id"]], what="LOST on screen")
                assert app.history[0].status.value == "LOST" and rows(app, "active") == []
                await pilot.press("q")

    asyncio.run(main())
    p.wait(timeout=10)
