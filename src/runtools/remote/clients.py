"""The two ways to reach a host: a `taro serve` over HTTP(S), or `taro VERB` over the system ssh."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

from runtools.remote.targets import Target


class HostError(Exception):
    """A host could not answer: the message says why (printed as `taro: TARGET: message`)."""


# -- http ----------------------------------------------------------------------------------------

class Http:
    def __init__(self, target: Target, token: str | None, timeout: float) -> None:
        self.target = target
        self.token = token
        self.timeout = timeout

    def _open(self, method: str, path: str, params: list[tuple[str, Any]] | None = None, body: Any = None,
              stream: bool = False) -> Any:
        import urllib.error
        import urllib.request

        assert self.target.url is not None
        url = self.target.url + path
        if params:
            url += "?" + urlencode([(k, v) for k, v in params if v is not None])
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read()).get("error") or e.reason
            except Exception:
                msg = e.reason
            hint = " (set RUNTOOLS_TOKEN or [remote] token_file)" if e.code == 401 else ""
            raise HostError(f"HTTP {e.code}: {msg}{hint}") from None
        except urllib.error.URLError as e:
            reason = e.reason
            raise HostError(f"cannot connect: {getattr(reason, 'strerror', None) or reason}") from None
        except TimeoutError:
            raise HostError(f"no answer within {self.timeout:g}s") from None
        except OSError as e:
            raise HostError(f"cannot connect: {e.strerror or e}") from None

    def get(self, path: str, params: list[tuple[str, Any]] | None = None) -> Any:
        with self._open("GET", path, params) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: Any = None) -> Any:
        with self._open("POST", path, body=body if body is not None else {}) as resp:
            return json.loads(resp.read())

    def raw(self, path: str, params: list[tuple[str, Any]] | None = None) -> Iterator[bytes]:
        """The body in lines as they arrive (output, SSE)."""
        resp = self._open("GET", path, params, stream=True)
        try:
            resp.fp.raw._sock.settimeout(None)  # connected: a live stream may be quiet for long
        except AttributeError:
            pass
        with resp:
            while True:
                line = resp.readline()
                if not line:
                    return
                yield line

    @staticmethod
    def run_path(iid: str, tail: str = "") -> str:
        return f"/api/runs/{quote(iid, safe='@')}{tail}"


def sse_messages(lines: Iterator[bytes]) -> Iterator[tuple[str, str | None, Any]]:
    """(kind, id, data) of each message of an SSE stream: kind `message` (data: the parsed JSON)
    or `reset` (the server could not resume: data None); id is the stream position to resume
    from (`Last-Event-ID`), also given alone by the server when a stream starts."""
    data: list[str] = []
    kind = "message"
    eid: str | None = None
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data or kind != "message" or eid is not None:
                yield kind, eid, json.loads("\n".join(data)) if data and kind == "message" else None
            data, kind, eid = [], "message", None
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("id:"):
            eid = line[3:].strip()


def sse_events(lines: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """The events of an SSE stream (a `reset` carries none)."""
    for kind, _eid, data in sse_messages(lines):
        if kind == "message" and data is not None:
            yield data


# -- ssh -----------------------------------------------------------------------------------------

class Ssh:
    def __init__(self, target: Target, taro: str, options: list[str], timeout: float) -> None:
        self.target = target
        self.taro = taro
        self.options = options
        self.timeout = timeout

    def argv(self, args: list[str]) -> list[str]:
        t = self.target
        assert t.host is not None
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(self.timeout))}", *self.options]
        if t.port:
            cmd += ["-p", str(t.port)]
        if t.user:
            cmd += ["-l", t.user]
        remote = " ".join(shlex.quote(a) for a in [self.taro, *args])
        return [*cmd, "--", t.host, remote]

    def run(self, args: list[str], timeout: float | None = None) -> tuple[int, bytes, bytes]:
        try:
            p = subprocess.run(self.argv(args), stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=timeout if timeout is not None else self.timeout)
        except subprocess.TimeoutExpired:
            raise HostError(f"no answer within {self.timeout:g}s") from None
        except OSError as e:
            raise HostError(f"cannot run ssh: {e.strerror}") from None
        if p.returncode == 255:
            raise HostError(_last_line(p.stderr) or "ssh failed (exit 255)")
        return p.returncode, p.stdout, p.stderr

    def json(self, args: list[str]) -> Any:
        code, out, err = self.run(args)
        if code != 0:
            raise HostError(_last_line(err) or f"taro exited {code}")
        try:
            return json.loads(out)
        except ValueError:
            raise HostError("the remote taro printed no JSON (is RUNTOOLS_REMOTE_TARO a taro?)") from None

    def spawn(self, args: list[str]) -> subprocess.Popen:
        try:
            return subprocess.Popen(self.argv(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except OSError as e:
            raise HostError(f"cannot run ssh: {e.strerror}") from None


def _last_line(b: bytes) -> str:
    lines = [x for x in b.decode("utf-8", "replace").splitlines()
             if x.strip() and not x.startswith("Warning: Permanently")]
    return lines[-1].strip() if lines else ""
