"""Stopping an orphaned command: a run whose wrapper was killed while its command still runs.

The command inherited the run's lease, so the run stays active (and keeps what it holds) for as
long as the command lives, but nobody serves its control socket. `stop_orphan` does what the
wrapper would have done: TERM the command's process group, KILL it after the grace period, and
the run ends with the status the stop asked for (STOPPED, or INTERRUPTED), who asked and when
recorded on it, once the lease is released (store.mark_lost reads the request).

A pid alone is never trusted: the command is pinned by a pidfd whose start time must match the
recorded `child_start`, and the wrapper counts as alive while its pid runs a process that began
no later than the command (a reuse of its pid can only begin after it died, so after the command).
"""

from __future__ import annotations

import os
import select
import time
from _signal import SIGKILL, SIGTERM

from runtools.env.local import store
from runtools.model.durations import wait_slice
from runtools.model.status import Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runtools.env.local.environment import LocalEnvironment
    from runtools.model.run import RunRecord

#: after KILL, how long to wait for the group to go before giving up on it
KILL_WAIT_S = 5.0


def _start_time(pid: int) -> float | None:
    from runtools.job.program import process_start_time

    return process_start_time(pid)


def wrapper_alive(run: RunRecord) -> bool:
    """May the run's wrapper still live? (When in doubt: yes — then it is not an orphan.)"""
    if run.pid is None:
        return False
    started = _start_time(run.pid)
    if started is None:
        return False
    return run.child_start is None or started <= run.child_start


def _pin(pid: int, start: float) -> int | None:
    """A pidfd on `pid` if it still is the process that started at `start`."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if _start_time(pid) != start:
        os.close(fd)
        return None
    return fd


def _gone(fd: int, timeout: float) -> bool:
    """Wait until the pinned process exits (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if select.select([fd], [], [], wait_slice(deadline - time.monotonic()))[0]:
            return True
        if time.monotonic() >= deadline:
            return False


def _killpg(fd: int, pgid: int, sig: int) -> None:
    if not select.select([fd], [], [], 0)[0]:  # still alive, so `pgid` is still its group
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass


def stop_orphan(env: LocalEnvironment, run: RunRecord, interrupt: bool, by: str | None,
                grace: float) -> RunRecord | None:
    """Stop the orphaned command of `run`; the run as it is afterwards (ended, unless a process
    that left the command's group still holds its lease). None when `run` is no orphan or its
    command cannot be told from another process: its wrapper may be alive, its start time was not
    recorded, or the recorded pid now runs a process that started at another time."""
    if run.child_pid is None or run.child_start is None or wrapper_alive(run):
        return None
    iid = run.instance_id
    fd = _pin(run.child_pid, run.child_start)
    if fd is None:  # the command is gone (its lease tells), or its pid is now another process's
        env.active_runs()
        current = env.get_run(iid)
        return None if current is not None and current.active else current
    status = Status.INTERRUPTED if interrupt else Status.STOPPED
    try:
        now = time.time()
        with env.transaction() as tx:  # recorded first: whoever notices the end ends it so
            current = tx.get(iid)
            if current is None or not current.active:
                return current
            current.actions.append({"action": "interrupted" if interrupt else "stopped", "by": by, "at": now,
                                    "reason": "its wrapper was gone: signalled the command's process group"})
            current.extra[store.ORPHAN_STOP] = status.value
            tx.update(current)
        _killpg(fd, run.child_pid, SIGTERM)
        if not _gone(fd, grace):
            _killpg(fd, run.child_pid, SIGKILL)
            _gone(fd, KILL_WAIT_S)
    finally:
        os.close(fd)
    # the lease goes with the last process holding it (the group's members, normally)
    env.wait_lease(run, KILL_WAIT_S)
    env.active_runs()  # ends it as asked (store.mark_lost) and publishes the end
    return env.get_run(iid)
