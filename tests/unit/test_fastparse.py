"""cli.fastparse must parse exactly as argparse does (it hands argparse everything it cannot)."""

from __future__ import annotations

import importlib

import pytest

from runtools.cli.fastparse import FastParser
from runtools.cli.taro import VERBS

SAMPLES = [
    [],
    ["job1"],
    ["job1", "!job2", "tag*"],
    ["--json"],
    ["-e", "/tmp/x", "--json", "a@b"],
    ["--env=local", "x"],
    ["-n", "5", "--status", "FAILED", "--status", "ERROR", "--outcome", "fault"],
    ["--limit=3", "--last", "--since", "2h", "p*"],
    ["-n", "-1"],
    ["--stream", "stderr", "-n", "0", "-f", "j"],
    ["--interrupt", "-f", "a", "b"],
    ["--timeout", "1.5", "job", "completed"],
    ["--", "-weird-job"],
    ["x", "--json", "y"],
]


def _verbs() -> list[tuple[str, object]]:
    out = []
    for verb, mod_name in sorted(VERBS.items()):
        mod = importlib.import_module(f"runtools.cli.taro.{mod_name}")
        if hasattr(mod, "configure"):
            out.append((verb, mod))
    return out


def _both(verb: str, mod: object) -> tuple[FastParser, object]:
    fast = FastParser(prog=f"taro {verb}")
    (mod.configure(fast, verb) if getattr(mod, "MULTI", False) else mod.configure(fast))  # type: ignore[attr-defined]
    return fast, fast.argparse() if fast._real is None else fast._real


@pytest.mark.parametrize(("verb", "mod"), _verbs(), ids=lambda v: v if isinstance(v, str) else "")
def test_fast_parse_equals_argparse(verb: str, mod: object) -> None:
    fast, real = _both(verb, mod)
    for argv in SAMPLES:
        try:
            expected = vars(real.parse_args(argv))  # type: ignore[attr-defined]
        except SystemExit:
            with pytest.raises(SystemExit):
                fast.parse_args(argv)
            continue
        assert vars(fast.parse_args(argv)) == expected, (verb, argv)


def test_help_and_errors_are_argparse_own(capsys: pytest.CaptureFixture[str]) -> None:
    p = FastParser(prog="taro demo")
    p.add_argument("-n", "--limit", type=int, default=None)
    p.add_argument("patterns", nargs="*")
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--limit", "many"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument -n/--limit: expected a whole number" in err
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--help"])
    assert e.value.code == 0
    assert "--limit" in capsys.readouterr().out
