"""The ASGI app of `taro serve` (starlette): JSON API, SSE, metrics, and the dashboard.

Every route needs a token (Authorization: Bearer) or a page session (cookie + CSRF header for
POST). Handlers read and act through the Environment contract only, so a local and a postgres
environment serve alike. Errors are `{"error": "..."}` with 400/401/403/404/409/503.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from runtools.env.base import Environment, RunQuery
from runtools.errors import BackendError, NotFoundError, RuntoolsError, StateError, UsageError
from runtools.server.auth import COOKIE, SESSION_TTL_S, Auth, Token
from runtools.server.hub import Hub

MAX_LIMIT = 100_000
CSRF_HEADER = "x-csrf-token"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    h = dict(SECURITY_HEADERS)
    h.update(headers or {})
    return JSONResponse({"error": message}, status_code=status, headers=h)


STATUS_OF = {UsageError: 400, NotFoundError: 404, StateError: 409, BackendError: 503}


def status_of(e: RuntoolsError) -> int:
    for cls, code in STATUS_OF.items():
        if isinstance(e, cls):
            return code
    return 500


# -- parameters ---------------------------------------------------------------------------------

class Params:
    """Query parameters checked one by one; anything wrong is a 400 that says what to fix."""

    def __init__(self, request: Request, allowed: tuple[str, ...]) -> None:
        self.items = list(request.query_params.multi_items())
        for k, v in self.items:
            if k not in allowed:
                raise HttpError(400, f"unknown parameter {k!r}: use {', '.join(allowed) or 'none'}")
            from runtools.cli.common import value_problem

            why = value_problem(v) if k != "pattern" or v else None
            if why or "\x00" in v:
                raise HttpError(400, f"parameter {k}: {why or 'must not contain NUL'}")

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.items if k == name]

    def one(self, name: str) -> str | None:
        vs = self.all(name)
        if len(vs) > 1:
            raise HttpError(400, f"parameter {name} given {len(vs)} times: give it once")
        return vs[0] if vs else None

    def flag(self, name: str, default: bool | None = False) -> bool | None:
        v = self.one(name)
        if v is None:
            return default
        if v.lower() in ("true", "1", "yes"):
            return True
        if v.lower() in ("false", "0", "no"):
            return False
        raise HttpError(400, f"parameter {name}: use true or false, not {v!r}")

    def count(self, name: str, default: int | None, high: int) -> int | None:
        v = self.one(name)
        if v is None:
            return default
        try:
            n = int(v)
        except ValueError:
            raise HttpError(400, f"parameter {name}: expected a whole number, not {v!r}") from None
        if not 0 <= n <= high:
            raise HttpError(400, f"parameter {name}: use 0 to {high}, not {n}")
        return n


async def json_body(request: Request, allowed: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    import json

    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "the body is not valid JSON: send an object such as {}") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    for k, v in body.items():
        if k not in allowed:
            raise HttpError(400, f"unknown field {k!r}: use {', '.join(allowed) or 'none'}")
        if (v is not None and not isinstance(v, allowed[k])) or (allowed[k] is int and isinstance(v, bool)):
            raise HttpError(400, f"field {k!r} has the wrong type")
        if isinstance(v, str):
            from runtools.cli.common import value_problem

            why = value_problem(v) or ("must not contain NUL" if "\x00" in v else None)
            if why:
                raise HttpError(400, f"field {k}: {why}")
    return body


# -- the app ------------------------------------------------------------------------------------

class Server:
    def __init__(self, env: Environment, auth: Auth, secure_cookie: bool = False) -> None:
        self.env = env
        self.auth = auth
        self.hub = Hub(env)
        self.secure_cookie = secure_cookie
        self.started = time.time()
        self.ended_by_status: dict[str, int] = {}
        self.durations: list[float] = []  # execution times of runs ended since start (for /metrics)
        self._mlock = threading.Lock()
        self.hub.listeners.append(self._count)

    def _count(self, ev: Any) -> None:
        r = ev.run
        if ev.event == "ended" and r.status is not None:
            with self._mlock:
                self.ended_by_status[r.status.value] = self.ended_by_status.get(r.status.value, 0) + 1
                if r.duration is not None:
                    self.durations.append(r.duration)
                    if len(self.durations) > 100_000:
                        del self.durations[:50_000]

    # -- plumbing ------------------------------------------------------------------------------

    def who(self, request: Request) -> tuple[Token, bool] | None:
        """The token of the request and whether it came by cookie (then POSTs need CSRF)."""
        h = request.headers.get("authorization")
        if h is not None:
            scheme, _, secret = h.partition(" ")
            if scheme.lower() != "bearer":
                return None
            t = self.auth.check(secret.strip())
            return (t, False) if t else None
        s = self.auth.session(request.cookies.get(COOKIE))
        if s is None:
            return None
        token, csrf = s
        if request.method not in ("GET", "HEAD"):
            import hmac

            given = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), csrf.encode()):
                raise HttpError(403, "missing or wrong X-CSRF-Token header: reload the page")
        return token, True

    def require(self, request: Request, operate: bool = False) -> Token:
        found = self.who(request)
        if found is None:
            raise HttpError(401, "sign in: send Authorization: Bearer TOKEN",
                            {"www-authenticate": 'Bearer realm="taro serve"'})
        token = found[0]
        if operate and not token.can_operate:
            raise HttpError(403, f"token {token.name!r} may only read: control needs an operate token")
        return token

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run a blocking environment call in a worker thread."""
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(fn, *args)

    # -- reading -------------------------------------------------------------------------------

    def query_from(self, p: Params) -> RunQuery:
        from runtools.model.criteria import RunMatcher
        from runtools.model.durations import parse_instant
        from runtools.model.status import Outcome, Status

        outcomes = []
        for o in p.all("outcome"):
            try:
                outcomes.append(Outcome(o.upper()))
            except ValueError:
                raise HttpError(400, f"unknown outcome {o!r}: use SUCCESS, ABORTED, REJECTED or FAULT") from None
        since, until = p.one("since"), p.one("until")
        return RunQuery(
            matcher=RunMatcher.parse(p.all("pattern")),
            active=p.flag("active", None),
            since=parse_instant(since, "since") if since else None,
            until=parse_instant(until, "until") if until else None,
            statuses=tuple(Status.parse(s) for s in p.all("status")),
            outcomes=tuple(outcomes),
            limit=p.count("limit", 100, MAX_LIMIT),
            last_per_job=bool(p.flag("last")),
        )

    async def runs(self, request: Request) -> Response:
        self.require(request)
        p = Params(request, ("active", "pattern", "status", "outcome", "since", "until", "limit", "last", "before"))
        q = self.query_from(p)
        before = p.one("before")
        cursor = parse_cursor(before) if before else None
        if cursor is not None and q.last_per_job:
            raise HttpError(400, "parameter before: not with last=true")

        def read() -> tuple[list[Any], str | None]:
            if q.active is not False:
                self.env.active_runs()  # settle runs whose process is gone (LOST) first
            return page(self.env, q, cursor)

        runs, nxt = await self.call(read)
        headers = {"x-next-cursor": nxt} if nxt else {}
        return JSONResponse([r.to_json() for r in runs], headers=headers)

    async def run(self, request: Request) -> Response:
        self.require(request)
        Params(request, ())
        iid = request.path_params["instance_id"]
        r = await self.call(self.env.get_run, iid)
        if r is None:
            raise HttpError(404, f"no run {iid}: see GET /api/runs")
        return JSONResponse(r.to_json())

    async def stats(self, request: Request) -> Response:
        self.require(request)
        from runtools.model.criteria import RunMatcher
        from runtools.model.durations import iso, parse_instant

        p = Params(request, ("pattern", "since"))
        since = p.one("since")
        q = RunQuery(matcher=RunMatcher.parse(p.all("pattern")),
                     since=parse_instant(since, "since") if since else None)
        rows = await self.call(self.env.stats, q)
        for r in rows:
            r["last_created_at"] = iso(r["last_created_at"])
        return JSONResponse(rows)

    async def disabled(self, request: Request) -> Response:
        self.require(request)
        Params(request, ())
        from runtools.cli.taro.disable import disabled_list

        items = await self.call(disabled_list, self.env)
        return JSONResponse([{k: v for k, v in i.items() if not k.startswith("_")} for i in items])

    async def output(self, request: Request) -> Response:
        self.require(request)
        p = Params(request, ("stream", "tail", "follow"))
        stream = p.one("stream") or "all"
        if stream not in ("stdout", "stderr", "all"):
            raise HttpError(400, f"parameter stream: use stdout, stderr or all, not {stream!r}")
        tail = p.count("tail", None, 10_000_000)
        follow = bool(p.flag("follow"))
        iid = request.path_params["instance_id"]
        r = await self.call(self.env.get_run, iid)
        if r is None:
            raise HttpError(404, f"no run {iid}: see GET /api/runs")
        if not r.stdout_path:
            raise HttpError(404, f"run {iid} stored no output (it ran with --bypass-output)")
        streams = ["stdout", "stderr"] if stream == "all" else [stream]
        gen = output_chunks(self.env, r, streams, tail, follow)
        return StreamingResponse(threaded(gen), media_type="text/plain; charset=utf-8",
                                 headers={"x-content-type-options": "nosniff", "cache-control": "no-store"})

    async def events(self, request: Request) -> Response:
        self.require(request)
        from runtools.model.criteria import RunMatcher
        from runtools.model.durations import parse_duration

        p = Params(request, ("pattern", "timeout", "last_event_id"))
        matcher = RunMatcher.parse(p.all("pattern"))
        t = p.one("timeout")
        timeout = parse_duration(t, "timeout") if t else None
        last = request.headers.get("last-event-id") or p.one("last_event_id")
        seq, reset = self.hub.resume_point(last)
        hub = self.hub

        async def gen() -> Any:
            nonlocal seq
            deadline = None if timeout is None else time.monotonic() + timeout
            # where this stream starts: a client that drops before any event can still resume here
            yield f"retry: 1000\nid: {hub.event_id(seq)}\n\n"
            if reset:
                yield f"id: {hub.event_id(seq)}\nevent: reset\ndata: {{}}\n\n"
            while True:
                for s, data, key in hub.after(seq):
                    seq = s
                    if matcher(key):  # type: ignore[arg-type]  # Key has what a pattern reads
                        yield f"id: {hub.event_id(s)}\ndata: {data}\n\n"
                left = 15.0 if deadline is None else min(15.0, deadline - time.monotonic())
                if left <= 0:
                    return
                before = seq
                await hub.wait_after(seq, left)
                if hub.seq == before:
                    yield ": keep-alive\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def metrics(self, request: Request) -> Response:
        self.require(request)
        Params(request, ())
        active = await self.call(self.env.active_runs)
        recent = await self.call(self.env.find_runs, RunQuery(active=False, since=time.time() - 3600))
        return PlainTextResponse(metrics_text(self, active, recent),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(self, request: Request) -> Response:
        self.require(request)
        Params(request, ())
        from runtools.server.openapi import spec

        return JSONResponse(spec())

    async def session(self, request: Request) -> Response:
        token = self.require(request)
        Params(request, ())
        s = self.auth.session(request.cookies.get(COOKIE))
        return JSONResponse({"name": token.name, "role": token.role, "csrf": s[1] if s else None,
                             "environment": getattr(self.env, "name", None)})

    # -- control -------------------------------------------------------------------------------

    def by(self, token: Token) -> str:
        return f"{token.name} (taro serve)"

    async def stop(self, request: Request) -> Response:
        token = self.require(request, operate=True)
        Params(request, ())
        body = await json_body(request, {"interrupt": bool, "reason": str})
        iid = request.path_params["instance_id"]
        interrupt = bool(body.get("interrupt"))
        result = await self.call(control_stop, self.env, iid, interrupt, self.by(token))
        return JSONResponse(result)

    async def gate(self, request: Request) -> Response:
        token = self.require(request, operate=True)
        Params(request, ())
        op = request.path_params["op"]
        if op not in ("approve", "deny"):
            raise HttpError(404, "no such route: POST /api/runs/ID/stop, /approve or /deny")
        body = await json_body(request, {"reason": str} if op == "deny" else {})
        iid = request.path_params["instance_id"]
        result = await self.call(control_gate, self.env, iid, op, self.by(token), body.get("reason"))
        return JSONResponse(result)

    async def release(self, request: Request) -> Response:
        token = self.require(request, operate=True)
        Params(request, ())
        body = await json_body(request, {"latch": str, "pattern": (list, str)})
        latch = body.get("latch")
        if not latch:
            raise HttpError(400, 'field latch is required: {"latch": "NAME"}')
        pats = body.get("pattern") or []
        pats = [pats] if isinstance(pats, str) else pats
        if not all(isinstance(x, str) for x in pats):
            raise HttpError(400, "field pattern: a string or a list of strings")
        result = await self.call(control_release, self.env, latch, pats, self.by(token))
        return JSONResponse(result)

    async def job_switch(self, request: Request) -> Response:
        token = self.require(request, operate=True)
        Params(request, ())
        if request.path_params["op"] not in ("disable", "enable"):
            raise HttpError(404, "no such route: POST /api/jobs/JOB/disable or /enable")
        await json_body(request, {})
        job = request.path_params["job"]
        enable = request.path_params["op"] == "enable"
        result = await self.call(control_disable, self.env, job, enable, self.by(token))
        return JSONResponse(result)

    # -- the page ------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        if self.who(request) is None:
            return signin_page(401)
        return HTMLResponse(asset("index.html"), headers={**SECURITY_HEADERS, "cache-control": "no-store"})

    async def asset(self, request: Request) -> Response:
        self.require(request)
        name = request.path_params["name"]
        types = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
        if name not in types:
            raise HttpError(404, f"no asset {name}")
        return Response(asset(name), media_type=types[name], headers={"cache-control": "no-cache"})

    async def signin(self, request: Request) -> Response:
        raw = await request.body()
        try:
            form = parse_qs(raw.decode("utf-8"), max_num_fields=4)
        except (UnicodeDecodeError, ValueError):
            form = {}
        token = self.auth.check((form.get("token") or [""])[0].strip())
        if token is None:
            return signin_page(401, "That token is not valid.")
        sid, _csrf = self.auth.open_session(token)
        resp = Response(status_code=303, headers={"location": "/", **SECURITY_HEADERS})
        resp.set_cookie(COOKIE, sid, max_age=int(SESSION_TTL_S), httponly=True, samesite="strict",
                        secure=self.secure_cookie, path="/")
        return resp

    async def signout(self, request: Request) -> Response:
        self.who(request)  # CSRF checked for a cookie session
        self.auth.close_session(request.cookies.get(COOKIE))
        resp = Response(status_code=303, headers={"location": "/"})
        resp.delete_cookie(COOKIE, path="/")
        return resp


def asset(name: str) -> bytes:
    return resources.files("runtools.server").joinpath("assets", name).read_bytes()


def signin_page(status: int, message: str = "") -> HTMLResponse:
    html = asset("signin.html").decode()
    html = html.replace("<!--MESSAGE-->", f'<p class="err">{message}</p>' if message else "")
    csp = SECURITY_HEADERS["content-security-policy"].replace("style-src 'self'", "style-src 'unsafe-inline'")
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, "content-security-policy": csp,
                                                            "cache-control": "no-store"})


# -- paging -------------------------------------------------------------------------------------

def parse_cursor(text: str) -> tuple[float, str]:
    ts, sep, iid = text.partition("~")
    try:
        t = float(ts)
    except ValueError:
        t = float("nan")
    if not sep or not iid or t != t or t in (float("inf"), float("-inf")):
        raise HttpError(400, "parameter before: use the X-Next-Cursor value of the previous page")
    return t, iid


def page(env: Environment, q: RunQuery, cursor: tuple[float, str] | None) -> tuple[list[Any], str | None]:
    """One page of runs, newest first, ordered by (created_at, instance_id); keyset paging: the
    next page starts after the cursor of the last run, whatever was added meanwhile, and costs
    the same at any depth (an index range, never an OFFSET)."""
    limit = q.limit
    if cursor is None:
        runs = env.find_runs(q)
        runs.sort(key=lambda r: (r.created_at, r.instance_id), reverse=True)
    else:
        t, iid = cursor
        tied = RunQuery(matcher=q.matcher, active=q.active, statuses=q.statuses, outcomes=q.outcomes,
                        since=t, until=_next_float(t))
        same = [r for r in env.find_runs(tied) if r.instance_id < iid and r.created_at == t
                and (q.since is None or r.created_at >= q.since)]
        until = t if q.until is None else min(t, q.until)
        older = env.find_runs(RunQuery(matcher=q.matcher, active=q.active, statuses=q.statuses,
                                       outcomes=q.outcomes, since=q.since, until=until, limit=limit))
        runs = sorted(same, key=lambda r: r.instance_id, reverse=True) + sorted(
            older, key=lambda r: (r.created_at, r.instance_id), reverse=True)
        if limit is not None:
            runs = runs[:limit]
    nxt = None
    if limit and len(runs) == limit and not q.last_per_job:
        last = runs[-1]
        nxt = f"{last.created_at!r}~{last.instance_id}"
    return runs, nxt


def _next_float(t: float) -> float:
    import math

    return math.nextafter(t, math.inf)


# -- output -------------------------------------------------------------------------------------

def output_chunks(env: Environment, r: Any, streams: list[str], tail: int | None, follow: bool) -> Any:
    from runtools.output.tail import iter_range, tail_range

    follow_it = None
    offsets: dict[str, int] = {}
    if follow and r.active:
        try:
            follow_it = env.follow_output(r.instance_id)
            _kind, offs = next(follow_it)
            offsets = dict(offs)  # type: ignore[arg-type]
        except (NotFoundError, StopIteration, OSError):
            follow_it = None
    paths = {"stdout": r.stdout_path, "stderr": r.stderr_path}
    for s in streams:
        path = paths[s]
        if not path:
            continue
        end = offsets.get(s) if follow_it else None
        stored = getattr(env, "stored_output_bytes", None)
        if stored is not None and not os.path.exists(path):  # a shared environment's copy
            data = stored(r, s, end)
            if tail is not None:
                data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail else b""
            if data:
                yield data
            continue
        if not os.path.exists(path):
            continue
        start, stop = tail_range(path, tail, end) if tail is not None else (0, end)
        yield from iter_range(path, start, stop)
    if follow_it is None:
        return
    for stream, data in follow_it:
        if stream in streams:
            yield data


async def threaded(gen: Any) -> Any:
    """Iterate a blocking generator in its own daemon thread (a follow may block for hours: it
    must not hold a worker of the shared pool); stop reading when the client has gone."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
    done = object()
    gone = threading.Event()

    def pump() -> None:
        try:
            for chunk in gen:
                if gone.is_set():
                    break
                fut = asyncio.run_coroutine_threadsafe(q.put(chunk), loop)
                while not gone.is_set():
                    try:
                        fut.result(1.0)
                        break
                    except TimeoutError:
                        continue
                    except Exception:
                        gone.set()
        except Exception as e:
            item: Any = e
        else:
            item = done
        finally:
            try:
                gen.close()
            except Exception:
                pass
        if not gone.is_set():
            try:
                asyncio.run_coroutine_threadsafe(q.put(item), loop)
            except RuntimeError:
                pass

    threading.Thread(target=pump, name="taro-serve-output", daemon=True).start()
    try:
        while True:
            item = await q.get()
            if item is done:
                return
            if isinstance(item, Exception):
                return  # the stream ends; what was sent stays sent
            yield item
    finally:
        gone.set()


# -- control ------------------------------------------------------------------------------------

def control_stop(env: Environment, iid: str, interrupt: bool, by: str) -> dict[str, Any]:
    r = env.get_run(iid)
    if r is None:
        raise NotFoundError(f"no run {iid}: see GET /api/runs")
    if not r.active:
        return {"ok": True, "instance_id": iid, "already": True, "status": r.status.value if r.status else None}
    try:
        resp = env.control(iid, {"op": "stop", "interrupt": interrupt, "by": by})
    except NotFoundError:
        current = env.get_run(iid)
        if current is None or not current.active:
            return {"ok": True, "instance_id": iid, "already": True,
                    "status": current.status.value if current and current.status else None}
        ended = env.stop_orphan(current, interrupt, by, 10.0)
        if ended is None or ended.active:
            raise StateError(f"run {iid} does not answer control requests (is its wrapper alive?)") from None
        return {"ok": True, "instance_id": iid, "status": ended.status.value if ended.status else None}
    if not resp.get("ok"):
        raise StateError(f"run {iid}: {resp.get('error')}")
    return {"ok": True, "instance_id": iid, "action": "interrupting" if interrupt else "stopping"}


def _passed(r: Any, op: str) -> dict[str, Any] | None:
    want = {"approve": ("approved", "released", "resumed"), "deny": ("denied",),
            "release": ("released", "approved")}[op]
    return next((a for a in reversed(r.actions) if a.get("action") in want), None)


def control_gate(env: Environment, iid: str, op: str, by: str, reason: str | None) -> dict[str, Any]:
    from runtools.cli.taro.gates import _gated, _send

    r = env.get_run(iid)
    if r is None:
        raise NotFoundError(f"no run {iid}: see GET /api/runs")
    done = _passed(r, op)
    if done is not None:  # idempotent: asked again, the first answer stands
        return {"ok": True, "instance_id": iid, "action": done.get("action"), "by": done.get("by"), "already": True}
    if not r.active or not _gated(r, None):
        state = r.status.value if not r.active and r.status else (r.state.value if r.state else r.stage.value)
        raise StateError(f"run {iid} is not pending at a gate (it is {state})")
    request: dict[str, Any] = {"op": op, "by": by}
    if reason:
        request["reason"] = reason
    resp = _send(env, r, request)
    if resp is None:
        raise StateError(f"run {iid} ended before it could be reached")
    if not resp.get("ok"):
        raise StateError(f"run {iid}: {resp.get('error')}")
    return {"ok": True, "instance_id": iid, "action": resp.get("action", op)}


def control_release(env: Environment, latch: str, patterns: list[str], by: str) -> dict[str, Any]:
    from runtools.cli.taro.gates import _gated, _send
    from runtools.model.criteria import RunMatcher

    matcher = RunMatcher.parse(patterns)
    released: list[str] = []
    failed: list[str] = []
    for r in env.active_runs(matcher):
        if not _gated(r, latch):
            continue
        resp = _send(env, r, {"op": "release", "latch": latch, "by": by})
        if resp is None:
            continue
        (released if resp.get("ok") else failed).append(r.instance_id)
    return {"ok": not failed, "latch": latch, "released": released, "failed": failed}


def control_disable(env: Environment, pattern: str, enable: bool, by: str) -> dict[str, Any]:
    from runtools.job.coordination import DISABLED
    from runtools.model.criteria import RunMatcher

    RunMatcher.parse(pattern)
    with env.transaction() as tx:
        current = tx.get_setting(DISABLED, pattern)
        if enable:
            if current is not None:
                tx.put_setting(DISABLED, pattern, None)
            return {"ok": True, "pattern": pattern, "disabled": False, "changed": current is not None}
        if current is None:
            tx.put_setting(DISABLED, pattern, {"by": by, "at": time.time()})
        return {"ok": True, "pattern": pattern, "disabled": True, "changed": current is None}


# -- metrics ------------------------------------------------------------------------------------

def metrics_text(srv: Server, active: list[Any], recent: list[Any]) -> str:
    from runtools.model.status import Status

    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    out = ["# HELP runtools_active_runs Active runs by state.", "# TYPE runtools_active_runs gauge"]
    by_state: dict[str, int] = {}
    for r in active:
        k = r.state.value if r.state else r.stage.value
        by_state[k] = by_state.get(k, 0) + 1
    for k in ("CREATED", "PENDING", "QUEUED", "WAITING", "EXECUTING"):
        out.append(f'runtools_active_runs{{state="{k}"}} {by_state.get(k, 0)}')
    out += ["# HELP runtools_runs_ended_last_hour Runs ended in the last hour, by status.",
            "# TYPE runtools_runs_ended_last_hour gauge"]
    counts: dict[str, int] = {}
    for r in recent:
        if r.status:
            counts[r.status.value] = counts.get(r.status.value, 0) + 1
    for s in Status:
        out.append(f'runtools_runs_ended_last_hour{{status="{s.value}"}} {counts.get(s.value, 0)}')
    out += ["# HELP runtools_runs_ended_total Runs ended since this server started, by status.",
            "# TYPE runtools_runs_ended_total counter"]
    with srv._mlock:
        ended = dict(srv.ended_by_status)
        durs = list(srv.durations)
    for s in Status:
        out.append(f'runtools_runs_ended_total{{status="{s.value}"}} {ended.get(s.value, 0)}')
    out += ["# HELP runtools_run_duration_seconds Execution time of runs ended since this server started.",
            "# TYPE runtools_run_duration_seconds histogram"]
    bounds = (1, 5, 15, 60, 300, 900, 3600, 14400, 86400)
    for b in bounds:
        out.append(f'runtools_run_duration_seconds_bucket{{le="{b}"}} {sum(1 for d in durs if d <= b)}')
    out.append(f'runtools_run_duration_seconds_bucket{{le="+Inf"}} {len(durs)}')
    out.append(f"runtools_run_duration_seconds_sum {sum(durs):.3f}")
    out.append(f"runtools_run_duration_seconds_count {len(durs)}")
    out += ["# HELP runtools_server_start_time_seconds When this server started.",
            "# TYPE runtools_server_start_time_seconds gauge", f"runtools_server_start_time_seconds {srv.started:.3f}"]
    out.append(f'runtools_info{{environment="{esc(str(getattr(srv.env, "name", "")))}"}} 1')
    return "\n".join(out) + "\n"


# -- assembly -----------------------------------------------------------------------------------

def build_app(env: Environment, auth: Auth, secure_cookie: bool = False) -> Starlette:
    srv = Server(env, auth, secure_cookie)

    def wrap(fn: Any) -> Any:
        async def handler(request: Request) -> Response:
            try:
                resp = await fn(request)
            except HttpError as e:
                return error(e.status, e.message, e.headers)
            except RuntoolsError as e:
                return error(status_of(e), str(e))
            except Exception as e:  # a bug: JSON, no traceback to the client
                if os.environ.get("RUNTOOLS_DEBUG"):
                    raise
                return error(500, f"internal error: {type(e).__name__}")
            for k, v in SECURITY_HEADERS.items():
                resp.headers.setdefault(k, v)
            return resp

        return handler

    routes = [
        Route("/", wrap(srv.index), methods=["GET"]),
        Route("/signin", wrap(srv.signin), methods=["POST"]),
        Route("/signout", wrap(srv.signout), methods=["POST"]),
        Route("/assets/{name}", wrap(srv.asset), methods=["GET"]),
        Route("/metrics", wrap(srv.metrics), methods=["GET"]),
        Route("/api/openapi.json", wrap(srv.openapi), methods=["GET"]),
        Route("/api/session", wrap(srv.session), methods=["GET"]),
        Route("/api/runs", wrap(srv.runs), methods=["GET"]),
        Route("/api/runs/{instance_id}", wrap(srv.run), methods=["GET"]),
        Route("/api/runs/{instance_id}/output", wrap(srv.output), methods=["GET"]),
        Route("/api/runs/{instance_id}/stop", wrap(srv.stop), methods=["POST"]),
        Route("/api/runs/{instance_id}/{op:str}", wrap(srv.gate), methods=["POST"]),
        Route("/api/events", wrap(srv.events), methods=["GET"]),
        Route("/api/stats", wrap(srv.stats), methods=["GET"]),
        Route("/api/release", wrap(srv.release), methods=["POST"]),
        Route("/api/jobs/disabled", wrap(srv.disabled), methods=["GET"]),
        Route("/api/jobs/{job}/{op:str}", wrap(srv.job_switch), methods=["POST"]),
    ]

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        srv.hub.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            srv.hub.stop()

    async def not_found(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 404)
        msg = "no such route: see /api/openapi.json" if code == 404 else (
            "method not allowed on this route: see /api/openapi.json" if code == 405 else "bad request")
        return error(code, msg)

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: not_found, 400: not_found})
    app.state.server = srv
    return app
