"""The one hook point of a run (job.instance): event log, plugins, notifiers, automatic
retention. Made only when runtools.toml turns one of them on (`runtools.config.Config.wants_hooks`);
a run without them never imports this module. ("Longer than usual" is runtools.job.longer: its
warnings reach the hub as events.)

The wrapper's own work never waits for a hook: events are appended to the event log (one
`write`) and queued; a worker thread calls plugins (each call bounded by `[plugins] timeout`)
and notifiers (each bounded by its `timeout`, retries included). When the run has ended, the
wrapper waits for the queue at most as long as the slowest of those bounds, then goes.
"""

from __future__ import annotations

import _thread
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.model.events import Event

DISCOVERY_S = 10.0
_STOP = object()


def install(env: Any) -> dict[str, Hub]:
    """Route `env.publish` through the hubs of the runs in this process (once per env)."""
    hubs = getattr(env, "_rt_hubs", None)
    if hubs is None:
        hubs = {}
        original = env.publish

        def publish(ev: Event) -> None:
            original(ev)
            hub = hubs.get(ev.run.instance_id)
            if hub is not None:
                hub.event(ev)

        env.publish = publish
        original_tx = env.transaction

        def transaction() -> _TxWatch:
            return _TxWatch(original_tx(), hubs)

        # events decided inside a transaction (queued, waiting, approved, ...): a backend may send
        # them itself (PostgreSQL NOTIFY) instead of through env.publish
        env.transaction = transaction
        env._rt_hubs = hubs
    return hubs


class _TxWatch:
    """A transaction whose committed events also reach the hubs (duplicates are dropped there)."""

    __slots__ = ("cm", "hubs", "tx")

    def __init__(self, cm: Any, hubs: dict[str, Hub]) -> None:
        self.cm = cm
        self.hubs = hubs
        self.tx: Any = None

    def __enter__(self) -> Any:
        self.tx = self.cm.__enter__()
        return self.tx

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        result = self.cm.__exit__(exc_type, exc, tb)
        if exc_type is None:
            for ev in list(getattr(self.tx, "events", ()) or ()):
                hub = self.hubs.get(ev.run.instance_id)
                if hub is not None:
                    hub.event(ev)
        return result


class Hub:
    def __init__(self, env: Any, cfg: Any, job: Any) -> None:
        self.env = env
        self.cfg = cfg
        self.job = job
        self.closed = False
        self.eventlog = None
        self.plugins: list[tuple[str, Any]] = []
        self.notifiers: list[Any] = []
        self.problems: list[str] = []
        self.reported: set[str] = set()
        self.once: set[str] = set()
        self.recent: list[Event] = []
        self.queue: Any = None
        self.worker_done = _thread.allocate_lock()
        self.loaded = _thread.allocate_lock()  # released once the plugins are loaded (or none are wanted)
        self.loaded.acquire()
        self.load_until = time.monotonic() + DISCOVERY_S  # moved on once the entry points are known
        if cfg.get("eventlog", "enabled"):
            from runtools.eventlog import EventLog

            self.eventlog = EventLog.from_config(env, cfg)
        self.plugin_timeout = cfg.duration("plugins", "timeout") or 2.0
        self.want_plugins = bool(cfg.get("plugins", "enabled"))  # loaded by the worker: an import may hang
        if cfg.section("notifiers"):
            from runtools.plugins.notifiers import from_config

            self.notifiers = from_config(cfg)
        if self.want_plugins or self.notifiers:
            from queue import SimpleQueue

            self.queue = SimpleQueue()
            self.worker_done.acquire()
            _thread.start_new_thread(self._work, ())

    def attach(self, instance_id: str) -> None:
        install(self.env)[instance_id] = self

    # -- on the run's threads: never blocks ----------------------------------------------------
    def event(self, ev: Event) -> None:
        if any(e is ev for e in self.recent):  # the same event by publish and by its transaction
            return
        self.recent = [*self.recent[-31:], ev]
        if ev.event in ("created", "ended"):  # given by the runner too (postgres sends tx events itself)
            if ev.event in self.once:
                return
            self.once.add(ev.event)
        if self.eventlog is not None:
            problem = self.eventlog.append(ev)
            if problem:
                self._problem(problem, record=False)
        if self.queue is not None and not self.closed:
            self.queue.put(ev)

    def close(self, retention: bool = True) -> None:
        """The run has ended: wait for queued hooks (bounded), then automatic retention."""
        self.closed = True
        if self.queue is not None:
            self.queue.put(_STOP)
            while not self.loaded.acquire(timeout=0.05):  # plugins still loading: bounded, see _load_plugins
                if time.monotonic() >= self.load_until:
                    break
            bound = max([self.plugin_timeout, *(n.timeout for n in self.notifiers)]) + self.plugin_timeout + 0.5
            if not self.worker_done.acquire(timeout=bound):
                self._problem(f"hooks still busy after {bound:g}s: the run's end did not wait for them")
        hubs = getattr(self.env, "_rt_hubs", None)
        if hubs is not None:
            hubs.pop(self.job.record.instance_id, None)
        if not retention or not self.cfg.section("retention"):
            return
        try:
            from runtools.retention import maybe_auto

            maybe_auto(self.env, self.cfg)
        except Exception as e:  # retention never breaks a run
            self._problem(f"automatic retention: {type(e).__name__}: {e}", record=False)

    # -- the worker thread ---------------------------------------------------------------------
    def _work(self) -> None:
        try:
            if self.want_plugins:
                try:
                    self._load_plugins()
                finally:
                    self.loaded.release()
            else:
                self.loaded.release()
            while True:
                ev = self.queue.get()
                if ev is _STOP:
                    return
                try:
                    self._dispatch(ev)
                except Exception as e:  # pragma: no cover - each step guards itself
                    self._problem(f"hooks: {type(e).__name__}: {e}")
        finally:
            self.worker_done.release()

    def _dispatch(self, ev: Event) -> None:
        if self.plugins:
            self._plugins(ev)
        if ev.event in ("created", "ended") and self.problems:  # plugins that do not load: once the run exists
            for p in self.problems:
                self._problem(p)
        for n in self.notifiers:
            if n.wants(ev):
                why = n.deliver(ev)
                if why:
                    self._warn(f"notify {n.name} ({n.type}) failed: {why}")

    def _plugins(self, ev: Event) -> None:
        run = ev.run.to_json()
        calls: list[tuple[str, tuple[Any, ...]]]
        if ev.event == "created":
            calls = [("on_created", (run,))]
        elif ev.event == "ended":
            calls = [("on_ended", (run,))]
        elif ev.event == "warning":
            calls = [("on_warning", (run, str((ev.detail or {}).get("warning", ""))))]
        elif ev.event in ("progress",):
            return
        else:
            calls = [("on_state_changed", (run, ev.event))]
        for name, plugin in list(self.plugins):
            for hook, args in calls:
                fn = getattr(plugin, hook, None)
                if callable(fn):
                    self._call(name, hook, fn, args)

    def _bounded(self, fn: Any, *args: Any, timeout: float | None = None) -> tuple[str | None, Any]:
        """(None, result) or (why not, None): `fn(*args)` in its own thread, at most `timeout`
        (default: the plugin timeout)."""
        timeout = self.plugin_timeout if timeout is None else timeout
        done = _thread.allocate_lock()
        done.acquire()
        box: list[Any] = []
        failure: list[str] = []

        def target() -> None:
            try:
                box.append(fn(*args))
            except BaseException as e:
                failure.append(f"raised {type(e).__name__}: {e}")
            finally:
                done.release()

        _thread.start_new_thread(target, ())
        if not done.acquire(timeout=timeout):
            return f"did not return within {timeout:g}s", None
        if failure:
            return failure[0], None
        return None, box[0] if box else None

    def _load_plugins(self) -> None:
        from runtools.plugins import discover, load_one

        only = self.cfg.section("plugins").get("only")
        why, found = self._bounded(discover, timeout=DISCOVERY_S)  # a cold scan of site-packages: slow once
        if why:
            self.problems.append(f"looking for plugins {why}")
            return
        self.load_until = time.monotonic() + len(found) * self.plugin_timeout + 0.5
        for name, value, _dist in found:
            if only is not None and name not in only:
                continue
            why, plugin = self._bounded(load_one, value)
            if why:
                self.problems.append(f"plugin {name} does not load: {why.removeprefix('raised ')}")
            else:
                self.plugins.append((name, plugin))

    def _call(self, name: str, hook: str, fn: Any, args: tuple) -> None:
        why, _ = self._bounded(fn, *args)
        if why:
            self._drop(name, f"plugin {name} {hook} {why}: skipped for the rest of this run")

    def _drop(self, name: str, why: str) -> None:
        self.plugins = [(n, p) for n, p in self.plugins if n != name]
        self._problem(why)

    # -- reporting -------------------------------------------------------------------------------
    def _problem(self, text: str, record: bool = True) -> None:
        if text in self.reported:
            return
        self._say(text)
        if record:
            self._warn(text)

    def _say(self, text: str) -> None:
        if text in self.reported:
            return
        self.reported.add(text)
        try:
            sys.stderr.write(f"run: warning: {text}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def _warn(self, text: str) -> None:
        try:
            self.job.ctx.add_warning(text)
        except Exception:  # the environment may be gone already: stderr said it
            pass
