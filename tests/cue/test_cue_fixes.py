"""Behaviours the original runcue got wrong, each pinned here.

debug_blocked on service-blocked work, stall timeout after an idle period,
stop(timeout) leaving RUNNING work behind, uncancellable running work, retry
that never retried, no way to wait for completion, a starved thread pool.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

import runcue
from runcue.models import WorkState, WorkUnit

from ._helpers import Gate, run, until


def test_debug_blocked_reports_service_full_without_crashing() -> None:
    async def main() -> None:
        gate = Gate()
        async with runcue.Cue() as cue:
            cue.service("db", concurrent=1)

            @cue.task("q", uses="db")
            async def q(work: WorkUnit) -> None:
                await gate.wait()

            first = await cue.submit("q")
            second = await cue.submit("q")
            await until(lambda: gate.arrived == 1)
            blocked = cue.debug_blocked()
            assert [(b["work"].id, b["reason"]) for b in blocked] == [(second, "service_full")]
            assert "'db'" in blocked[0]["details"] and "1/1" in blocked[0]["details"]
            assert first != second
            gate.open()

    run(main())


def test_debug_blocked_reports_rate_limited() -> None:
    async def main() -> None:
        async with runcue.Cue() as cue:
            cue.service("api", rate="2/hour")

            @cue.task("call", uses="api")
            def call(work: WorkUnit) -> None:
                return None

            ids = [await cue.submit("call") for _ in range(3)]
            await until(lambda: cue.debug_blocked() != [])
            [item] = cue.debug_blocked()
            assert item["work"].id == ids[2] and item["reason"] == "rate_limited"
            assert "'api'" in item["details"]
            assert (await cue.cancel(ids[2])) is True

    run(main())


def test_new_work_after_idle_is_not_failed_by_stall_timeout() -> None:
    async def main() -> None:
        failures: list[BaseException] = []
        cue = runcue.Cue(stall_timeout=0.15)
        cue.on_failure(lambda work, error: failures.append(error))
        ready = asyncio.Event()

        @cue.task("t")
        async def t(work: WorkUnit) -> str:
            return "ok"

        @cue.is_ready
        def is_ready(work: WorkUnit) -> bool:
            return ready.is_set()

        async with cue:
            await cue.submit("t")
            ready.set()
            await cue.join()
            ready.clear()
            await asyncio.sleep(0.3)  # idle: nothing pending, so this time must not count
            wid = await cue.submit("t")
            loop = asyncio.get_running_loop()
            loop.call_later(0.08, ready.set)
        work = await cue.get(wid)
        assert failures == [] and work is not None and work.state is WorkState.COMPLETED

    run(main())


def test_stall_timeout_fails_pending_work_and_warns_once() -> None:
    async def main() -> None:
        failures: list[BaseException] = []
        warnings: list[tuple[float, int]] = []
        async with runcue.Cue(stall_warn_after=0.05, stall_timeout=0.2) as cue:

            @cue.task("t")
            def t(work: WorkUnit) -> None:
                return None

            cue.is_ready(lambda work: False)
            cue.on_failure(lambda work, error: failures.append(error))
            cue.on_stall_warning(lambda seconds, pending: warnings.append((seconds, pending)))
            for _ in range(3):
                await cue.submit("t")
        assert len(failures) == 3 and all(isinstance(e, TimeoutError) for e in failures)
        assert len(warnings) == 1 and warnings[0][0] >= 0.05 and warnings[0][1] == 3
        works = await cue.list()
        assert all(w.state is WorkState.FAILED and (w.error or "").startswith("Stall timeout: ") for w in works)

    run(main())


def test_stall_warning_goes_to_stderr_without_callback(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        async with runcue.Cue(stall_warn_after=0.05, stall_timeout=0.15) as cue:

            @cue.task("t")
            def t(work: WorkUnit) -> None:
                return None

            cue.is_ready(lambda work: False)
            await cue.submit("t")

    run(main())
    err = capsys.readouterr().err
    assert err.count("no progress") == 1 and "1 work pending" in err


def test_pending_timeout_and_warning_count_from_submission(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        failures: list[tuple[str, BaseException]] = []
        warned: list[tuple[str, float]] = []
        cue = runcue.Cue(pending_warn_after=0.05, pending_timeout=0.15)

        @cue.task("t")
        def t(work: WorkUnit) -> None:
            return None

        cue.is_ready(lambda work: work.params.get("ok", False))
        cue.on_failure(lambda work, error: failures.append((work.id, error)))
        stuck = await cue.submit("t")  # submitted before start: the clock already runs
        async with cue:
            fine = await cue.submit("t", params={"ok": True})
            cue.on_pending_warning(lambda work, seconds: warned.append((work.id, seconds)))
        assert [w for w, _ in failures] == [stuck] and isinstance(failures[0][1], TimeoutError)
        assert [w for w, _ in warned] == [stuck] and warned[0][1] >= 0.05
        done = await cue.get(fine)
        assert done is not None and done.state is WorkState.COMPLETED

    run(main())

    async def default_warning() -> None:
        async with runcue.Cue(pending_warn_after=0.02, pending_timeout=0.06) as cue:

            @cue.task("t")
            def t(work: WorkUnit) -> None:
                return None

            cue.is_ready(lambda work: False)
            await cue.submit("t")

    run(default_warning())
    assert capsys.readouterr().err.count("pending for") == 1


@pytest.mark.parametrize("sync_handler", [False, True])
def test_stop_timeout_ends_abandoned_work_failed_with_callback(sync_handler: bool) -> None:
    async def main() -> None:
        failures: list[BaseException] = []
        release = threading.Event()
        started = asyncio.Event()
        cue = runcue.Cue()
        cue.on_failure(lambda work, error: failures.append(error))
        cue.on_start(lambda work: started.set())
        if sync_handler:

            @cue.task("slow")
            def slow(work: WorkUnit) -> None:
                release.wait(5)
        else:

            @cue.task("slow")
            async def slow(work: WorkUnit) -> None:
                await asyncio.Event().wait()

        cue.start()
        wid = await cue.submit("slow")
        await asyncio.wait_for(started.wait(), 5)
        await cue.stop(timeout=0.05)
        release.set()
        work = await cue.get(wid)
        assert work is not None and work.state is WorkState.FAILED
        assert len(failures) == 1 and isinstance(failures[0], TimeoutError)
        assert work.completed_at is not None

    run(main())


def test_stop_without_timeout_waits_for_running_work_and_keeps_pending() -> None:
    async def main() -> None:
        gate = Gate()
        cue = runcue.Cue()
        cue.service("one", concurrent=1)

        @cue.task("t", uses="one")
        async def t(work: WorkUnit) -> str:
            await gate.wait()
            return "ok"

        cue.start()
        first = await cue.submit("t")
        second = await cue.submit("t")
        await until(lambda: gate.arrived == 1)
        stopping = asyncio.ensure_future(cue.stop())
        await asyncio.sleep(0)
        assert not stopping.done()
        gate.open()
        await stopping
        w1, w2 = await cue.get(first), await cue.get(second)
        assert w1 is not None and w1.state is WorkState.COMPLETED
        assert w2 is not None and w2.state is WorkState.PENDING
        cue.start()  # started again, the pending work runs
        await cue.join()
        assert w2.state is WorkState.COMPLETED
        await cue.stop()

    run(main())


def test_running_async_work_can_be_cancelled_and_frees_its_slot() -> None:
    async def main() -> None:
        cancelled = asyncio.Event()
        async with runcue.Cue() as cue:
            cue.service("one", concurrent=1)
            started = Gate()

            @cue.task("t", uses="one")
            async def t(work: WorkUnit) -> str:
                if work.params["hang"]:
                    try:
                        await started.wait()
                    except asyncio.CancelledError:
                        cancelled.set()
                        raise
                return "ok"

            hung = await cue.submit("t", params={"hang": True})
            after = await cue.submit("t", params={"hang": False})
            await until(lambda: started.arrived == 1)
            assert await cue.cancel(hung) is True
            assert await cue.cancel(hung) is False
            assert await cue.cancel("unknown") is False
        assert cancelled.is_set()
        w1, w2 = await cue.get(hung), await cue.get(after)
        assert w1 is not None and w1.state is WorkState.CANCELLED
        assert w2 is not None and w2.state is WorkState.COMPLETED and w2.result == "ok"

    run(main())


def test_running_sync_work_cancel_discards_result_and_holds_slot_until_thread_returns() -> None:
    async def main() -> None:
        release = threading.Event()
        entered = threading.Event()
        async with runcue.Cue() as cue:
            cue.service("one", concurrent=1)

            @cue.task("t", uses="one")
            def t(work: WorkUnit) -> str:
                if work.params["hang"]:
                    entered.set()
                    release.wait(5)
                return "ok"

            hung = await cue.submit("t", params={"hang": True})
            after = await cue.submit("t", params={"hang": False})
            await until(entered.is_set)
            assert await cue.cancel(hung) is True
            w1 = await cue.get(hung)
            assert w1 is not None and w1.state is WorkState.CANCELLED
            w2 = await cue.get(after)
            assert w2 is not None and w2.state is WorkState.PENDING  # the thread still holds the slot
            assert [b["reason"] for b in cue.debug_blocked()] == ["service_full"]
            release.set()
        assert w1.state is WorkState.CANCELLED and w1.result is None
        assert w2.state is WorkState.COMPLETED

    run(main())


def test_cancel_pending_work() -> None:
    async def main() -> None:
        async with runcue.Cue() as cue:

            @cue.task("t")
            def t(work: WorkUnit) -> None:
                raise AssertionError("cancelled work must not run")

            cue.is_ready(lambda work: False)
            wid = await cue.submit("t")
            assert await cue.cancel(wid) is True
        work = await cue.get(wid)
        assert work is not None and work.state is WorkState.CANCELLED
        assert cue.debug_blocked() == []

    run(main())


def test_retry_reruns_with_exponential_backoff_and_counts_attempts() -> None:
    async def main() -> None:
        attempts: list[tuple[int, float]] = []
        failures: list[BaseException] = []
        loop = asyncio.get_running_loop()
        async with runcue.Cue(retry_delay=0.02) as cue:
            cue.on_failure(lambda work, error: failures.append(error))

            @cue.task("flaky", retry=3)
            async def flaky(work: WorkUnit) -> str:
                attempts.append((work.attempt, loop.time()))
                if work.attempt < 3:
                    raise ConnectionError(f"try {work.attempt}")
                return "third time lucky"

            @cue.task("doomed", retry=2)
            def doomed(work: WorkUnit) -> None:
                raise ValueError(f"attempt {work.attempt}")

            ok = await cue.submit("flaky")
            bad = await cue.submit("doomed")
        assert [a for a, _ in attempts] == [1, 2, 3]
        gaps = [b - a for (_, a), (_, b) in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.02 and gaps[1] >= 0.04
        w_ok, w_bad = await cue.get(ok), await cue.get(bad)
        assert w_ok is not None and w_ok.result == "third time lucky" and w_ok.attempt == 3
        assert w_ok.error is None
        assert w_bad is not None and w_bad.state is WorkState.FAILED and w_bad.attempt == 2
        assert w_bad.error == "attempt 2"
        assert len(failures) == 1 and str(failures[0]) == "attempt 2"

    run(main())


def test_join_and_async_with_wait_for_completion_including_callbacks() -> None:
    async def main() -> None:
        recorded: list[str] = []
        async with runcue.Cue() as cue:

            @cue.task("t")
            async def t(work: WorkUnit) -> None:
                return None

            @cue.on_complete
            async def on_complete(work: WorkUnit, result: object, duration: float) -> None:
                await asyncio.sleep(0.01)
                recorded.append(work.id)

            ids = [await cue.submit("t") for _ in range(20)]
            await cue.join()
            assert sorted(recorded) == sorted(ids)

    run(main())


def test_sync_handlers_really_run_concurrent_100() -> None:
    """A small default thread pool starved sync handlers in the original."""

    async def main() -> None:
        barrier = threading.Barrier(100, timeout=5)
        async with runcue.Cue() as cue:
            cue.service("wide", concurrent=100)

            @cue.task("t", uses="wide")
            def t(work: WorkUnit) -> int:
                return barrier.wait()  # raises BrokenBarrierError unless all 100 run at once

            for _ in range(100):
                await cue.submit("t")
        works = await cue.list(limit=1000)
        assert len(works) == 100 and all(w.state is WorkState.COMPLETED for w in works)

    run(main(), timeout=20)


def test_stop_while_asking_async_is_ready_loses_no_work() -> None:
    async def main() -> None:
        asked = asyncio.Event()
        answer = asyncio.Event()
        cue = runcue.Cue()

        @cue.task("t")
        async def t(work: WorkUnit) -> str:
            return "ran"

        @cue.is_ready
        async def is_ready(work: WorkUnit) -> bool:
            asked.set()
            await answer.wait()
            return True

        cue.start()
        wid = await cue.submit("t")
        await asyncio.wait_for(asked.wait(), 5)
        await cue.stop()
        answer.set()
        cue.start()
        await cue.join(timeout=5)
        work = await cue.get(wid)
        assert work is not None and work.result == "ran"
        await cue.stop()

    run(main())


def test_stall_warning_fires_once_per_stall_and_again_after_progress() -> None:
    async def main() -> list[int]:
        warnings: list[int] = []
        async with runcue.Cue(stall_warn_after=0.05) as cue:

            @cue.task("t")
            async def t(work: WorkUnit) -> None:
                return None

            cue.is_ready(lambda work: work.params.get("ready", False))
            cue.on_stall_warning(lambda seconds, pending: warnings.append(pending))
            stuck = await cue.submit("t")
            await until(lambda: len(warnings) == 1)
            await cue.submit("t", params={"ready": True})  # progress ends the first stall
            await until(lambda: len(warnings) == 2)
            await cue.cancel(stuck)
        return warnings

    assert run(main()) == [1, 1]


def test_importing_runcue_stays_light() -> None:
    import subprocess
    import sys

    code = "import sys, runcue; print('rich' in sys.modules, 'concurrent.futures' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.split()[0] == "False"  # the live view's rich is imported only by runcue-sim


def test_cancelling_work_before_its_handler_got_going_frees_the_slot() -> None:
    async def main() -> None:
        ids: dict[str, str] = {}
        both = asyncio.Event()
        arrived = 0
        async with runcue.Cue() as cue:
            cue.service("two", concurrent=2)

            @cue.task("a", uses="two")
            async def a(work: WorkUnit) -> str:
                return "a"

            @cue.task("pair", uses="two")
            async def pair(work: WorkUnit) -> None:
                nonlocal arrived
                arrived += 1
                if arrived == 2:
                    both.set()
                await asyncio.wait_for(both.wait(), 5)  # needs both slots at once

            @cue.is_stale
            async def is_stale(work: WorkUnit) -> bool:
                if work.params.get("cancel_a"):  # same dispatch pass that just launched "a"
                    assert await cue.cancel(ids["a"])
                return True

            ids["a"] = await cue.submit("a")
            ids["b"] = await cue.submit("pair", params={"cancel_a": True})
            ids["c"] = await cue.submit("pair")
        states = {k: (await cue.get(v)).state for k, v in ids.items()}  # type: ignore[union-attr]
        assert states == {"a": WorkState.CANCELLED, "b": WorkState.COMPLETED, "c": WorkState.COMPLETED}

    run(main())


def test_finished_work_is_forgotten_beyond_keep_finished() -> None:
    """A long-running cue must not keep every work unit it ever ran."""
    import asyncio

    import runcue

    async def main() -> tuple[int, object, object]:
        cue = runcue.Cue(keep_finished=10)

        @cue.task("noop")
        async def noop(work):
            return work.params["i"]

        cue.start()
        ids = [await cue.submit("noop", params={"i": i}) for i in range(50)]
        await cue.join()
        known = len(await cue.list(limit=1000))
        oldest = await cue.get(ids[0])
        newest = await cue.get(ids[-1])
        await cue.stop()
        return known, oldest, newest

    known, oldest, newest = asyncio.run(main())
    assert known == 10
    assert oldest is None
    assert newest is not None and newest.result == 49
