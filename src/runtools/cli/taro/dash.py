"""taro dash [PATTERN...]: the live terminal dashboard (Textual; `pip install 'runtools[tui]'`)."""

from __future__ import annotations

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "live terminal dashboard: active runs, history; Enter open, s stop, a/d approve/deny, / filter, q quit"


def configure(p: argparse.ArgumentParser) -> None:
    from runtools.cli.views import add_common, add_patterns

    add_common(p, json=False)
    add_patterns(p)
    p.add_argument("-H", "--host", action="append", default=[], metavar="TARGET",
                   help="watch taro serve hosts instead (http://HOST:PORT, comma-separated or repeated, "
                        "or a [remote.groups] name)")
    p.add_argument("--host-timeout", metavar="DUR", help="how long a host may take to answer (default 10s)")


def run(args: argparse.Namespace) -> int:

    from runtools.model.criteria import RunMatcher

    RunMatcher.parse(args.patterns)
    _check_terminal()
    from runtools.tui.app import DashApp

    if args.host:
        return run_hosts(args.host, args.host_timeout, args.patterns, args.env)
    from runtools.cli.views import env_of

    with env_of(args) as env:
        DashApp(env, args.patterns, args.env or "").run()
    return 0


def run_hosts(hosts: list[str], host_timeout: str | float | None, patterns: list[str], env: str | None) -> int:
    """taro dash -H ... (also reached as `taro -H TARGET dash`)."""
    from runtools.errors import UsageError
    from runtools.remote.fanout import host_timeout as parse_host_timeout

    if env:
        raise UsageError("-e does not apply with -H: each taro serve serves one environment")
    _check_terminal()
    timeout = parse_host_timeout(host_timeout or None)
    from runtools.tui.app import DashApp
    from runtools.tui.remote import RemoteEnv

    with RemoteEnv(hosts, timeout) as remote:
        DashApp(remote, patterns, remote.name).run()
    return 0


def _check_terminal() -> None:
    import sys

    from runtools.errors import UsageError

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("dash needs a terminal (stdin and stdout): use taro ps or taro listen in scripts")
    try:
        import textual  # noqa: F401
    except ImportError:
        raise UsageError("dash needs Textual: pip install 'runtools[tui]'") from None
