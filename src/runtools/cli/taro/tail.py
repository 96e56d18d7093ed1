"""taro tail: the last lines of a run's output, then (-f) follow it live."""

from __future__ import annotations

import os
import sys

from runtools.cli.views import add_common, add_patterns, env_of

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "last lines of a run's output; -f follows it live"


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_patterns(p)
    p.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="number of lines (default 10)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output until the run ends")
    p.add_argument("--stream", choices=["stdout", "stderr", "all"], default="all",
                   help="which stream (default all: stdout to stdout, stderr to stderr)")


def _streams(args: argparse.Namespace) -> list[str]:
    return ["stdout", "stderr"] if args.stream == "all" else [args.stream]


def emit(args: argparse.Namespace, stream: str, data: bytes, run_iid: str) -> None:
    if args.json:
        from runtools.cli.common import print_ndjson

        for line in data.decode("utf-8", "replace").splitlines():
            print_ndjson({"instance_id": run_iid, "stream": stream, "line": line})
        return
    out = sys.stdout if stream == "stdout" else sys.stderr
    out.flush()
    from runtools.output.tail import write_all

    write_all(out.fileno(), data)


def run(args: argparse.Namespace) -> int:
    from runtools.cli.select import latest_run
    from runtools.errors import NotFoundError, UsageError
    from runtools.output.tail import iter_range, last_lines, tail_range

    if args.lines < 0:
        raise UsageError("--lines must be 0 or more")
    with env_of(args) as env:
        r = latest_run(env, args.patterns)
        paths = {"stdout": r.stdout_path, "stderr": r.stderr_path}
        if not r.stdout_path:
            raise NotFoundError(f"run {r.instance_id} stored no output (it ran with --bypass-output)")
        follow = None
        offsets: dict[str, int] = {}
        if args.follow and r.active:
            try:
                follow = env.follow_output(r.instance_id)
                _kind, offs = next(follow)
                offsets = dict(offs)  # type: ignore[arg-type]
            except (NotFoundError, StopIteration):
                follow = None
        for s in _streams(args):
            path = paths[s]
            if not path:
                continue
            end = offsets.get(s) if follow else None
            stored = getattr(env, "stored_output_bytes", None)  # a shared environment keeps a bounded copy
            if stored is not None and not os.path.exists(path):  # the run's files are on another host
                gaps: list[tuple[int, int]] = []
                data = stored(r, s, end, gaps=gaps)
                text = b"".join(data.splitlines(keepends=True)[-args.lines:]) if args.lines else b""
                if text:
                    emit(args, s, text if text.endswith(b"\n") else text + b"\n", r.instance_id)
                if gaps:  # the stored copy has holes in what was shown: say so, and where it all is
                    from runtools.env.postgres.environment import gap_notes

                    for note in gap_notes(r, s, gaps, len(data) - len(text)):
                        sys.stderr.write(note)
                continue
            if args.json:  # one record per line: each line is whole in memory anyway
                lines = last_lines(path, args.lines, end)
                if lines:
                    emit(args, s, b"\n".join(lines) + b"\n", r.instance_id)
                continue
            # plain: stream the range in blocks (one huge line costs no more than its bytes)
            start, stop = tail_range(path, args.lines, end)
            last = b"\n"
            for chunk in iter_range(path, start, stop):
                emit(args, s, chunk, r.instance_id)
                last = chunk[-1:]
            if last != b"\n":
                emit(args, s, b"\n", r.instance_id)
        if follow is None:
            return 0
        wanted = set(_streams(args))
        for stream, data in follow:
            if stream in wanted:
                emit(args, stream, data, r.instance_id)  # type: ignore[arg-type]
    return 0
