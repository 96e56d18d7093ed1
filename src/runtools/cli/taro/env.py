"""taro env add | list | remove: named environments, and names that stand for a PostgreSQL URL.

`taro env add NAME URL` writes $RUNTOOLS_HOME/NAME/postgres.url (owner-only): from then on
`-e NAME` (or RUNTOOLS_ENV=NAME) is that PostgreSQL environment, and the URL's password is
typed once and never shown again. NAME may be a directory (it contains `/`), such as an
orchesjob home: `taro env add "$ORCHESJOB_HOME" URL` makes that home's runs live in PostgreSQL.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "environments: add NAME URL (a name for a PostgreSQL URL), list, show NAME, remove NAME"


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))
    add = sub.add_parser("add", help="make NAME stand for the PostgreSQL environment at URL")
    add.add_argument("name", help="the environment's name (as -e NAME), or a directory (an orchesjob home)")
    add.add_argument("url", help="postgresql://USER@HOST:PORT/DB[?schema=NAME]")
    add.add_argument("-f", "--force", action="store_true", help="replace the URL NAME stood for")
    ls = sub.add_parser("list", help="environments under $RUNTOOLS_HOME (URLs without passwords)")
    ls.add_argument("--json", action="store_true", help="print JSON: [{name, kind, location}]")
    show = sub.add_parser("show", help="one environment: kind, location (password masked), where it is defined")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON: {name, kind, location, source, exists, ...}")
    rm = sub.add_parser("remove", help="forget the URL NAME stands for (the database is left alone)")
    rm.add_argument("name")


def run(args: argparse.Namespace) -> int:
    from runtools.env import POSTGRES_LINK
    from runtools.env.local.paths import env_dir
    from runtools.errors import NotFoundError, UsageError

    if args.action == "list":
        return _list(args.json)
    if args.action == "show":
        return _show(args.name, args.json)
    name = args.name  # a name under $RUNTOOLS_HOME, or a directory (contains `/`: an orchesjob home)
    d = env_dir(name)  # checks a name
    link = os.path.join(d, POSTGRES_LINK)
    if args.action == "remove":
        try:
            os.unlink(link)
        except FileNotFoundError:
            raise NotFoundError(f"environment {name} does not stand for a PostgreSQL URL ({link})") from None
        try:
            os.rmdir(d)
        except OSError:
            pass
        sys.stdout.write(f"removed {name}\n")
        return 0
    from runtools.env.postgres.store import is_url, redact, split_url

    url = args.url.strip()
    if not is_url(url):
        raise UsageError(f"{redact(url)} is not a PostgreSQL URL: use postgresql://USER@HOST:PORT/DB")
    split_url(url)  # a bad schema= is a usage error now, not at the first run
    if _local_db(d):
        raise UsageError(f"{name} is a local environment with a history ({_local_db(d)}): choose another name")
    if os.path.exists(link) and not args.force:
        raise UsageError(f"{name} already stands for a PostgreSQL URL: add -f to replace it")
    from runtools.env.local.paths import ensure_private_dir

    ensure_private_dir(d)
    tmp = f"{link}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (url + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, link)
    sys.stdout.write(f"{name} -> {redact(url)}\n")
    return 0


def known_environments() -> list[dict[str, str]]:
    """Every environment this host knows: [environments.NAME] of runtools.toml first, then the
    names under $RUNTOOLS_HOME (local directories and names for PostgreSQL URLs); passwords masked."""
    from runtools.config import load
    from runtools.env import POSTGRES_LINK
    from runtools.env.local.paths import runtools_home
    from runtools.env.postgres.store import redact

    cfg = load()
    rows = []
    for name, spec in cfg.environments().items():
        url = spec.get("url")
        rows.append({"name": name, "kind": "postgres" if url else "local",
                     "location": redact(url) if url else os.path.expanduser(spec["path"]),
                     "source": cfg.source("environments", name)})
    seen = {r["name"] for r in rows}
    for r in _scan(runtools_home(), POSTGRES_LINK):
        if r["name"] not in seen:
            rows.append({**r, "source": "$RUNTOOLS_HOME" if r["kind"] == "local" else "taro env add"})
    return rows


def _show(name: str, as_json: bool) -> int:
    from runtools.errors import NotFoundError

    match = [r for r in known_environments() if r["name"] == name]
    if not match:
        raise NotFoundError(f"no environment {name}: see `taro env list`")
    doc: dict[str, object] = dict(match[0])
    if doc["kind"] == "local":
        db = _local_db(str(doc["location"]))
        doc["exists"] = db is not None
        doc["database_bytes"] = os.path.getsize(db) if db is not None else 0
    from runtools.env import default_env_name

    doc["default"] = default_env_name() == name
    if as_json:
        from runtools.model.jsonenc import dumps

        sys.stdout.write(dumps(doc) + "\n")
        return 0
    for k, v in doc.items():
        sys.stdout.write(f"{k:<15} {v}\n")
    return 0


def _list(as_json: bool) -> int:
    rows = known_environments()
    if as_json:
        from runtools.model.jsonenc import dumps

        sys.stdout.write(dumps(rows) + "\n")
        return 0
    for r in rows:
        sys.stdout.write(f"{r['name']:<20} {r['kind']:<9} {r['location']}  ({r['source']})\n")
    return 0


def _scan(home: str, link_name: str) -> list[dict[str, str]]:
    from runtools.env.postgres.store import redact

    rows = []
    try:
        names = sorted(os.listdir(home))
    except FileNotFoundError:
        names = []
    for name in names:
        d = os.path.join(home, name)
        link = os.path.join(d, link_name)
        if os.path.isfile(link):
            try:
                with open(link, encoding="utf-8") as f:
                    url = f.read().strip()
            except OSError:
                url = "?"
            rows.append({"name": name, "kind": "postgres", "location": redact(url)})
        elif _local_db(d):
            rows.append({"name": name, "kind": "local", "location": d})
    return rows


def _local_db(directory: str) -> str | None:
    """The database of the local environment in `directory` (runs.db, or orchesjob.db: an
    orchesjob home is a local environment too), or None."""
    from runtools.env.local.environment import DB_NAMES

    for db in DB_NAMES:
        path = os.path.join(directory, db)
        if os.path.isfile(path):
            return path
    return None
