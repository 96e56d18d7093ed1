"""Built-in notifiers, configured in runtools.toml as `[notifiers.NAME]` (docs/operations.md):

    type = "webhook"       POST the event JSON (the `taro listen --json` object, run included);
                           `secret` adds `X-Runtools-Signature: sha256=HMAC(secret, body)`
    type = "ntfy"          POST one line of plain text (Title / Priority / Tags headers)
    type = "healthchecks"  ping URL/start, URL (success) or URL/fail, with ?rid=RUN-UUID
    type = "command"       run `command` with the event JSON on stdin

Rules: `jobs` (patterns, default every job) and `on` (default FAULT and longer_than_usual;
healthchecks: start and ended): outcomes (SUCCESS, FAULT, ABORTED, REJECTED), statuses (FAILED,
TIMEOUT, ...), `start` (the run begins executing), `ended` (any end), `warning` (any warning),
`longer_than_usual`. HTTP notifiers retry connection errors, 429 and 5xx with exponential
backoff (0.25 s, doubled) within `timeout` (total, default 5s), `retries` times (default 3).

A delivery that fails is returned as text: the hub records it as a warning on the run; it never
changes the run's status or exit code.
"""

from __future__ import annotations

import time

from runtools.config import RULE_EVENTS as EVENT_WORDS
from runtools.job.longer import LONGER

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.model.events import Event

DEFAULT_ON = ("FAULT", "longer_than_usual")
SIGNATURE_HEADER = "X-Runtools-Signature"


class Notifier:
    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        from runtools.model.criteria import RunMatcher
        from runtools.model.durations import parse_duration

        self.name = name
        self.spec = spec
        self.type = spec["type"]
        jobs = spec.get("jobs")
        self.matcher = RunMatcher.parse([jobs] if isinstance(jobs, str) else jobs or [])
        on = spec.get("on") or (("start", "ended") if self.type == "healthchecks" else DEFAULT_ON)
        words = [on] if isinstance(on, str) else on
        self.on = {w.lower() if w.lower() in EVENT_WORDS else w.upper() for w in words}
        self.timeout = parse_duration(spec.get("timeout", "5s"), f"notifiers.{name}.timeout")
        self.retries = int(spec.get("retries", 3))

    def wants(self, ev: Event) -> bool:
        r = ev.run
        if not self.matcher(r):
            return False
        if ev.event == "executing":
            return "start" in self.on
        if ev.event == "ended":
            status = r.status.value if r.status else ""
            return "ended" in self.on or status in self.on or (r.outcome or "") in self.on
        if ev.event == "warning":
            text = str((ev.detail or {}).get("warning", ""))
            if text.startswith("notify "):  # our own delivery failures never notify again
                return False
            return "warning" in self.on or ("longer_than_usual" in self.on and text.startswith(LONGER))
        return False

    # -- delivery ------------------------------------------------------------------------------

    def deliver(self, ev: Event) -> str | None:
        """Send `ev`; None when delivered, else why not."""
        deadline = time.monotonic() + self.timeout
        try:
            if self.type == "command":
                return self._command(ev, deadline)
            method, url, body, headers = self._request(ev)
            return self._http(method, url, body, headers, deadline)
        except Exception as e:  # a notifier never breaks the run
            return f"{type(e).__name__}: {e}"

    def _request(self, ev: Event) -> tuple[str, str, bytes, dict[str, str]]:
        from runtools.model.jsonenc import dumps

        url = self.spec["url"]
        headers = {"User-Agent": "runtools", **self.spec.get("headers", {})}
        if self.type == "webhook":
            body = dumps(ev.to_json()).encode()
            headers["Content-Type"] = "application/json"
            secret = self.spec.get("secret")
            if secret:
                import hashlib
                import hmac

                headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            return "POST", url, body, headers
        if self.type == "ntfy":
            r = ev.run
            headers["Title"] = str(self.spec.get("title") or f"{r.job_id}: {_what(ev)}")
            headers["Tags"] = "warning" if r.outcome == "FAULT" or ev.event == "warning" else "information_source"
            if self.spec.get("priority"):
                headers["Priority"] = str(self.spec["priority"])
            return "POST", url, summary(ev).encode(), headers
        # healthchecks: start / success / fail pings with the run's UUID as rid
        import uuid

        rid = uuid.uuid5(uuid.NAMESPACE_URL, "runtools:" + ev.run.instance_id)
        base = url.rstrip("/")
        if ev.event == "executing":
            path = "/start"
        elif ev.event == "ended" and ev.run.outcome != "SUCCESS":
            path = "/fail"
        else:
            path = ""
        return "POST", f"{base}{path}?rid={rid}", summary(ev).encode(), headers

    def _http(self, method: str, url: str, body: bytes, headers: dict[str, str], deadline: float) -> str | None:
        import urllib.error
        import urllib.request

        delay = 0.25
        why = "no attempt"
        for attempt in range(self.retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"gave up after {self.timeout:g}s ({attempt} attempts): {why}"
            req = urllib.request.Request(url, data=body, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=remaining) as resp:
                    resp.read(65536)
                    return None
            except urllib.error.HTTPError as e:
                why = f"HTTP {e.code} from {_where(url)}"
                if e.code != 429 and e.code < 500:
                    return why
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                reason = getattr(e, "reason", e)
                why = f"cannot reach {_where(url)}: {reason}"
            if attempt < self.retries:
                time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
                delay *= 2
        return f"{why} (after {self.retries + 1} attempts)"

    def _command(self, ev: Event, deadline: float) -> str | None:
        import subprocess

        from runtools.model.jsonenc import dumps

        cmd = self.spec["command"]
        argv = [cmd] if isinstance(cmd, str) else list(cmd)
        import os

        env = dict(os.environ, RUNTOOLS_EVENT=ev.event, RUNTOOLS_INSTANCE_ID=ev.run.instance_id)
        try:
            p = subprocess.run(argv, input=(dumps(ev.to_json()) + "\n").encode(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=env, timeout=max(0.01, deadline - time.monotonic()),
                               start_new_session=True)
        except subprocess.TimeoutExpired:
            return f"command {argv[0]} did not finish within {self.timeout:g}s (killed)"
        except OSError as e:
            return f"cannot run {argv[0]}: {e.strerror}"
        if p.returncode != 0:
            err = p.stderr.decode("utf-8", "replace").strip().splitlines()
            return f"command {argv[0]} exited {p.returncode}" + (f": {err[-1][:200]}" if err else "")
        return None


def _where(url: str) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}" + (f":{u.port}" if u.port else "")


def _what(ev: Event) -> str:
    r = ev.run
    if ev.event == "ended":
        return r.status.value if r.status else "ended"
    if ev.event == "executing":
        return "started"
    return ev.event


def summary(ev: Event) -> str:
    """One line for people: `backup@0193... FAILED (exit 1) after 3.2s on host1`."""
    from runtools.model.durations import human_duration

    r = ev.run
    if ev.event == "warning":
        return f"{r.instance_id} warning: {(ev.detail or {}).get('warning', '')} (on {r.host})"
    if ev.event == "executing":
        return f"{r.instance_id} started on {r.host}"
    text = f"{r.instance_id} {_what(ev)}"
    if r.exit_code is not None and ev.event == "ended":
        text += f" (exit {r.exit_code})"
    if r.duration is not None:
        text += f" after {human_duration(r.duration)}"
    if r.error and r.outcome != "SUCCESS":
        text += f": {r.error}"
    return text + f" on {r.host}"


def from_config(cfg: Any) -> list[Notifier]:
    return [Notifier(name, spec) for name, spec in cfg.section("notifiers").items()]
