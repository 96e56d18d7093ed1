"""The unified event log (seed 001): every lifecycle event of an environment's runs appended to
one JSON-lines file, the same objects as `taro listen --json`.

On with `[eventlog] enabled = true` in runtools.toml. Written by the wrapper of each run (the
process that records the run's transitions), so it holds created / state changes / warnings /
ended of every run started on this host. The `ended` of a run ended LOST by another process is
written by the deliverer that process starts (runtools.plugins.deliver).

File: `[eventlog] path`, else `events.jsonl` in the environment's directory (local), else
`$RUNTOOLS_HOME/events-NAME.jsonl`. Owner-only (0600). One `write` per line with O_APPEND, so
concurrent wrappers never interleave lines. When the file grows past `max_size` (default 10M)
it is rotated under a lock: events.jsonl -> events.jsonl.1 -> ... -> .KEEP (default 3).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from runtools.model.events import Event

FILE_NAME = "events.jsonl"


def log_path(env: Any, cfg: Any) -> str:
    configured = cfg.section("eventlog").get("path")
    if configured:
        return os.path.expanduser(configured)
    directory = getattr(env, "dir", None)
    if directory:
        return os.path.join(directory, FILE_NAME)
    from runtools.env.local.paths import runtools_home

    name = str(getattr(env, "name", None) or "default").replace("/", "_")
    return os.path.join(runtools_home(), f"events-{name}.jsonl")


class EventLog:
    def __init__(self, path: str, max_size: int = 10 * 1024 * 1024, keep: int = 3) -> None:
        self.path = path
        self.max_size = max_size
        self.keep = keep
        self.failed = False  # reported once; then the log stays quiet for the rest of the run

    @classmethod
    def from_config(cls, env: Any, cfg: Any) -> EventLog:
        from runtools.output.capture import parse_size

        size = parse_size(str(cfg.get("eventlog", "max_size")), "eventlog.max_size")
        return cls(log_path(env, cfg), size, int(cfg.get("eventlog", "keep")))

    def append(self, ev: Event) -> str | None:
        """Append one event; a problem is returned (once) instead of raised."""
        if self.failed:
            return None
        from runtools.model.jsonenc import dumps

        line = (dumps(ev.to_json()) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            try:
                os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                self.failed = True
                return f"event log {self.path}: {e.strerror}"
        except OSError as e:
            self.failed = True
            return f"event log {self.path}: {e.strerror}"
        try:
            os.write(fd, line)
            size = os.fstat(fd).st_size
        except OSError as e:
            self.failed = True
            return f"event log {self.path}: {e.strerror}"
        finally:
            os.close(fd)
        if size > self.max_size:
            self.rotate()
        return None

    def rotate(self) -> None:
        import fcntl

        lock = self.path + ".lock"
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_size <= self.max_size:  # another writer rotated it already
                    return
            except FileNotFoundError:
                return
            for i in range(self.keep - 1, 0, -1):
                try:
                    os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
                except FileNotFoundError:
                    pass
            os.replace(self.path, f"{self.path}.1")
        except OSError:
            pass
        finally:
            os.close(fd)


def files(path: str, keep: int = 50) -> list[str]:
    """The log's files, oldest first: path.N ... path.1, path."""
    out = [f"{path}.{i}" for i in range(keep, 0, -1) if os.path.exists(f"{path}.{i}")]
    return [*out, path] if os.path.exists(path) else out


def read(path: str) -> Iterator[dict[str, Any]]:
    """Every event in the log, oldest first (lines that are not JSON are skipped)."""
    import json

    for f in files(path):
        try:
            fh = open(f, encoding="utf-8", errors="replace")
        except OSError:
            continue
        with fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue
