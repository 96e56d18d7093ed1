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


def run(args: argparse.Namespace) -> int:
    import sys

    from runtools.errors import UsageError
    from runtools.model.criteria import RunMatcher

    RunMatcher.parse(args.patterns)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("taro dash needs a terminal: use taro ps / taro listen in scripts")
    try:
        from runtools.tui.app import DashApp
    except ImportError:
        raise UsageError("taro dash needs Textual: pip install 'runtools[tui]'") from None
    from runtools.cli.views import env_of

    with env_of(args) as env:
        DashApp(env, args.patterns, args.env or "").run()
    return 0
