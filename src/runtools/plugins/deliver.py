"""The end of a run that another process ended LOST, delivered to notifiers, plugins and the
event log (docs/operations.md "Runs that end LOST").

A run's notifiers, plugins and event-log writer live in its wrapper. When the wrapper is killed
with its command, whichever process notices the dead lease (`taro ps`, another `run job`,
`taro dash` / `taro serve`, ...) ends the run LOST inside its exclusive transaction — so exactly
one process ends each lost run. After that transaction commits, that process calls
`hand_over(env, runs)`: when its config turns on a notifier, plugins or the event log, it
starts `python -m runtools.plugins.deliver` detached (own session, output to /dev/null) and
goes on; it never waits for the delivery. The deliverer reads the environment and the run ids
from a pipe (a PostgreSQL URL with its password never appears in an argv), reads each run back
from the store, and hands its `ended` event to the same hook point the wrapper would have used
(runtools.plugins.hub): the event-log line, the plugins' on_ended, the notifiers whose rules
match. A delivery that fails is recorded as a warning on the run, as the wrapper would.

Which config applies: the one the reaping process found (`$RUNTOOLS_CONFIG`, its ./runtools.toml,
$XDG_CONFIG_HOME, /etc/runtools), passed to the deliverer by path. Keep notifier rules in a file
every process of the environment finds ($XDG_CONFIG_HOME or /etc/runtools): a run started from a
directory with its own ./runtools.toml is notified by that file's rules only while its wrapper
lives.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.env.base import Environment
    from runtools.model.run import RunRecord

_children: list[int] = []  # deliverers started by this process, reaped when we spawn again


def wants(cfg: Any) -> bool:
    """Does this config want the end of a lost run delivered (notifiers, plugins, event log)?"""
    return bool(cfg.path and (cfg.section("notifiers") or cfg.get("plugins", "enabled")
                              or cfg.get("eventlog", "enabled")))


def env_spec(env: Any) -> tuple[str, str | None] | None:
    """(where, name) to open `env` again: a local directory, or a PostgreSQL URL (with its
    password and `schema=`; only ever passed through a pipe). None for other backends."""
    directory = getattr(env, "dir", None)
    if directory:
        return str(directory), getattr(env, "name", None)
    libpq = getattr(env, "libpq_url", None)
    if not libpq:
        return None
    from runtools.env.postgres.store import DEFAULT_SCHEMA

    url = str(libpq)
    if env.schema != DEFAULT_SCHEMA:
        url += ("&" if "?" in url else "?") + f"schema={env.schema}"
    name = env.name if env.name != env.display else None
    return url, name


def spawn_detached(module: str, payload: bytes, environ: dict[str, str] | None = None,
                   args: tuple[str, ...] = ()) -> int | None:
    """Start `python -m module ARGS` in its own session with `payload` on its stdin and its
    output to /dev/null; the caller does not wait for it. The pid, or None if it could not start."""
    for pid in list(_children):  # deliverers of earlier reaps: no zombies in long-lived reapers
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                _children.remove(pid)
        except ChildProcessError:
            _children.remove(pid)
    argv = [sys.executable, "-m", module, *args]
    try:
        r, w = os.pipe()
    except OSError:
        return None
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            pid = os.posix_spawn(sys.executable, argv, environ if environ is not None else dict(os.environ),
                                 setsid=True,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
                                               (os.POSIX_SPAWN_DUP2, devnull, 2)])
        finally:
            os.close(devnull)
    except OSError:
        os.close(w)
        return None
    finally:
        os.close(r)
    _children.append(pid)
    try:
        view = memoryview(payload)
        while view:  # the child reads at once; a big payload may take more than one write
            view = view[os.write(w, view):]
    except OSError:
        pass
    finally:
        os.close(w)
    return pid


def hand_over(env: Environment, runs: list[RunRecord]) -> int | None:
    """Called by the process that ended `runs` LOST, after its transaction committed: start the
    deliverer when the config wants it. Never raises (a reaper must not fail for this)."""
    try:
        from runtools.config import CONFIG_ENV, load

        cfg = load()
        if not wants(cfg):
            return None
        spec = env_spec(env)
        if spec is None:
            return None
        import json

        payload = json.dumps({"env": spec[0], "name": spec[1], "runs": [r.instance_id for r in runs]}).encode()
        environ = dict(os.environ, **{CONFIG_ENV: os.path.abspath(str(cfg.path))})  # this config, wherever it runs
        return spawn_detached("runtools.plugins.deliver", payload, environ)
    except Exception:
        return None


# -- the deliverer -------------------------------------------------------------------------------


class _Ctx:
    """What the hub needs of a run's context: recording a warning (on an ended run)."""

    def __init__(self, env: Environment, instance_id: str) -> None:
        self.env = env
        self.iid = instance_id

    def add_warning(self, text: str, limit: int = 50) -> None:
        from runtools.model.events import Event

        with self.env.transaction() as tx:
            r = tx.get(self.iid)
            if r is None or len(r.warnings) >= limit:
                return
            r.warnings.append(text)
            tx.update(r)
            tx.publish_after_commit(Event("warning", r.copy(), detail={"warning": text}))


class _LostRun:
    """The `job` of a hub: the ended record, and a context that records warnings."""

    def __init__(self, env: Environment, record: RunRecord) -> None:
        self.record = record
        self.ctx = _Ctx(env, record.instance_id)


def open_spec(where: str, name: str | None) -> Environment:
    """The environment of an `env_spec` (read and written, never created)."""
    if where.startswith(("postgres://", "postgresql://")):
        from runtools.env.postgres import PostgresEnvironment

        return PostgresEnvironment(where, name=name, create=False)
    from runtools.env.local import LocalEnvironment

    return LocalEnvironment(where, name=name, create=False)


def deliver(env: Environment, cfg: Any, instance_ids: list[str]) -> int:
    """Deliver the `ended` event of each of these runs (ended ones only). Returns how many."""
    from runtools.model.events import Event
    from runtools.plugins.hub import Hub

    done = 0
    for iid in instance_ids:
        r = env.get_run(iid)
        if r is None or r.active:  # removed since, or not ended after all: nothing to say
            continue
        hub = Hub(env, cfg, _LostRun(env, r))
        hub.event(Event("ended", r.copy(), r.ended_at))
        hub.close(retention=False)
        done += 1
    return done


def main() -> int:
    import json

    from runtools.config import load

    try:
        data = json.loads(sys.stdin.buffer.read() or b"{}")
        where, name, runs = str(data["env"]), data.get("name"), [str(i) for i in data["runs"]]
    except (ValueError, KeyError, TypeError):
        sys.stderr.write("runtools.plugins.deliver: expects {\"env\", \"name\", \"runs\"} on stdin\n")
        return 2
    cfg = load()
    if not wants(cfg):
        return 0
    with open_spec(where, name) as env:
        deliver(env, cfg, runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
