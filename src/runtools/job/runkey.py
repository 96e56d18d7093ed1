"""Run keys: at most one active run per key; with `strict`, at most one run per key ever.

The claim is an admission phase, decided inside the transaction that inserts the run, so two
callers racing on one key cannot both start: the second gets the first's run back
(`Admit(existing=...)`) and attaches to it instead of starting another (DESIGN §2, §3).

A strict key that already has a finished run is only run again after an unlock (a one-time
override stored as setting kind "unlock", consumed by the next strict start, optionally
expiring). Runs of a key carry `attempt_no` (1, 2, ...) and `rerun_of` (the previous run).
"""

from __future__ import annotations

import time

from runtools.env.base import RunQuery
from runtools.errors import NotFoundError, StateError
from runtools.job.phase import AdmissionPhase, Admit

TYPE_CHECKING = False  # keep `typing` off the hot path
if TYPE_CHECKING:
    from typing import Any, Protocol

    from runtools.env.base import Tx
    from runtools.model.run import RunRecord

    class SettingsReader(Protocol):
        """A Tx, or any reader of its settings (orchesjob's fast reader)."""

        def get_setting(self, kind: str, key: str) -> dict[str, Any] | None: ...

UNLOCK = "unlock"  # setting kind of strict overrides


class KeyNotFound(NotFoundError):
    """No run has this run key."""


class KeyActive(StateError):
    """The run key has an active run."""

    def __init__(self, message: str, run: RunRecord) -> None:
        super().__init__(message)
        self.run = run


def active_of_key(tx: Tx, key: str) -> RunRecord | None:
    """The active run of `key` (leases checked: a dead run is ended LOST here), if any."""
    for r in tx.active_runs():
        if r.run_key == key:
            return r
    return None


def latest_of_key(tx: Tx, key: str) -> RunRecord | None:
    runs = tx.find(RunQuery(run_key=key, limit=1))
    return runs[0] if runs else None


def valid_override(tx: SettingsReader, key: str, now: float | None = None) -> dict[str, Any] | None:
    """The pending (unused, unexpired) strict override of `key`, if any."""
    o = tx.get_setting(UNLOCK, key)
    if o is None:
        return None
    exp = o.get("expires_at")
    if exp is not None and exp <= (time.time() if now is None else now):
        return None
    return o


class RunKeyClaim(AdmissionPhase):
    """Admit a run only if no run of its key is active (and, when strict, none ever ran)."""

    name = "run-key"

    def __init__(self, key: str, strict: bool = False) -> None:
        self.key = key
        self.strict = strict

    def admit(self, tx: Tx, run: RunRecord) -> Admit | None:
        active = active_of_key(tx, self.key)
        if active is not None:
            return Admit(existing=active)
        latest = latest_of_key(tx, self.key)
        if latest is not None and self.strict:
            override = valid_override(tx, self.key)
            if override is None:
                return Admit(existing=latest)
            tx.put_setting(UNLOCK, self.key, None)  # consumed
            run.extra["strict_override_used"] = True
            run.extra.setdefault("rerun_reason", override.get("reason"))
            run.actions.append(
                {"action": "unlock-used", "by": override.get("by"), "at": time.time(), "reason": override.get("reason")}
            )
        run.run_key = self.key
        run.attempt_no = (latest.attempt_no or 0) + 1 if latest is not None else 1
        if latest is not None and run.rerun_of is None:
            run.rerun_of = latest.instance_id
        return None


def unlock(
    tx: Tx, key: str, ttl: float | None = None, reason: str | None = None, by: str | None = None
) -> dict[str, Any]:
    """Grant a one-time strict override for `key`; its latest run must have ended.

    Raises KeyNotFound when no run has the key, KeyActive when its latest run is active.
    Returns the stored override: allowed_at, expires_at (None = no expiry), reason, by.
    """
    latest = latest_of_key(tx, key)
    if latest is None:
        raise KeyNotFound(f"no run has run key {key!r}: nothing to unlock")
    if latest.active:
        current = active_of_key(tx, key)  # reaps it if its process is gone
        if current is not None:
            raise KeyActive(f"run key {key!r} has an active run ({current.instance_id}): wait for it to end", current)
    now = time.time()
    override = {"allowed_at": now, "expires_at": None if ttl is None else now + ttl, "reason": reason, "by": by}
    tx.put_setting(UNLOCK, key, override)
    return override
