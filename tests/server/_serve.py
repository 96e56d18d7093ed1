"""A `taro serve` subprocess for tests: started on port 0, its URL read from its first line."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

OPERATE = "op-secret-0123456789"
READ = "rd-secret-0123456789"


def write_tokens(path: Path) -> Path:
    path.write_text(f"# test tokens\noperate:{OPERATE} alice\nread:{READ} bob\n")
    path.chmod(0o600)
    return path


class Served:
    def __init__(self, cli: Any, tmp_path: Path, *extra: str, env: dict[str, str] | None = None,
                 tokens: bool = True) -> None:
        args = ["taro", "serve", "--port", "0", *extra]
        if tokens:
            args += ["--token-file", str(write_tokens(tmp_path / "tokens"))]
        self.proc = cli.spawn(args, env=env)
        line = self._first_line()
        m = re.search(r"(http://\S+)", line)
        assert m, f"no URL in {line!r}"
        self.url = m.group(1).rstrip("/")

    def _first_line(self, timeout: float = 20.0) -> str:
        import selectors

        fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            assert left > 0, "taro serve printed no URL"
            if sel.select(left):
                chunk = __import__("os").read(fd, 4096)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace")
                    raise AssertionError(f"taro serve exited {self.proc.wait()}: {err}")
                buf += chunk
        sel.close()
        return buf.split(b"\n", 1)[0].decode()

    def client(self, token: str | None = OPERATE, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=20, **kw)

    def get(self, path: str, token: str | None = OPERATE, **kw: Any) -> httpx.Response:
        with self.client(token) as c:
            return c.get(path, **kw)

    def post(self, path: str, body: Any = None, token: str | None = OPERATE) -> httpx.Response:
        with self.client(token) as c:
            return c.post(path, json=body if body is not None else {})

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return (self.proc.stderr.read() or b"").decode(errors="replace")


def sse(resp: httpx.Response) -> Iterator[dict[str, Any]]:
    """Events of an SSE response: {"id", "event", "data"} (data parsed as JSON)."""
    cur: dict[str, Any] = {}
    for line in resp.iter_lines():
        if not line:
            if "data" in cur:
                yield cur
            cur = {}
            continue
        if line.startswith(":"):
            continue
        k, _, v = line.partition(":")
        v = v[1:] if v.startswith(" ") else v
        if k == "data":
            cur["data"] = json.loads(v)
        elif k in ("id", "event"):
            cur[k] = v
