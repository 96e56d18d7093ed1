"""`taro -H TARGET[,TARGET...] [--host-timeout DUR] VERB ...`: one verb on many hosts in parallel.

Each host answers within --host-timeout (default 10 s); a host that fails or times out is one
line on stderr (`taro: TARGET: why`), the others still answer, and the exit code is 1 if any
host failed. Tables gain a HOST column; JSON records gain "remote" (the target).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from runtools.cli.common import print_json, print_ndjson, say
from runtools.errors import UsageError
from runtools.remote.clients import HostError, Http, Ssh, sse_events
from runtools.remote.targets import Target

SUPPORTED = ("ps", "history", "hist", "stats", "tail", "output", "listen", "wait", "stop", "release", "approve",
             "resume", "deny", "disable", "enable")
DEFAULT_TIMEOUT = 10.0


class Ctx:
    def __init__(self, targets: list[Target], timeout: float, cfg: dict[str, Any]) -> None:
        from runtools.remote.targets import remote_taro, ssh_options, token

        self.targets = targets
        self.timeout = timeout
        self.token = token(cfg)
        self.taro = remote_taro(cfg)
        self.ssh_opts = ssh_options(cfg)
        self.failed: list[str] = []
        self.out_lock = threading.Lock()

    def http(self, t: Target) -> Http:
        return Http(t, self.token, self.timeout)

    def ssh(self, t: Target) -> Ssh:
        return Ssh(t, self.taro, self.ssh_opts, self.timeout)

    def fail(self, t: Target, why: str) -> None:
        with self.out_lock:
            self.failed.append(t.text)
            say(f"taro: {t.text}: {why}")


def split_globals(argv: list[str]) -> tuple[list[str], float, list[str]]:
    """Leading `-H X`, `-HX`, `--host X`, `--host=X`, `--host-timeout DUR` before the verb."""
    hosts: list[str] = []
    timeout = DEFAULT_TIMEOUT
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-H", "--host", "--host-timeout"):
            if i + 1 >= len(argv):
                raise UsageError(f"{a} needs a value")
            v = argv[i + 1]
            i += 2
        elif a.startswith("--host="):
            a, v = "--host", a.split("=", 1)[1]
            i += 1
        elif a.startswith("--host-timeout="):
            a, v = "--host-timeout", a.split("=", 1)[1]
            i += 1
        elif a.startswith("-H") and len(a) > 2:
            a, v = "-H", a[2:]
            i += 1
        else:
            break
        if a == "--host-timeout":
            timeout = host_timeout(v)
        else:
            hosts.append(v)
    return hosts, timeout, argv[i:]


def host_timeout(v: str | float | None) -> float:
    """--host-timeout DUR in seconds (DEFAULT_TIMEOUT when not given); more than 0."""
    from runtools.model.durations import parse_duration

    if v is None:
        return DEFAULT_TIMEOUT
    timeout = float(v) if isinstance(v, int | float) else parse_duration(v, "--host-timeout")
    if timeout <= 0:
        raise UsageError("--host-timeout must be more than 0")
    return timeout


def parallel(ctx: Any, fn: Callable[[Target], Any], timeout: float | None) -> list[tuple[Target, Any]]:
    """fn(target) for every target of `ctx` (a Ctx, or the dashboard's RemoteEnv) at once, in daemon
    threads (a hung host never holds the exit); results in target order; failures and timeouts
    reported by ctx.fail(target, why), their targets left out."""
    results: dict[int, Any] = {}
    errors: dict[int, str] = {}
    threads = []

    def one(i: int, t: Target) -> None:
        try:
            results[i] = fn(t)
        except HostError as e:
            errors[i] = str(e)
        except UsageError as e:
            errors[i] = str(e)
        except Exception as e:  # one host's surprise must not hide the others
            errors[i] = f"{type(e).__name__}: {e}"

    for i, t in enumerate(ctx.targets):
        th = threading.Thread(target=one, args=(i, t), daemon=True, name=f"taro-H-{t.text}")
        th.start()
        threads.append(th)
    deadline = None if timeout is None else time.monotonic() + timeout
    out = []
    for i, (t, th) in enumerate(zip(ctx.targets, threads, strict=True)):
        while th.is_alive():
            from runtools.model.durations import wait_slice

            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            th.join(wait_slice(left))
        if th.is_alive():
            ctx.fail(t, f"no answer within {timeout:g}s")
        elif i in errors:
            ctx.fail(t, errors[i])
        else:
            out.append((t, results[i]))
    return out


# -- run records from JSON (for the tables) ------------------------------------------------------

def record(d: dict[str, Any]) -> Any:
    """A run's public JSON object (RunRecord.to_json, docs/json.md) as a RunRecord again."""
    from runtools.model.durations import iso_to_epoch
    from runtools.model.run import RunRecord

    kw = dict(d, coord=d.get("coordination") or {})
    for k in ("created_at", "started_at", "ended_at"):
        kw[k] = None if d.get(k) is None else iso_to_epoch(d[k])
    kw["created_at"] = kw["created_at"] or 0.0
    for k in ("warnings", "actions", "tags"):
        kw[k] = list(d.get(k) or [])
    return RunRecord.from_dict(kw)  # keeps only record fields: instance_id, outcome, duration_s are derived


def with_remote(items: list[dict[str, Any]], t: Target) -> list[dict[str, Any]]:
    return [{**x, "remote": t.text} for x in items]


# -- verbs ---------------------------------------------------------------------------------------

def _json_args(raw: list[str]) -> list[str]:
    return raw if "--json" in raw else [*raw, "--json"]


def _patterns(args: Any) -> list[tuple[str, str]]:
    return [("pattern", p) for p in getattr(args, "patterns", None) or []]


def _no_env(args: Any) -> None:
    if getattr(args, "env", None):
        raise HostError("-e does not apply to a taro serve target (it serves one environment)")


def read_runs(ctx: Ctx, verb: str, args: Any, raw: list[str]) -> int:
    def fetch(t: Target) -> list[dict[str, Any]]:
        if t.kind == "ssh":
            return ctx.ssh(t).json([verb, *_json_args(raw)])
        _no_env(args)
        if verb == "ps":
            return ctx.http(t).get("/api/runs", [("active", "true"), ("limit", "100000"), *_patterns(args)])
        params = [("active", None if args.active else "false"), *_patterns(args),
                  ("limit", args.limit if args.limit is not None else "100000"), ("since", args.since),
                  ("until", args.until), ("last", "true" if args.last else None)]
        params += [("status", s) for s in args.status] + [("outcome", o) for o in args.outcome]
        return ctx.http(t).get("/api/runs", params)

    got = parallel(ctx, fetch, ctx.timeout)
    if args.json:
        print_json([x for t, items in got for x in with_remote(items, t)])
        return 0
    from runtools.cli.table import local_time, render
    from runtools.cli.views import state_text, status_text
    from runtools.model.durations import human_duration

    rows = []
    for t, items in got:
        for d in items:
            r = record(d)
            if verb == "ps":
                rows.append([t.text, r.job_id, r.run_id, local_time(r.created_at), human_duration(r.duration),
                             state_text(r), status_text(r)])
            else:
                rows.append([t.text, r.job_id, r.run_id, local_time(r.created_at, today_short=False),
                             human_duration(r.duration), state_text(r), "" if r.exit_code is None else str(r.exit_code),
                             status_text(r)])
    heads = (["HOST", "JOB", "RUN ID", "CREATED", "EXEC TIME", "STATE", "STATUS"] if verb == "ps" else
             ["HOST", "JOB", "RUN ID", "CREATED", "EXEC TIME", "STATUS", "EXIT", "NOTES"])
    sys.stdout.write(render(heads, rows))
    return 0


def stats(ctx: Ctx, verb: str, args: Any, raw: list[str]) -> int:
    def fetch(t: Target) -> list[dict[str, Any]]:
        if t.kind == "ssh":
            return ctx.ssh(t).json(["stats", *_json_args(raw)])
        _no_env(args)
        return ctx.http(t).get("/api/stats", [*_patterns(args), ("since", args.since)])

    got = parallel(ctx, fetch, ctx.timeout)
    if args.json:
        print_json([x for t, items in got for x in with_remote(items, t)])
        return 0
    from runtools.cli.table import render
    from runtools.model.durations import human_duration

    def pct(v: Any) -> str:
        return "" if v is None else f"{100 * v:.0f}%"

    rows = [[t.text, r["job_id"], str(r["runs"]), pct(r["success_rate"]), r["last_status"] or "active",
             human_duration(r["p50_s"]), human_duration(r["p95_s"]), human_duration(r["max_s"])]
            for t, items in got for r in items]
    sys.stdout.write(render(["HOST", "JOB", "RUNS", "SUCCESS", "LAST", "P50", "P95", "MAX"], rows))
    return 0


def _latest(h: Http, args: Any) -> dict[str, Any]:
    active = h.get("/api/runs", [("active", "true"), ("limit", "1"), *_patterns(args)])
    if active:
        return active[0]
    runs = h.get("/api/runs", [("limit", "1"), *_patterns(args)])
    if not runs:
        raise HostError(f"no run matches {' '.join(args.patterns) or 'any job'}")
    return runs[0]


def _emit_line(ctx: Ctx, t: Target, stream: str, line: str, iid: str, as_json: bool) -> None:
    with ctx.out_lock:
        if as_json:
            print_ndjson({"instance_id": iid, "stream": stream, "line": line, "remote": t.text})
            return
        from runtools.model.text import printable

        out = sys.stdout if stream == "stdout" else sys.stderr
        out.write(f"{t.text}  {printable(line)}\n")
        out.flush()


def tail_output(ctx: Ctx, verb: str, args: Any, raw: list[str]) -> int:
    as_json = bool(getattr(args, "json", False))
    follow = bool(getattr(args, "follow", False))
    streams = ["stdout", "stderr"] if args.stream == "all" else [args.stream]

    def fetch(t: Target) -> None:
        if t.kind == "ssh":
            if verb == "output":  # raw bytes: lines prefixed, as the local verb prints them
                code, out, err = ctx.ssh(t).run([verb, *raw], timeout=None if follow else ctx.timeout)
                if code != 0:
                    raise HostError(err.decode("utf-8", "replace").strip().splitlines()[-1:][0]
                                    if err.strip() else f"taro exited {code}")
                for line in out.decode("utf-8", "replace").splitlines():
                    _emit_line(ctx, t, "stdout", line, "", False)
                for line in err.decode("utf-8", "replace").splitlines():
                    _emit_line(ctx, t, "stderr", line, "", False)
                return
            p = ctx.ssh(t).spawn([verb, *_json_args(raw)])
            assert p.stdout is not None and p.stderr is not None
            for line in p.stdout:
                d = json.loads(line)
                _emit_line(ctx, t, d["stream"], d["line"], d["instance_id"], as_json)
            err = p.stderr.read()
            if p.wait() != 0:
                raise HostError(err.decode("utf-8", "replace").strip() or f"taro exited {p.returncode}")
            return
        _no_env(args)
        h = ctx.http(t)
        run = _latest(h, args)
        iid = run["instance_id"]
        lines = getattr(args, "lines", None)

        def one(stream: str) -> None:
            params = [("stream", stream), ("tail", lines), ("follow", "true" if follow else None)]
            for b in h.raw(Http.run_path(iid, "/output"), params):
                _emit_line(ctx, t, stream, b.decode("utf-8", "replace").rstrip("\n"), iid, as_json)

        if len(streams) == 1 or not follow:
            for s in streams:
                one(s)
        else:
            th = [threading.Thread(target=one, args=(s,), daemon=True) for s in streams]
            for x in th:
                x.start()
            for x in th:
                x.join()

    parallel(ctx, fetch, None if follow else ctx.timeout)
    return 0


def listen(ctx: Ctx, verb: str, args: Any, raw: list[str]) -> int:
    from runtools.model.durations import parse_duration

    timeout = parse_duration(args.timeout, "--timeout") if args.timeout else None

    def show(t: Target, ev: dict[str, Any]) -> None:
        with ctx.out_lock:
            if args.json:
                print_ndjson({**ev, "remote": t.text})
                return
            from runtools.model.text import printable

            r = ev.get("run") or {}
            ended = r.get("stage") == "ENDED"
            what = r.get("status") if ended else (r.get("detail") or r.get("state") or r.get("stage"))
            sys.stdout.write(printable(f"{(ev.get('timestamp') or '')[11:23]}  {t.text}  {ev.get('instance_id')}  "
                                       f"{ev.get('event'):<9}  {what}") + "\n")
            sys.stdout.flush()

    def fetch(t: Target) -> None:
        if t.kind == "ssh":
            p = ctx.ssh(t).spawn(["listen", *_json_args(raw)])
            assert p.stdout is not None and p.stderr is not None
            for line in p.stdout:
                show(t, json.loads(line))
            if p.wait() != 0:
                raise HostError(p.stderr.read().decode("utf-8", "replace").strip() or f"taro exited {p.returncode}")
            return
        _no_env(args)
        params = [*_patterns(args), ("timeout", f"{timeout}s" if timeout is not None else None)]
        for ev in sse_events(ctx.http(t).raw("/api/events", params)):
            show(t, ev)

    parallel(ctx, fetch, None)
    return 0


class WaitEnd(HostError):
    """A host's wait ended without reaching the state: exit `code` as `taro wait` there (3 no
    such run, 4 it can no longer be reached, 124 timed out)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def wait(ctx: Ctx, verb: str, args: Any, raw: list[str]) -> int:
    """Each host waits on its own: over ssh its `taro wait`; over http the same rules (wait.py)
    applied to the server's events, subscribed before the runs are read. The exit code is the
    local one when every host that did not reach the state ended its wait the same way (3, 4 or
    124, each host said on stderr); 1 when a host failed otherwise, or hosts disagree."""
    from runtools.cli.taro.wait import EXIT_NOT_FOUND, EXIT_TIMEOUT, EXIT_UNREACHABLE

    ended: dict[str, int] = {}  # target -> the wait's own exit code

    def show(t: Target, d: dict[str, Any]) -> None:
        with ctx.out_lock:
            if args.json:
                print_ndjson({**d, "remote": t.text})
            else:
                sys.stdout.write(f"{t.text}  {d.get('instance_id')}  {d.get('event')}  "
                                 f"{d.get('status') or d.get('state') or d.get('stage')}\n")
            sys.stdout.flush()

    def fetch(t: Target) -> None:
        try:
            if t.kind == "http":
                _no_env(args)
                return wait_http(ctx.http(t), args, lambda d: show(t, d))
            p = ctx.ssh(t).spawn(["wait", *_json_args(raw)])
            assert p.stdout is not None and p.stderr is not None
            for line in p.stdout:
                show(t, json.loads(line))
            code = p.wait()
            err = p.stderr.read().decode("utf-8", "replace").strip().splitlines()
            if code in (EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_TIMEOUT):
                raise WaitEnd(err[-1].removeprefix("taro: ") if err else f"taro wait exited {code}", code)
            if code != 0:
                raise HostError(err[-1] if err else f"taro wait exited {code}")
        except WaitEnd as e:
            ended[t.text] = e.code
            raise

    parallel(ctx, fetch, None)
    codes = {ended[f] for f in ctx.failed if f in ended}
    if len(codes) == 1 and all(f in ended for f in ctx.failed):
        ctx.failed.clear()  # each said on stderr; the exit code says how, as locally
        return codes.pop()
    return 0


def wait_http(h: Http, args: Any, show: Callable[[dict[str, Any]], None]) -> None:
    from runtools.cli.taro.wait import EXIT_NOT_FOUND, EXIT_TIMEOUT, EXIT_UNREACHABLE, _exact, parse_wait, reached
    from runtools.model.criteria import RunMatcher

    state, patterns, timeout = parse_wait(args)
    matcher = RunMatcher.parse(patterns)
    params = [("pattern", p) for p in patterns] + [("timeout", None if timeout is None else f"{timeout}s")]
    stream = h.raw("/api/events", params)
    next(stream)  # the first line: subscribed, so what changes after the reads below is an event
    active = h.get("/api/runs", [("active", "true"), ("limit", "100000"), *params[:-1]])
    ended: list[dict[str, Any]] = []
    if patterns:
        for p in matcher.include or ("*",):
            m = RunMatcher((p,), matcher.exclude)
            if not any(m(record(r)) for r in active):
                pats = [("pattern", p), *[("pattern", "!" + x) for x in matcher.exclude]]
                last = h.get("/api/runs", [("active", "false"), ("limit", "1"), *pats])
                ended += last
    for d in (*active, *ended):
        if reached(record(d), state):
            show({"event": "current", "instance_id": d["instance_id"], "job_id": d["job_id"],
                  "run_id": d["run_id"], "stage": d["stage"], "state": d["state"], "status": d["status"],
                  "timestamp": d.get("ended_at"), "detail": None, "run": d})
            return
    tracked = {d["instance_id"] for d in active}

    def unreachable(d: dict[str, Any]) -> HostError:
        return WaitEnd(f"{d['instance_id']} ended {d.get('status') or 'ENDED'}: it can no longer reach "
                       f"{state.upper()}", EXIT_UNREACHABLE)

    if ended and not tracked:
        raise unreachable(ended[0])
    if not ended and not tracked and matcher.include and all(_exact(p) for p in matcher.include):
        raise WaitEnd(f"no run {' '.join(matcher.include)}", EXIT_NOT_FOUND)
    for ev in sse_events(stream):
        r = ev["run"]
        if reached(record(r), state):
            show(ev)
            return
        if r["stage"] != "ENDED":
            if tracked:
                tracked.add(r["instance_id"])
        elif r["instance_id"] in tracked:
            tracked.discard(r["instance_id"])
            if not tracked:
                raise unreachable(r)
    raise WaitEnd(f"timed out waiting for {state}", EXIT_TIMEOUT)


def control(ctx: Ctx, verb: str, args: Any, raw: list[str]) -> int:
    def out(t: Target, text: str) -> None:
        with ctx.out_lock:
            sys.stdout.write(f"{t.text}  {text}\n")
            sys.stdout.flush()

    def fetch(t: Target) -> None:
        if t.kind == "ssh":
            code, o, e = ctx.ssh(t).run([verb, *raw])
            for line in o.decode("utf-8", "replace").splitlines():
                out(t, line)
            if code != 0:
                lines = e.decode("utf-8", "replace").strip().splitlines()
                raise HostError(lines[-1] if lines else f"taro {verb} exited {code}")
            return
        _no_env(args)
        h = ctx.http(t)
        if verb in ("disable", "enable"):
            from urllib.parse import quote

            for p in args.patterns:
                res = h.post(f"/api/jobs/{quote(p, safe='')}/{verb}")
                out(t, f"{verb}d {p}" + ("" if res.get("changed") else " (already)"))
            return
        if verb == "release":
            res = h.post("/api/release", {"latch": args.latch, "pattern": list(args.patterns)})
            if not res["released"]:
                raise HostError(f"no run is pending on latch {args.latch}")
            for iid in res["released"]:
                out(t, f"released {iid}")
            return
        runs = h.get("/api/runs", [("active", "true"), ("limit", "100000"), *_patterns(args)])
        if verb != "stop":
            from runtools.cli.taro.gates import _gated

            runs = [r for r in runs if _gated(record(r), None)]
        if not runs:
            raise HostError(f"no {'active' if verb == 'stop' else 'pending'} run matches {' '.join(args.patterns)}")
        if verb == "stop" and len(runs) > 1 and not args.force:
            raise HostError(f"{len(runs)} runs match: use -f to stop them all")
        for r in runs:
            iid = r["instance_id"]
            if verb == "stop":
                h.post(Http.run_path(iid, "/stop"), {"interrupt": bool(args.interrupt)})
                out(t, f"{'interrupting' if args.interrupt else 'stopping'} {iid}")
            else:
                op = "deny" if verb == "deny" else "approve"
                body = {"reason": args.reason} if op == "deny" and getattr(args, "reason", None) else {}
                res = h.post(Http.run_path(iid, f"/{op}"), body)
                out(t, f"{res.get('action') or op} {iid}")

    parallel(ctx, fetch, ctx.timeout)
    return 0


HANDLERS: dict[str, Callable[[Ctx, str, Any, list[str]], int]] = {
    "ps": read_runs, "history": read_runs, "hist": read_runs, "stats": stats, "tail": tail_output,
    "output": tail_output, "listen": listen, "wait": wait, "stop": control, "release": control,
    "approve": control, "resume": control, "deny": control, "disable": control, "enable": control,
}


def main(argv: list[str], parse: Callable[[str, list[str]], Any]) -> int:
    """`parse(verb, args)` parses the verb's own options as the local verb does (usage errors
    exit 2 before any host is asked)."""
    from runtools.remote.targets import config, expand

    hosts, timeout, rest = split_globals(argv)
    if not hosts:
        raise UsageError("-H needs a target: http://host:port, ssh://host, user@host or a group name")
    if not rest:
        raise UsageError("taro -H TARGET VERB ...: name a verb (ps, history, stats, tail, ...)")
    verb, raw = rest[0], rest[1:]
    if verb == "dash":  # one dashboard over these hosts (runtools.tui.remote)
        from runtools.cli.taro.dash import run_hosts

        a = parse(verb, raw)
        return run_hosts([*hosts, *a.host], a.host_timeout or timeout, a.patterns, a.env)
    if verb not in SUPPORTED:
        raise UsageError(f"taro -H: verb {verb!r} does not work across hosts; use one of {', '.join(SUPPORTED)}")
    args = parse(verb, raw)
    cfg = config()
    ctx = Ctx(expand(hosts, cfg), timeout, cfg)
    canonical = "history" if verb == "hist" else verb
    code = HANDLERS[verb](ctx, canonical, args, raw)
    try:
        sys.stdout.flush()
    except OSError:
        pass
    return 1 if ctx.failed else code

