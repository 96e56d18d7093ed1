"""`taro dash`: one screen of active runs (live from the environment's events), recent history
below, a status line with counts. Keys: Enter opens a run, s stops (after y), a/d approve/deny
a pending run, / filters by pattern, q quits.

Live, not polled: a thread subscribed to the environment's events hands them to the UI in
batches (at most ~10 per second, however many events arrive); the store is read once at start,
after a filter, and for the history's newest rows (one indexed query, as `taro history -n`).
The elapsed column is re-drawn once a second from the runs in memory.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, RichLog, Static

from runtools.model.criteria import RunMatcher
from runtools.model.run import RunRecord

HISTORY_ROWS = 200
MAX_WATCHED = 2000  # lease-watching threads at most (one per active local run)
BATCH_S = 0.1
ACTIVE_COLS = ("run", "state", "elapsed", "progress", "host")
HISTORY_COLS = ("run", "status", "ended", "took", "note")


def _elapsed(r: RunRecord, now: float) -> str:
    from runtools.model.durations import human_duration

    return human_duration(max(0.0, now - (r.started_at or r.created_at)))


def _state(r: RunRecord) -> str:
    from runtools.cli.views import state_text

    text = state_text(r)
    if r.warnings:
        text += f"  ⚠ {r.warnings[-1]}"
    return text


def _progress(r: RunRecord) -> str:
    from runtools.output.progress import format_progress

    return format_progress(r.progress) or ""


def _note(r: RunRecord) -> str:
    from runtools.cli.views import status_text

    return status_text(r)


def _when(ts: float | None) -> str:
    from runtools.cli.table import local_time

    return local_time(ts)


def _took(r: RunRecord) -> str:
    from runtools.model.durations import human_duration

    return human_duration(r.duration) if r.duration is not None else ""


def _cut(text: str, n: int = 60) -> str:
    from runtools.model.text import printable

    text = printable(text)
    return text if len(text) <= n else text[: n - 1] + "…"


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS: ClassVar = [Binding("y", "yes", "yes"), Binding("n,escape", "no", "no")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Label { border: round $warning; padding: 1 2; background: $surface; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Label(f"{self.question}  [y/n]")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)


class RunScreen(Screen):
    """One run: its record and actions, and its output following live while it runs."""

    BINDINGS: ClassVar = [Binding("escape,q", "app.pop_screen", "back"), Binding("s", "app.stop", "stop"),
                          Binding("a", "app.approve", "approve"), Binding("d", "app.deny", "deny")]
    DEFAULT_CSS = """
    RunScreen #record { height: auto; max-height: 14; border: round $primary; padding: 0 1; }
    RunScreen #output { border: round $secondary; }
    """

    def __init__(self, dash: DashApp, run: RunRecord) -> None:
        super().__init__()
        self.dash = dash
        self.run = run
        self.stop_follow = threading.Event()

    def compose(self) -> ComposeResult:
        yield Static(self.describe(self.run), id="record")
        yield RichLog(id="output", highlight=False, markup=False, wrap=False, max_lines=5000)
        yield Footer()

    def describe(self, r: RunRecord) -> str:
        from runtools.model.text import printable

        rows = [
            f"{r.instance_id}   {_state(r) if r.active else (r.status.value if r.status else '')}",
            f"created {_when(r.created_at)}   started {_when(r.started_at) or '-'}   "
            f"ended {_when(r.ended_at) or '-'}   exit {'-' if r.exit_code is None else r.exit_code}",
            f"host {r.host}  user {r.user}  pid {r.pid}",
            f"command {printable(' '.join(r.command or []))}",
        ]
        if r.error:
            rows.append(f"error {printable(r.error)}")
        for w in r.warnings[-3:]:
            rows.append(f"warning {printable(w)}")
        for a in r.actions[-4:]:
            rows.append(f"{a.get('action')} by {a.get('by') or 'unknown'}" + (f": {a['reason']}" if a.get("reason")
                                                                            else ""))
        return "\n".join(rows)

    def on_mount(self) -> None:
        self.title = f"taro dash: {self.run.instance_id}"
        self.query_one("#output", RichLog).border_title = (
            "output (following live)" if self.run.active else "output (last 200 lines)")
        threading.Thread(target=self._follow, daemon=True, name="dash-output").start()

    def on_unmount(self) -> None:
        self.stop_follow.set()

    def update_run(self, r: RunRecord) -> None:
        self.run = r
        self.query_one("#record", Static).update(self.describe(r))

    def _write(self, text: str) -> None:
        log = self.query_one("#output", RichLog)
        for line in text.splitlines():
            log.write(line)

    def _follow(self) -> None:
        """The stored output's last lines, then (while the run is active) what it writes next."""
        r = self.run
        env = self.dash.env
        remote = getattr(env, "remote_output", None)
        if remote is not None:  # taro dash -H: the host streams it
            try:
                for line in remote(r, 200, r.active):
                    if self.stop_follow.is_set():
                        return
                    self._post(line.decode("utf-8", "replace").rstrip("\n"))
            except Exception as e:
                self._post(f"(output: {e})")
            return
        follow = None
        offsets: dict[str, int] = {}
        if r.active:
            try:
                follow = env.follow_output(r.instance_id)
                _kind, offs = next(follow)
                offsets = dict(offs)
            except Exception:
                follow = None
        from runtools.output.tail import last_lines

        for stream, path in (("stdout", r.stdout_path), ("stderr", r.stderr_path)):
            if not path:
                continue
            try:
                lines = last_lines(path, 200, offsets.get(stream) if follow else None)
            except OSError:
                continue
            if lines:
                text = b"\n".join(lines).decode("utf-8", "replace")
                self._post(text)
        if not r.stdout_path:
            self._post("(no output stored: the run used --bypass-output)")
        if follow is None:
            return
        buf = ""
        for _stream, data in follow:
            if self.stop_follow.is_set():
                return
            if isinstance(data, bytes):
                buf += data.decode("utf-8", "replace")
                if "\n" in buf:
                    text, buf = buf.rsplit("\n", 1)
                    self._post(text)
        if buf:
            self._post(buf)

    def _post(self, text: str) -> None:
        try:
            self.dash.call_from_thread(self._write, text)
        except Exception:  # the app is gone
            self.stop_follow.set()


class DashApp(App):
    TITLE = "taro dash"
    BINDINGS: ClassVar = [
        Binding("enter", "open", "open", show=True),
        Binding("s", "stop", "stop"),
        Binding("a", "approve", "approve"),
        Binding("d", "deny", "deny"),
        Binding("slash", "filter", "filter"),
        Binding("tab", "switch", "active/history", show=False),
        Binding("q", "quit", "quit"),
    ]
    CSS = """
    #status { height: 1; background: $boost; padding: 0 1; }
    #active { height: auto; max-height: 60%; }
    #history { height: 1fr; }
    .caption { height: 1; color: $text-muted; padding: 0 1; }
    #filter { display: none; }
    #filter.shown { display: block; }
    """

    def __init__(self, env: Any, patterns: list[str] | None = None, env_name: str = "") -> None:
        super().__init__()
        self.env = env
        self.env_name = env_name or str(getattr(env, "name", ""))
        self.patterns = list(patterns or [])
        self.matcher = RunMatcher.parse(self.patterns)
        self.active: dict[str, RunRecord] = {}  # every active run of the environment, matching or not
        self.history: list[RunRecord] = []
        self.events_seen = 0
        self.stopping = threading.Event()
        self.pending: list[Any] = []
        self.pending_lock = threading.Lock()
        self.sub: Any = None
        self.ready = threading.Event()  # subscribed: events from now on reach the screen
        self.watched: set[str] = set()  # runs whose lease a thread waits on (local environments)
        self.reap_lock = threading.Lock()
        self.reap_needed = self.reaping = False

    # -- layout ----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("", id="status")
        yield Input(placeholder="pattern (job, run id, tag; globs; ! negates) — Enter applies, Esc cancels",
                    id="filter")
        with Vertical():
            yield Label("active runs", classes="caption", id="active-caption")
            yield DataTable(id="active", cursor_type="row", zebra_stripes=True)
            yield Label("recent history", classes="caption", id="history-caption")
            yield DataTable(id="history", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        active = self.query_one("#active", DataTable)
        for c in ACTIVE_COLS:
            active.add_column(c.upper(), key=c)
        hist = self.query_one("#history", DataTable)
        for c in HISTORY_COLS:
            hist.add_column(c.upper(), key=c)
        self.sub = self.env.subscribe()  # before the first read: nothing falls in between
        self.ready.set()
        self._load()
        threading.Thread(target=self._listen, daemon=True, name="dash-events").start()
        self.set_interval(BATCH_S, self._drain)
        self.set_interval(1.0, self._tick)
        active.focus()

    def on_unmount(self) -> None:
        self.stopping.set()
        if self.sub is not None:
            try:
                self.sub.wake()
            except Exception:
                pass

    # -- data ------------------------------------------------------------------------------------
    def _watch(self, r: RunRecord) -> None:
        """A local run whose wrapper is killed ends LOST without telling anyone: wait on its lease
        (a blocked flock, no polling) and let `active_runs` record and publish its end."""
        if getattr(self.env, "dir", None) is None or r.instance_id in self.watched or len(self.watched) >= MAX_WATCHED:
            return
        self.watched.add(r.instance_id)

        def reap() -> None:
            try:
                self.env.wait_lease(r, None)
                if r.instance_id in self.active:  # no end event yet: have it looked at
                    self._reap_soon()
            except Exception:
                pass
            finally:
                self.watched.discard(r.instance_id)

        threading.Thread(target=reap, daemon=True, name="dash-lease").start()

    def _reap_soon(self) -> None:
        """One `active_runs` (which ends runs without a lease LOST) for any number of freed leases."""
        with self.reap_lock:
            self.reap_needed = True
            if self.reaping:
                return
            self.reaping = True

        def loop() -> None:
            while True:
                with self.reap_lock:
                    if not self.reap_needed or self.stopping.is_set():
                        self.reaping = False
                        return
                    self.reap_needed = False
                try:
                    self.env.active_runs()
                except Exception:
                    pass

        threading.Thread(target=loop, daemon=True, name="dash-reap").start()

    def _load(self) -> None:
        from runtools.env.base import RunQuery

        self.active = {r.instance_id: r for r in self.env.active_runs()}
        for r in self.active.values():
            self._watch(r)
        self.history = self.env.find_runs(RunQuery(matcher=self.matcher, active=False, limit=HISTORY_ROWS))
        self._fill_active()
        self._fill_history()
        self._status()

    def _listen(self) -> None:
        """The event thread: push every event to the UI queue (drained in batches)."""
        from runtools.model.durations import wait_slice

        sub = self.sub
        while not self.stopping.is_set():
            try:
                ev = sub.get(wait_slice(1.0))
            except Exception:
                return
            if ev is None:
                continue
            with self.pending_lock:
                self.pending.append(ev)

    def _drain(self) -> None:
        with self.pending_lock:
            batch, self.pending = self.pending, []
        if batch:
            self.apply(batch)
        problems = getattr(self.env, "problems", None)  # taro dash -H: hosts that do not answer
        while problems is not None and not problems.empty():
            self.notify(problems.get(), severity="warning", timeout=8)

    def apply(self, events: list[Any]) -> None:
        """Apply a batch of events: the last state of each run wins."""
        latest: dict[str, RunRecord] = {}
        for ev in events:
            latest[ev.run.instance_id] = ev.run
        self.events_seen += len(events)
        active = self.query_one("#active", DataTable)
        ended = []
        now = time.time()
        for iid, r in latest.items():
            was = iid in self.active
            if r.active:
                self.active[iid] = r
                if not was:
                    self._watch(r)
                if not self.matcher(r):
                    continue
                if was and iid in active.rows:
                    active.update_cell(iid, "state", _cut(_state(r)))
                    active.update_cell(iid, "progress", _cut(_progress(r), 30))
                else:
                    active.add_row(*self._active_cells(r, now), key=iid)
            else:
                self.active.pop(iid, None)
                if iid in active.rows:
                    active.remove_row(iid)
                if self.matcher(r):
                    ended.append(r)
        if ended:
            known = {r.instance_id for r in ended}
            self.history = (sorted(ended, key=lambda r: r.ended_at or 0, reverse=True)
                            + [r for r in self.history if r.instance_id not in known])[:HISTORY_ROWS]
            self._fill_history()
        screen = self.screen
        if isinstance(screen, RunScreen) and screen.run.instance_id in latest:
            screen.update_run(latest[screen.run.instance_id])
        self._status()

    def _active_cells(self, r: RunRecord, now: float) -> list[Any]:
        return [r.instance_id, _cut(_state(r)), _elapsed(r, now), _cut(_progress(r), 30), r.host or ""]

    def _history_cells(self, r: RunRecord) -> list[Any]:
        from rich.text import Text

        status = r.status.value if r.status else ""
        style = {"SUCCESS": "green", "FAULT": "bold red", "ABORTED": "yellow", "REJECTED": "magenta"}.get(
            r.outcome or "", "")
        return [r.instance_id, Text(status, style=style), _when(r.ended_at), _took(r), _cut(_note(r))]

    def _fill_active(self) -> None:
        table = self.query_one("#active", DataTable)
        table.clear()
        now = time.time()
        for r in sorted(self.active.values(), key=lambda r: r.created_at):
            if self.matcher(r):
                table.add_row(*self._active_cells(r, now), key=r.instance_id)

    def _fill_history(self) -> None:
        table = self.query_one("#history", DataTable)
        table.clear()
        for r in self.history:
            table.add_row(*self._history_cells(r), key=r.instance_id)

    def _tick(self) -> None:
        """Once a second: the elapsed column of the visible active rows (from memory)."""
        table = self.query_one("#active", DataTable)
        now = time.time()
        top = table.scroll_offset.y
        rows = table.ordered_rows[max(0, top - 5): top + table.size.height + 5]
        for row in rows:
            r = self.active.get(str(row.key.value))
            if r is not None:
                table.update_cell(row.key, "elapsed", _elapsed(r, now))
        self._status()

    def _status(self) -> None:
        shown = [r for r in self.active.values() if self.matcher(r)]
        which = f" matching {' '.join(self.patterns)}" if self.patterns else ""
        self.query_one("#active-caption", Label).update(
            f"active runs{which}: {len(shown)}" if shown else f"active runs{which}: none")
        self.query_one("#history-caption", Label).update(
            f"recent history{which}: the {len(self.history)} newest, newest first (Tab switches tables)"
            if self.history else f"recent history{which}: none")
        counts: dict[str, int] = {}
        for r in shown:
            s = r.state.value if r.state else r.stage.value
            counts[s] = counts.get(s, 0) + 1
        parts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        filt = f"   filter: {' '.join(self.patterns)}" if self.patterns else ""
        self.query_one("#status", Static).update(
            f"env {self.env_name}   {len(shown)} active" + (f" ({parts})" if parts else "")
            + f"   history: {len(self.history) or 'none'}{filt}   events: {self.events_seen}")

    # -- actions ---------------------------------------------------------------------------------
    def selected(self) -> RunRecord | None:
        screen = self.screen
        if isinstance(screen, RunScreen):
            return screen.run
        focused = self.focused
        table = focused if isinstance(focused, DataTable) else self.query_one("#active", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key in self.active:
            return self.active[key]
        return next((r for r in self.history if r.instance_id == key), None)

    def action_switch(self) -> None:
        other = "#history" if self.focused is self.query_one("#active") else "#active"
        self.query_one(other, DataTable).focus()

    def action_open(self) -> None:
        r = self.selected()
        if r is not None:
            self.push_screen(RunScreen(self, r))

    def on_data_table_row_selected(self, _event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = " ".join(self.patterns)
        box.add_class("shown")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        from runtools.errors import UsageError

        words = event.value.split()
        try:
            matcher = RunMatcher.parse(words)
        except UsageError as e:
            self.notify(str(e), severity="error", timeout=6)
            return
        self.patterns, self.matcher = words, matcher
        event.input.remove_class("shown")
        self._fill_active()
        self.query_one("#history-caption", Label).update("recent history: searching…")
        self.query_one("#active", DataTable).focus()

        def search() -> None:  # a pattern that matches little may scan a big history: off the UI thread
            from runtools.env.base import RunQuery

            try:
                found = self.env.find_runs(RunQuery(matcher=matcher, active=False, limit=HISTORY_ROWS))
            except Exception as e:
                self.call_from_thread(self.notify, f"history: {e}", severity="error")
                return
            self.call_from_thread(self._searched, matcher, found)

        threading.Thread(target=search, daemon=True, name="dash-search").start()

    def _searched(self, matcher: RunMatcher, found: list[RunRecord]) -> None:
        if matcher is not self.matcher:  # a newer filter is on its way
            return
        self.history = found
        self._fill_history()
        self._status()

    def on_key(self, event: Any) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_class("shown"):
            box.remove_class("shown")
            self.query_one("#active", DataTable).focus()
            event.stop()

    def action_stop(self) -> None:
        r = self.selected()
        if r is None or not r.active:
            self.notify("select an active run to stop", severity="warning")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self._control(r, "stop")

        self.push_screen(ConfirmScreen(f"Stop {r.instance_id}?"), answer)

    def action_approve(self) -> None:
        self._gate("approve")

    def action_deny(self) -> None:
        self._gate("deny")

    def _gate(self, op: str) -> None:
        from runtools.cli.taro.gates import _gated

        r = self.selected()
        if r is None or not r.active or not _gated(r, None):
            self.notify(f"select a PENDING run to {op}", severity="warning")
            return
        self._control(r, op)

    def _control(self, r: RunRecord, op: str) -> None:
        from runtools.cli.taro.stop import who

        request = {"op": op, "by": who().replace("taro,", "taro dash,")}

        def send() -> None:
            from runtools.cli.taro.gates import _send

            try:
                remote = getattr(self.env, "remote_control", None)  # taro dash -H: the host's API
                resp = remote(r, op, request["by"]) if remote else _send(self.env, r, request)
            except Exception as e:
                resp = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            if resp is None:
                text, sev = f"{r.instance_id} ended before it was reached", "warning"
            elif resp.get("ok"):
                text, sev = f"{op}: {r.instance_id}", "information"
            else:
                text, sev = f"{r.instance_id}: {resp.get('error')}", "error"
            self.call_from_thread(self.notify, text, severity=sev)

        threading.Thread(target=send, daemon=True, name=f"dash-{op}").start()
