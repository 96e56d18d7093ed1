"""The runcue API surface: registration, submit/get/list/cancel, callbacks, lifecycle."""

from __future__ import annotations

import asyncio

import pytest

import runcue
from runcue.models import PriorityContext, TaskType, WorkState, WorkUnit
from runtools import cue as engine_pkg

from ._helpers import Gate, run, until


def test_runcue_is_a_face_over_runtools_cue() -> None:
    assert runcue.Cue is engine_pkg.Cue
    assert runcue.WorkState is WorkState is engine_pkg.WorkState
    assert runcue.models.WorkUnit is WorkUnit
    assert {s.value for s in WorkState} == {"pending", "running", "completed", "failed", "cancelled"}
    assert WorkState.PENDING == "pending"


def test_model_defaults() -> None:
    work = WorkUnit(id="a", task="t")
    assert work.params == {} and work.state is WorkState.PENDING and work.attempt == 1
    assert (work.created_at, work.started_at, work.completed_at, work.result, work.error) == (
        0.0, None, None, None, None,
    )
    assert TaskType("t") == TaskType(name="t", service=None, handler=None, retry=1)
    ctx = PriorityContext(work, 1.5, 3)
    assert (ctx.work, ctx.wait_time, ctx.queue_depth) == (work, 1.5, 3)


def test_registration_errors_and_get_task() -> None:
    cue = runcue.Cue()
    with pytest.raises(ValueError, match=r"^Invalid rate format: fast\. "):
        cue.service("api", rate="fast")
    with pytest.raises(ValueError, match=r"^Unknown service: nope\. .*cue\.service"):
        cue.task("t", uses="nope")
    with pytest.raises(ValueError, match="retry"):
        cue.task("t", retry=0)
    cue.service("api", rate="10/Min", concurrent=2)

    @cue.task("fetch", uses="api", retry=3)
    def fetch(work: WorkUnit) -> None:
        return None

    tt = cue.get_task("fetch")
    assert isinstance(tt, TaskType)
    assert (tt.name, tt.service, tt.handler, tt.retry) == ("fetch", "api", fetch, 3)
    assert cue.get_task("missing") is None


def test_start_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="event loop"):
        runcue.Cue().start()


def test_submit_queues_without_dispatching_then_runs() -> None:
    async def main() -> None:
        cue = runcue.Cue()
        calls: list[dict[str, object]] = []

        @cue.task("t")
        async def t(work: WorkUnit) -> dict[str, object]:
            calls.append(work.params)
            return {"ok": work.params["n"]}

        cue.start()
        wid = await cue.submit("t", params={"n": 1})
        work = await cue.get(wid)
        assert work is not None and work.state is WorkState.PENDING and calls == []
        assert len(wid) == 12
        await cue.join()
        assert work.state is WorkState.COMPLETED and work.result == {"ok": 1}
        assert work.started_at is not None and work.completed_at is not None and work.error is None
        assert await cue.get("nope") is None
        await cue.stop()

    run(main())


def test_list_filters_by_state_and_task_with_limit() -> None:
    async def main() -> None:
        async with runcue.Cue() as cue:

            @cue.task("a")
            def a(work: WorkUnit) -> int:
                return 1

            @cue.task("b")
            async def b(work: WorkUnit) -> int:
                raise RuntimeError("boom")

            ids = [await cue.submit("a") for _ in range(3)] + [await cue.submit("b")]
            await cue.join()
            assert [w.id for w in await cue.list()] == ids
            assert [w.id for w in await cue.list(state="completed")] == ids[:3]
            assert [w.id for w in await cue.list(state=WorkState.FAILED, task="b")] == ids[3:]
            assert len(await cue.list(limit=2)) == 2
            assert await cue.list(task="zzz") == []

    run(main())


@pytest.mark.parametrize("use_async", [False, True])
def test_callbacks_sync_or_async_all_run(use_async: bool) -> None:
    """Async callbacks are awaited (not treated as truthy or dropped) - a bug in the original."""

    async def main() -> list[tuple[str, object]]:
        seen: list[tuple[str, object]] = []
        cue = runcue.Cue()

        def cb(fn):  # turn a sync recorder into the flavour under test
            if not use_async:
                return fn

            async def wrapper(*args):
                await asyncio.sleep(0)
                return fn(*args)

            return wrapper

        @cue.task("ok")
        def ok(work: WorkUnit) -> str:
            return "done"

        @cue.task("bad")
        def bad(work: WorkUnit) -> None:
            raise ValueError("nope")

        @cue.task("skipme")
        def skipme(work: WorkUnit) -> None:
            raise AssertionError("must be skipped")

        cue.is_ready(cb(lambda work: True))
        cue.is_stale(cb(lambda work: work.task != "skipme"))
        cue.on_start(cb(lambda work: seen.append(("start", work.task))))
        cue.on_complete(cb(lambda work, result, duration: seen.append(("complete", (result, duration >= 0)))))
        cue.on_failure(cb(lambda work, error: seen.append(("failure", error))))
        cue.on_skip(cb(lambda work: seen.append(("skip", work.task))))
        async with cue:
            for name in ("ok", "bad", "skipme"):
                await cue.submit(name)
        return seen

    seen = run(main())
    kinds = sorted(k for k, _ in seen)
    assert kinds == ["complete", "failure", "skip", "start", "start"]
    assert ("complete", ("done", True)) in seen and ("skip", "skipme") in seen
    failure = next(v for k, v in seen if k == "failure")
    assert isinstance(failure, ValueError) and str(failure) == "nope"


def test_async_is_ready_false_is_respected() -> None:
    """A coroutine from an async is_ready is awaited, not taken as a truthy object."""

    async def main() -> None:
        ready = False
        async with runcue.Cue() as cue:

            @cue.task("t")
            async def t(work: WorkUnit) -> int:
                return 1

            @cue.is_ready
            async def is_ready(work: WorkUnit) -> bool:
                return ready

            wid = await cue.submit("t")
            await until(lambda: any(b["reason"] == "not_ready" for b in cue.debug_blocked()))
            work = await cue.get(wid)
            assert work is not None and work.state is WorkState.PENDING
            ready = True

    run(main())


def test_async_is_stale_false_skips() -> None:
    async def main() -> WorkUnit:
        async with runcue.Cue() as cue:

            @cue.task("t")
            async def t(work: WorkUnit) -> int:
                raise AssertionError("skipped work must not run")

            @cue.is_stale
            async def is_stale(work: WorkUnit) -> bool:
                return False

            wid = await cue.submit("t")
        work = await cue.get(wid)
        assert work is not None
        return work

    work = run(main())
    assert work.state is WorkState.COMPLETED and work.started_at is None and work.completed_at is not None


def test_exceptions_in_checks_mean_not_ready_and_stale() -> None:
    async def main() -> None:
        flaky = {"raise": True}
        async with runcue.Cue() as cue:
            ran: list[str] = []

            @cue.task("t")
            def t(work: WorkUnit) -> None:
                ran.append(work.id)

            @cue.is_ready
            def is_ready(work: WorkUnit) -> bool:
                if flaky["raise"]:
                    raise OSError("disk hiccup")
                return True

            @cue.is_stale
            def is_stale(work: WorkUnit) -> bool:
                raise OSError("cannot stat output")

            wid = await cue.submit("t")
            await until(lambda: [b["reason"] for b in cue.debug_blocked()] == ["not_ready"])
            assert ran == []
            flaky["raise"] = False
        assert ran == [wid]

    run(main())


def test_priority_orders_highest_first_fifo_among_equals() -> None:
    async def main() -> list[str]:
        order: list[str] = []
        contexts: list[PriorityContext] = []
        gate = Gate()
        async with runcue.Cue() as cue:
            cue.service("one", concurrent=1)

            @cue.task("t", uses="one")
            async def t(work: WorkUnit) -> None:
                if work.params["name"] == "blocker":
                    await gate.wait()
                order.append(work.params["name"])

            @cue.priority
            def priority(ctx: PriorityContext) -> float:
                contexts.append(ctx)
                return {"hi": 0.9, "lo": 0.1}.get(ctx.work.params["name"][:2], 0.5)

            await cue.submit("t", params={"name": "blocker"})
            await until(lambda: gate.arrived == 1)
            for name in ("lo1", "mid1", "hi1", "mid2", "hi2", "lo2"):
                await cue.submit("t", params={"name": name})
            await until(lambda: sum(1 for c in contexts if c.work.params['name'] == 'lo2') >= 1)
            gate.open()
        assert all(c.wait_time >= 0 and c.queue_depth >= 1 for c in contexts)
        return order

    assert run(main()) == ["blocker", "hi1", "hi2", "mid1", "mid2", "lo1", "lo2"]


def test_submit_for_an_unknown_task_raises_as_the_original() -> None:
    async def main() -> None:
        async with runcue.Cue() as cue:
            with pytest.raises(ValueError, match=r"^Unknown task: later\. .*@cue\.task\('later'"):
                await cue.submit("later", params={"x": 1})
            assert await cue.list() == []

    run(main())


def test_work_whose_task_is_gone_is_reported_then_runs_once_registered() -> None:
    async def main() -> None:
        async with runcue.Cue() as cue:

            @cue.task("later")
            def first(work: WorkUnit) -> int:
                return 0

            cue.is_ready(lambda work: False)  # hold it while its task goes away
            wid = await cue.submit("later", params={"x": 1})
            del cue._task_types["later"]  # no public way: the path defends against a vanished handler
            cue.is_ready(lambda work: True)
            await until(lambda: [b["reason"] for b in cue.debug_blocked()] == ["unknown_task"])
            assert "later" in cue.debug_blocked()[0]["details"]

            @cue.task("later")
            def later(work: WorkUnit) -> int:
                return work.params["x"]

        work = await cue.get(wid)
        assert work is not None and work.result == 1

    run(main())


def test_join_timeout_and_join_before_start() -> None:
    async def main() -> None:
        cue = runcue.Cue()

        @cue.task("t")
        def t(work: WorkUnit) -> None:
            return None

        @cue.is_ready
        def never(work: WorkUnit) -> bool:
            return False

        await cue.join()  # nothing submitted: returns at once
        await cue.submit("t")
        with pytest.raises(RuntimeError, match="start"):
            await cue.join()
        cue.start()
        with pytest.raises(TimeoutError):
            await cue.join(timeout=0.05)
        await cue.stop()

    run(main())


def test_list_rejects_an_unknown_state() -> None:
    async def main() -> None:
        cue = runcue.Cue()
        with pytest.raises(ValueError, match="done"):
            await cue.list(state="done")

    run(main())


def test_async_with_on_error_abandons_running_work_and_reraises() -> None:
    async def main() -> None:
        failures: list[BaseException] = []
        started = asyncio.Event()
        cue = runcue.Cue()

        @cue.task("hang")
        async def hang(work: WorkUnit) -> None:
            started.set()
            await asyncio.Event().wait()

        cue.on_failure(lambda work, error: failures.append(error))
        with pytest.raises(KeyError):
            async with cue:
                wid = await cue.submit("hang")
                await asyncio.wait_for(started.wait(), 5)
                raise KeyError("app error")
        work = await cue.get(wid)
        assert work is not None and work.state is WorkState.FAILED
        assert len(failures) == 1 and isinstance(failures[0], TimeoutError)

    run(main())
