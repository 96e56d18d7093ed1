"""runtools.run(callable): the run records what really happened to the callable (README, Python API).

Coroutines are awaited, generators run to their end, SystemExit/KeyboardInterrupt end the run and
go on to the caller, and a signal interrupts a blocking call (subprocess: signals need a main thread).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import threading

import pytest

import runtools
from runtools.model.status import Status


@pytest.fixture
def env():
    with runtools.environment("memory") as e:
        yield e


def only_run(env):
    runs = env.find_runs(runtools.RunQuery())
    assert len(runs) == 1, runs
    return runs[0]


def test_async_function_is_awaited(env):
    done = []

    async def fetch(n):
        await asyncio.sleep(0)
        done.append(n)
        return n * 2

    r = runtools.run(fetch, 21, env=env)
    assert (r.run.status, r.value, done) == (Status.COMPLETED, 42, [21])
    assert only_run(env).job_id == "fetch"


def test_async_function_that_raises_fails(env):
    async def broken():
        await asyncio.sleep(0)
        raise ValueError("nope")

    r = runtools.run(broken, env=env)
    assert (r.run.status, r.exit_code, r.run.error) == (Status.FAILED, 1, "ValueError: nope")


def test_coroutine_object_and_callable_returning_one(env):
    async def three():
        return 3

    assert runtools.run(three(), env=env).value == 3
    r = runtools.run(lambda: three(), job_id="lam", env=env)
    assert (r.run.status, r.value) == (Status.COMPLETED, 3)


def test_inside_a_running_loop_says_what_to_do_and_creates_nothing(env):
    async def work():
        return 1

    async def main():
        with pytest.raises(RuntimeError, match=r"asyncio\.to_thread"):
            runtools.run(work, env=env)
        assert env.find_runs(runtools.RunQuery()) == []
        # the documented way: in a thread, where no loop runs
        return await asyncio.to_thread(runtools.run, work, env=env)

    assert asyncio.run(main()).value == 1


def test_generator_is_run_to_its_end(env):
    seen = []

    def steps():
        for i in range(3):
            seen.append(i)
            yield i

    r = runtools.run(steps, env=env)
    assert (r.run.status, r.value, seen) == (Status.COMPLETED, [0, 1, 2], [0, 1, 2])

    async def asteps():
        for i in range(2):
            await asyncio.sleep(0)
            yield i

    assert runtools.run(asteps, env=env).value == [0, 1]


def test_generator_that_raises_midway_fails(env):
    def steps():
        yield 1
        raise RuntimeError("half way")

    r = runtools.run(steps, env=env)
    assert (r.run.status, r.run.error) == (Status.FAILED, "RuntimeError: half way")


@pytest.mark.parametrize(("arg", "status", "code"), [
    (0, Status.COMPLETED, 0), (None, Status.COMPLETED, 0), (3, Status.FAILED, 3), ("bye", Status.FAILED, 1),
])
def test_sys_exit_is_recorded_then_re_raised(env, arg, status, code):
    with pytest.raises(SystemExit) as e:
        runtools.run(sys.exit, arg, job_id="leaver", env=env)
    assert e.value.code == arg
    r = only_run(env)
    assert (r.active, r.status, r.exit_code) == (False, status, code)


def test_keyboard_interrupt_is_recorded_then_re_raised(env):
    def ctrl_c():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runtools.run(ctrl_c, env=env)
    r = only_run(env)
    assert (r.active, r.status, r.exit_code) == (False, Status.INTERRUPTED, 130)


def test_stop_request_ends_a_generator_at_its_next_yield(cli, wait_until):
    stop = threading.Event()
    out = {}

    def ticks():
        while not stop.wait(0.02):  # one item every 20 ms until stopped (or the test gives up)
            yield 1

    t = threading.Thread(target=lambda: out.setdefault("r", runtools.run(ticks, job_id="ticks")))
    t.start()
    try:
        cli.wait_state("ticks", "EXECUTING")
        assert cli.taro("stop", "-f", "ticks").returncode == 0
        t.join(10)
        assert not t.is_alive()
    finally:
        stop.set()
        t.join(10)
    assert out["r"].run.status is Status.STOPPED
    assert cli.history("ticks")[0]["status"] == "STOPPED"


SLEEPER = textwrap.dedent("""
    import sys, time, runtools
    try:
        runtools.run(time.sleep, 30, job_id="sleeper")
    except KeyboardInterrupt:
        sys.exit(42)
""")


@pytest.mark.parametrize(("sig", "rc", "code"), [(signal.SIGINT, 42, 130), (signal.SIGTERM, 143, 143)])
def test_signal_during_a_blocking_call_interrupts_it(cli, sig, rc, code):
    p = cli.spawn([sys.executable, "-c", SLEEPER], binary=False)
    cli.wait_state("sleeper", "EXECUTING")
    os.kill(p.pid, sig)
    _, err = p.communicate(timeout=10)  # not 30 s: the sleep was interrupted
    assert p.returncode == rc, err
    (h,) = cli.history("sleeper")
    assert (h["status"], h["exit_code"]) == ("INTERRUPTED", code)


def test_sigint_while_a_command_runs_from_python(cli):
    script = textwrap.dedent("""
        import sys, runtools
        try:
            runtools.run(["sleep", "30"], job_id="cmd")
        except KeyboardInterrupt:
            sys.exit(42)
    """)
    p = cli.spawn([sys.executable, "-c", script], binary=False)
    cli.wait_state("cmd", "EXECUTING")
    os.kill(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 42, err
    assert cli.history("cmd")[0]["status"] == "INTERRUPTED"
