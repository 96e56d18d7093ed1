"""taro service set NAME --rate N/UNIT --concurrent N | list | show NAME | delete NAME (docs/services.md)."""

from __future__ import annotations

import sys

from runtools.cli.views import add_common, env_of
from runtools.errors import NotFoundError, UsageError
from runtools.model.text import printable

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse
    from typing import Any

HELP = "shared services: rate and concurrency limits for run job --service and runcue (set|list|show|delete)"
ACTIONS = ("set", "list", "show", "delete")


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("action", choices=ACTIONS, help="set NAME | list | show NAME | delete NAME")
    p.add_argument("name", nargs="?", metavar="NAME", help="the service")
    p.add_argument("--rate", action="append", default=[], metavar="N/UNIT",
                   help="at most N starts in any UNIT (s, min, h; sliding window); repeatable (set)")
    p.add_argument("--concurrent", type=int, metavar="N", help="at most N runs at once (set)")


def run(args: argparse.Namespace) -> int:
    action, name = args.action, args.name
    if action == "list":
        if name is not None:
            raise UsageError("taro service list takes no NAME (use taro service show NAME)")
    elif name is None:
        raise UsageError(f"taro service {action} needs a NAME, e.g. taro service {action} github-api")
    else:
        from runtools.model.ids import validate_id

        validate_id(name, "service name")
    if action != "set" and (args.rate or args.concurrent is not None):
        raise UsageError(f"--rate and --concurrent only apply to taro service set, not {action}")
    if action == "set":
        return _set(args, name)
    if action == "delete":
        return _delete(args, name)
    if action == "show":
        return _show(args, name)
    return _list(args)


def _set(args: argparse.Namespace, name: str) -> int:
    import time

    from runtools.cli.taro.stop import who
    from runtools.job.service import SERVICE, limits_text, parse_definition

    try:
        d = parse_definition(args.rate, args.concurrent)
    except ValueError as e:
        raise UsageError(f"taro service set {name}: {e}") from None
    d.update(at=time.time(), by=who())
    with env_of(args, create_default=True) as env, env.transaction() as tx:
        tx.put_setting(SERVICE, name, d)
    if args.json:
        from runtools.cli.common import print_json

        print_json(_public(name, d))
    else:
        sys.stdout.write(f"service {printable(name)}: {limits_text(d)}\n")
    return 0


def _delete(args: argparse.Namespace, name: str) -> int:
    from runtools.job.service import SERVICE, SERVICE_LOG

    with env_of(args) as env, env.transaction() as tx:
        found = tx.get_setting(SERVICE, name)
        if found is not None:
            tx.put_setting(SERVICE, name, None)
            tx.put_setting(SERVICE_LOG, name, None)
    if found is None:
        raise NotFoundError(f"no service {name} in environment {env.name} (see `taro service list`; "
                            "one defined in runtools.toml is removed there)")
    if args.json:
        from runtools.cli.common import print_json

        print_json({"name": name, "deleted": True})
    else:
        sys.stdout.write(f"deleted service {printable(name)}\n")
    return 0


def _public(name: str, d: dict[str, Any]) -> dict[str, Any]:
    from runtools.model.durations import iso

    return {"name": name, "rates": [r[2] for r in d.get("rates") or []], "concurrent": d.get("concurrent"),
            "source": d.get("source") or "environment", "set_at": iso(d.get("at")), "set_by": d.get("by")}


def _list(args: argparse.Namespace) -> int:
    from runtools.job.service import SERVICE, config_definitions, in_use, limits_text, waiters

    with env_of(args) as env, env.transaction() as tx:
        defs = {**config_definitions(), **tx.settings(SERVICE)}
        active = tx.active_runs() if defs else []
    items = []
    for name in sorted(defs):
        item = _public(name, defs[name])
        item.update(in_use=in_use(active, name), waiting=len(waiters(active, name)))
        items.append(item)
    if args.json:
        from runtools.cli.common import print_json

        print_json(items)
        return 0
    from runtools.cli.table import render

    rows = [[i["name"], limits_text(defs[i["name"]]),
             f"{i['in_use']}/{i['concurrent']}" if i["concurrent"] else str(i["in_use"]), str(i["waiting"]),
             i["source"]] for i in items]
    sys.stdout.write(render(["SERVICE", "LIMITS", "IN USE", "WAITING", "FROM"], rows))
    return 0


def _show(args: argparse.Namespace, name: str) -> int:
    from runtools.job.service import snapshot

    with env_of(args) as env, env.transaction() as tx:
        s = snapshot(tx, name)
    if s is None:
        raise NotFoundError(f"no service {name} (see `taro service list`; define it with "
                            f"`taro service set {name} --rate N/UNIT --concurrent N`)")
    if args.json:
        from runtools.cli.common import print_json

        print_json(s)
        return 0
    out = [f"service {printable(name)} ({s['source']})"]
    for r in s["rate_use"]:
        out.append(f"  rate {r['rate']}: {r['used']} of {r['limit']} used in the window")
    if s["next_slot_in_s"] is not None:
        out.append(f"  next rate slot in {s['next_slot_in_s']:.1f}s")
    conc = s["concurrent"]
    out.append(f"  in use: {s['in_use']}" + (f"/{conc}" if conc else ""))
    for h in s["holders"]:
        out.append(f"    {printable(h['instance_id'])}  {h['slots']} slot(s) since {h['since']}")
    out.append(f"  waiting: {len(s['waiting'])}")
    for w in s["waiting"]:
        out.append(f"    {printable(w['instance_id'])}  {printable(w['detail'] or '')}")
    out.append("  recent admissions:")
    for e in s["recent"]:
        out.append(f"    {e['at']}  {printable(str(e['by']))}" + (f" x{e['starts']}" if e["starts"] != 1 else ""))
    sys.stdout.write("\n".join(out) + "\n")
    return 0
