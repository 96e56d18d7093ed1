"""taro ps: what runs now."""

from __future__ import annotations

import sys

from runtools.cli.views import add_common, add_patterns, env_of, state_text, status_text

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "what runs now: job, run id, created, exec time, state, status/progress"


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_patterns(p)


def run(args: argparse.Namespace) -> int:
    from runtools.model.criteria import RunMatcher

    matcher = RunMatcher.parse(args.patterns)
    with env_of(args) as env:
        runs = env.active_runs(matcher)
    if args.json:
        from runtools.cli.common import print_json

        print_json([r.to_json() for r in runs])
        return 0
    from runtools.cli.table import local_time, render
    from runtools.model.durations import human_duration

    rows = [
        [r.job_id, r.run_id, local_time(r.created_at), human_duration(r.duration), state_text(r),
         "  ".join(x for x in (_orphan_note(r), status_text(r)) if x)]
        for r in runs
    ]
    sys.stdout.write(render(["JOB", "RUN ID", "CREATED", "EXEC TIME", "STATE", "STATUS"], rows))
    return 0


def _orphan_note(r) -> str:
    """A run whose wrapper was killed stays active while its command still runs: say so."""
    import os

    if r.pid is None or r.host != (os.environ.get("RUNTOOLS_HOST") or os.uname().nodename) or r.child_pid is None:
        return ""
    try:
        os.kill(r.pid, 0)
    except ProcessLookupError:
        return f"wrapper gone (killed?); command pid {r.child_pid} still running"
    except OSError:
        pass
    return ""
