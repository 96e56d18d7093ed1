"""taro config show | path | list-disabled: which TOML config file is used, and what it says.

Lookup order (DESIGN §5): ./runtools.toml, $XDG_CONFIG_HOME/runtools/runtools.toml (default
~/.config), /etc/runtools/runtools.toml. The first file that exists wins.
"""

from __future__ import annotations

import os
import sys

from runtools.cli.views import add_common

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "config: show (path and content), path (where the config file is), list-disabled"
CONFIG_NAME = "runtools.toml"


def config_candidates() -> list[str]:
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return [
        os.path.join(os.getcwd(), CONFIG_NAME),
        os.path.join(xdg, "runtools", CONFIG_NAME),
        os.path.join("/etc/runtools", CONFIG_NAME),
    ]


def find_config() -> str | None:
    return next((p for p in config_candidates() if os.path.isfile(p)), None)


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))
    sub.add_parser("show", help="print the path and content of the config file in use")
    sub.add_parser("path", help="print the path of the config file in use")
    ld = sub.add_parser("list-disabled", help="list disabled job patterns (same as taro list-disabled)")
    add_common(ld)


def _missing() -> int:
    from runtools.errors import NotFoundError

    looked = ", ".join(config_candidates())
    raise NotFoundError(f"no config file found (looked in {looked}): create one of them")


def run(args: argparse.Namespace) -> int:
    if args.action == "list-disabled":
        from runtools.cli.taro.disable import disabled_list, print_disabled
        from runtools.cli.views import env_of

        with env_of(args) as env:
            print_disabled(disabled_list(env), args.json)
        return 0
    path = find_config()
    if path is None:
        return _missing()
    if args.action == "path":
        sys.stdout.write(path + "\n")
        return 0
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        from runtools.errors import StateError

        raise StateError(f"cannot read {path}: {e.strerror}") from None
    sys.stdout.write(f"# {path}\n{text}")
    if text and not text.endswith("\n"):
        sys.stdout.write("\n")
    import tomllib

    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        sys.stderr.write(f"taro: {path} is not valid TOML: {e}\n")
        return 1
    return 0
