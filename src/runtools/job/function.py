"""The function phase: run a Python callable as the run's work (embedding, `runtools.run`).

What the run records is what really happened:
- an `async def` function (or a callable returning a coroutine) is awaited, with `asyncio.run`
  in the calling thread; inside a running event loop that is impossible, and `runtools.run`
  says so before creating a run (use `await asyncio.to_thread(runtools.run, fn, ...)`);
- a generator (sync or async) is run to its end; `RunResult.value` is the list of the values it
  yielded, and a stop request (`taro stop`) ends the run STOPPED at its next `yield`;
- `sys.exit(n)` ends the run COMPLETED (n 0 or None) or FAILED (exit code n; 1 for a message),
  and the SystemExit goes on to the caller once the end is recorded;
- KeyboardInterrupt (or SIGINT/SIGTERM/SIGHUP while the callable blocks in the main thread)
  ends the run INTERRUPTED (130, or 128+N) and goes on to the caller: KeyboardInterrupt for
  SIGINT, SystemExit(128+N) for the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from runtools.job.phase import ExecutionPhase, RunContext
from runtools.model.status import State, Status

_SIGNALS = (2, 15, 1)  # SIGINT, SIGTERM, SIGHUP: the ones the run's own handler turns into a stop


class FunctionPhase(ExecutionPhase):
    """Calls `fn(*args, **kwargs)`; an exception fails the run. A stop request is visible to the
    function through `RunContext.stop_status` (cooperative), and a generator is stopped at its
    next `yield`; a signal to the process interrupts a call blocking in the main thread."""

    name = "function"

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None
        self.raised: BaseException | None = None  # to re-raise once the run's end is recorded

    def execute(self, ctx: RunContext) -> tuple[Status, int | None]:
        interrupting = _Interrupting(ctx)
        try:
            with interrupting:  # a signal from here on is remembered, and raised once armed
                ctx.run.started_at = time.time()
                ctx.set_state(State.EXECUTING, None, "executing")
                interrupting.arm()
                self.result = _complete(self.fn(*self.args, **self.kwargs), ctx)
        except _Stopped:
            return ctx.stop_status or Status.STOPPED, ctx.stop_exit
        except KeyboardInterrupt as e:
            self.raised = e
            ctx.run.error = "interrupted (KeyboardInterrupt)"
            return Status.INTERRUPTED, ctx.stop_exit or 130
        except SystemExit as e:
            self.raised = e
            if interrupting.signum is not None:  # our own: SIGTERM/SIGHUP while blocking
                ctx.run.error = f"interrupted by signal {interrupting.signum}"
                return Status.INTERRUPTED, 128 + interrupting.signum
            code = _exit_status(e.code)
            if code != 0:
                ctx.run.error = f"sys.exit({e.code!r})"
            return (Status.COMPLETED if code == 0 else Status.FAILED), code
        except Exception as e:
            ctx.run.error = f"{type(e).__name__}: {e}"
            return Status.FAILED, 1
        except BaseException as e:  # GeneratorExit, a custom BaseException: recorded, then re-raised
            self.raised = e
            ctx.run.error = f"{type(e).__name__}: {e}"
            return Status.FAILED, 1
        if ctx.stop_status is not None:
            return ctx.stop_status, ctx.stop_exit
        return Status.COMPLETED, 0


class _Stopped(Exception):
    """A stop request reached a generator between two items."""


def _complete(value: Any, ctx: RunContext) -> Any:
    """Await a coroutine, run a generator to its end; anything else is the result as it is."""
    import inspect

    if inspect.iscoroutine(value):
        return _run_coroutine(value)
    if inspect.isgenerator(value):
        items = []
        try:
            for item in value:
                items.append(item)
                if ctx.stop_status is not None:
                    raise _Stopped
        finally:
            value.close()
        return items
    if inspect.isasyncgen(value):

        async def drain() -> list[Any]:
            out = []
            try:
                async for item in value:
                    out.append(item)
                    if ctx.stop_status is not None:
                        raise _Stopped
            finally:
                await value.aclose()
            return out

        return _run_coroutine(drain())
    if inspect.isawaitable(value):  # a Future-like object with __await__

        async def wait() -> Any:
            return await value

        return _run_coroutine(wait())
    return value


def _run_coroutine(coro: Any) -> Any:
    import asyncio

    if running_loop():
        coro.close()
        raise RuntimeError(ASYNC_IN_LOOP)
    return asyncio.run(coro)


ASYNC_IN_LOOP = (
    "cannot await the job's coroutine: an event loop is already running in this thread; "
    "call `await asyncio.to_thread(runtools.run, fn, ...)` from async code"
)


def running_loop() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def is_async(fn: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn) or inspect.iscoroutine(fn)


def _exit_status(code: object) -> int:
    """The process exit status `sys.exit(code)` would give: None 0, an int itself, else 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF  # as the OS reports it: sys.exit(-1) is 255
    return 1  # a message (printed by Python) means failure


class _Interrupting:
    """While the callable runs in the main thread: a signal that stops the run also interrupts
    the call (KeyboardInterrupt for SIGINT, SystemExit(128+N) for SIGTERM/SIGHUP), as it would
    without runtools. The run's own handler (installed by JobRun) records the stop first."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self._active = False

    def __enter__(self) -> _Interrupting:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for s in _SIGNALS:
            old = signal.getsignal(s)
            if not callable(old):
                continue  # no run handler here (SIG_DFL/SIG_IGN): leave Python's behaviour alone

            def handler(signum: int, frame: Any, old: Any = old) -> None:
                old(signum, frame)  # records the stop (INTERRUPTED, 128+N) on the run
                if not self._active:
                    return
                self._active = False
                self.signum = signum
                if signum == 2:
                    raise KeyboardInterrupt
                raise SystemExit(128 + signum)

            self._old[s] = old
            signal.signal(s, handler)
        return self

    def arm(self) -> None:
        """From now on a signal interrupts the callable; one that came before (the run is
        already asked to stop) interrupts it at once, before it is called."""
        self._active = True
        ctx = self.ctx
        if ctx.stop_status is None:
            return
        self._active = False
        code = ctx.stop_exit
        if code is None:
            raise _Stopped  # taro stop before the callable started
        self.signum = code - 128
        if code == 130:
            raise KeyboardInterrupt
        raise SystemExit(code)

    def __exit__(self, *exc: object) -> None:
        self._active = False
        import signal

        for s, h in self._old.items():
            try:
                signal.signal(s, h)
            except (ValueError, TypeError):
                pass
