"""Every option and argument of `run job`, `taro` (every verb), `orchesjob` (every verb) and
`runcue-sim`, given any value (empty, huge, negative, NaN, unicode, control characters,
undecodable bytes): it works as documented, or it is exit 2 with one line on stderr naming the
option, and nothing was written. Never a traceback, never "internal error".

Pure parsers are exercised in-process (many examples); whole commands as subprocesses
(few examples each).
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runtools.cli import orchesjob as oj
from runtools.cli import run as runcli
from runtools.cli import taro
from runtools.cli.common import MAX_COUNT
from runtools.cli.fastparse import FastParser
from runtools.cue import sim
from runtools.errors import UsageError
from runtools.model.durations import MAX_DURATION_S
from runtools.model.text import printable

BIN = Path(sys.executable).parent

EXTREMES = [
    "", " ", "-", "--", "0", "-0", "1", "-1", "0.5", "1e309", "-1e309", "1e-400", "nan", "-nan", "NaN", "inf",
    "-inf", "infinity", str(2**63 - 1), str(2**63), str(-2**63), "9" * 40, "-" + "9" * 40, "0x10", "1_000", "١٢",
    "²", "½", "10s", "1.5s", "90m", "1h30m", "36500d", "36501d", "0ms", "1e3ms", "today", "yesterday",
    "2026-01-01", "2026-01-01T12:00:00+09:00", "9999-12-31T23:59:59", "0001-01-01", "99999-01-01", "x",
    "\x1b[31m", "a\nb", "\t", "\x7f", "\u202e", "é", "日本語", "\udcff", "a\udc80b", "$(touch /tmp/pwned-by-test)",
    "../x", "*", "!", "!x", "[", "[!", "a@b", "@", "x@*", "a" * 129, "a" * 5000, "SUCCESS", "failed", "pending",
    "ended", "stdout", "stderr", "all", "600/min", "0/s", "5", "10/sec", "1/h",
]
# text as argv can hold it: no NUL; undecodable bytes arrive as lone surrogates (surrogateescape)
ARGV_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
                    | st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF), max_size=12)
VALUES = st.one_of(
    st.sampled_from(EXTREMES),
    ARGV_TEXT,
    st.integers().map(str),
    st.floats().map(repr),
)
# RT_FUZZ=N multiplies the examples (a deeper search than the suite's quick one: RT_FUZZ=20)
_FUZZ = int(os.environ.get("RT_FUZZ", "1"))
QUIET = settings(max_examples=150 * _FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
FEW = settings(max_examples=20 * _FUZZ, deadline=None, suppress_health_check=list(HealthCheck))


def one_line(text: str) -> None:
    assert (text.count("\n") <= 1 and text.endswith("\n")) or not text, text
    assert "Traceback" not in text and "internal error" not in text, text


def safe_path(value: str) -> str:
    """`-e` takes a directory path: keep generated paths inside the test's directory."""
    if "/" in value or value in (".", ".."):
        return "envs/" + value.replace("/", "_").replace(".", "_")
    return value


# -- run job: the whole validation is a pure function of argv --------------------------------

RUN_VALUE_OPTIONS = [o for o in runcli.OPTIONS if o[2] != "flag"]
# what an option needs beside it to apply at all
PARTNERS = {
    "excl_group": ["-x"], "queue_group": ["--serial"], "pending_timeout": ["--pending", "L"],
    "after_timeout": ["--after", "other"], "run_key": ["--strict"],
}


@QUIET
@given(opt=st.sampled_from(RUN_VALUE_OPTIONS), value=VALUES, inline=st.booleans())
def test_run_job_option_values(opt: tuple, value: str, inline: bool) -> None:
    flags, dest, _kind, *_ = opt
    flag = flags[-1]
    argv = [*PARTNERS.get(dest, []), *([f"{flag}={value}"] if inline and flag.startswith("--") else [flag, value]),
            "--", "true"]
    try:
        a = runcli.parse_args(argv)
        spec = runcli.checked_spec(a)
    except UsageError as e:
        msg = str(e)
        assert "\n" not in msg
        assert any(f in msg for f in flags), msg
        return
    # accepted: the value is usable as documented
    assert value != ""
    value.encode("utf-8")
    for d in ("timeout", "kill_after", "time_warn", "pending_timeout", "after_timeout"):
        v = getattr(spec, d)
        assert v is None or 0 <= v <= MAX_DURATION_S
    if dest == "max_concurrent":
        assert 1 <= spec.max_concurrent <= MAX_COUNT
    assert spec.command == ["true"]


@QUIET
@given(words=st.lists(VALUES, min_size=1, max_size=3))
def test_run_job_command_words(words: list[str]) -> None:
    """The command's words are the command's business; only an empty program name is refused
    (a second `--` is dropped, as argparse's REMAINDER would keep it)."""
    expected = words[1:] if words[0] == "--" else words
    try:
        spec = runcli.checked_spec(runcli.parse_args(["--id", "j", "--", *words]))
    except UsageError as e:
        assert ("empty command" in str(e)) if expected else ("no command given" in str(e))
        assert not expected or expected[0] == ""
        return
    assert spec.command == expected


# -- taro: every verb in-process, on a real environment ------------------------------------------

TARO_VERBS = sorted(v for v in taro.VERBS if v not in ("exec", "config"))
SERVERS = {"serve", "dash"}  # run until stopped: their options are checked by parsing only
BASE = {  # required positionals of each verb (values that match nothing)
    "stop": ["nomatch"], "release": ["nolatch"], "approve": ["nomatch"], "resume": ["nomatch"],
    "deny": ["nomatch"], "disable": ["nomatch"], "enable": ["nomatch"], "unlock": ["nokey"],
    "wait": ["nomatch"], "tail": ["seed"], "output": ["seed"], "service": ["show", "nosvc"],
}


def taro_options(verb: str) -> list[tuple[tuple[str, ...], dict]]:
    """(flags, kwargs) of every option and positional that takes a value."""
    import importlib

    mod = importlib.import_module(f"runtools.cli.taro.{taro.VERBS[verb]}")
    p = FastParser(prog=f"taro {verb}")
    mod.configure(p, verb) if getattr(mod, "MULTI", False) else mod.configure(p)
    return [(flags, kw) for _g, flags, kw in p._calls if kw.get("action", "store") != "store_true"]


# how messages name a value when they do not name the option
TARO_NOUNS = {"--env": ("environment",), "patterns": ("pattern",), "args": ("pattern", "state"), "key": ("key",),
              "--status": ("status",), "--outcome": ("outcome",), "--since": ("time",), "--until": ("time",)}


def taro_positionals(verb: str, case: tuple[str, ...], value: str) -> list[str]:
    """The verb's positionals: `value` in the place of `case`, BASE's values in the others."""
    base = BASE.get(verb, [])
    names = [flags for flags, _kw in taro_options(verb) if not flags[0].startswith("-")]
    out = []
    for i, flags in enumerate(names):
        if flags == case:
            out.append(value)
        elif i < len(base):
            out.append(base[i])
    return out


TARO_CASES = [(verb, flags, kw) for verb in TARO_VERBS for flags, kw in taro_options(verb)]


def snapshot(*dirs: Path) -> Any:
    """What a command could have written: files (not SQLite's -wal/-shm) and every table row."""
    files, rows = [], []
    for d in dirs:
        for f in sorted(d.rglob("*")) if d.exists() else []:
            if f.is_file() and not f.name.endswith(("-wal", "-shm")):
                files.append(str(f))
                if f.suffix == ".db":
                    with contextlib.closing(sqlite3.connect(f"file:{f}?mode=ro", uri=True)) as c:
                        for (t,) in c.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
                            rows.append((str(f), t, sorted(map(repr, c.execute(f"SELECT * FROM {t}")))))
    return files, rows


@pytest.fixture
def seeded(cli, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One ended run with output (`seed`), a finished strict run key `key1`; cwd a scratch dir."""
    assert cli.run("--id", "seed", "--strict", "--run-key", "key1", "--", "sh", "-c", "echo out").returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def taro_inprocess(argv: list[str]) -> tuple[int, str]:
    """`taro ARGV` in this process: (exit code, stderr). Streams with descriptors, as verbs
    that copy output (`output`, `tail`) write to them directly."""
    import tempfile

    with open(os.devnull, "w") as out, tempfile.TemporaryFile("w+", errors="backslashreplace") as err, \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            taro.main(argv)
        except SystemExit as e:
            code = e.code
        else:
            code = 0
        err.seek(0)
        text = err.read()
    assert isinstance(code, int)
    return code, text


@QUIET
@given(case=st.sampled_from(TARO_CASES), value=VALUES, inline=st.booleans())
def test_taro_option_values(case: tuple, value: str, inline: bool, seeded: Path, home: Path) -> None:
    verb, flags, kw = case
    positional = not flags[0].startswith("-")
    if "--env" in flags:
        value = safe_path(value)
    # a valid --timeout DUR of listen/wait blocks for DUR: that value is checked by
    # test_taro_durations_parse; here they always get --timeout 0
    assume(not (verb in ("listen", "wait") and flags == ("--timeout",)) and verb not in SERVERS)
    extra = ["--timeout", "0"] if verb in ("listen", "wait") else []
    if verb == "clean" and flags != ("--keep",):  # clean needs a selector: one that removes nothing here
        extra = ["--keep", "1000"]
    words = [] if positional else [f"{flags[-1]}={value}"] if inline else [flags[-1], value]
    argv = [verb, *extra, *words, *taro_positionals(verb, flags, value)]  # a "--" value ends the options
    if verb in ("stop",):
        argv.append("-f")
    before = snapshot(home, seeded)
    code, err = taro_inprocess(argv)
    one_line(err)
    assert code in (0, 1, 2, 3, 4, 5, 124), (argv, code, err)
    if code == 2:
        assert err.strip(), argv
        named = [*flags, kw.get("metavar") or flags[0], printable(value), repr(value)[1:-1],
                 *TARO_NOUNS.get(flags[-1], ())]  # an option-like word: itself
        assert any(n in err for n in named), err
        assert snapshot(home, seeded) == before, argv  # refused before anything was written


@QUIET
@given(case=st.sampled_from(TARO_CASES), value=VALUES, inline=st.booleans())
def test_taro_parsers(case: tuple, value: str, inline: bool) -> None:
    """Every verb's parser alone (servers included): a namespace without empty or undecodable
    values, or exit 2 with one line."""
    import importlib

    verb, flags, _kw = case
    positional = not flags[0].startswith("-")
    mod = importlib.import_module(f"runtools.cli.taro.{taro.VERBS[verb]}")
    p = FastParser(prog=f"taro {verb}")
    mod.configure(p, verb) if getattr(mod, "MULTI", False) else mod.configure(p)
    words = [] if positional else [f"{flags[-1]}={value}"] if inline else [flags[-1], value]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), open(os.devnull, "w") as out, contextlib.redirect_stdout(out):
        try:
            ns = p.parse_args([*words, *taro_positionals(verb, flags, value)])
        except SystemExit as e:
            assert e.code == 2
            one_line(err.getvalue())
            return
    for v in vars(ns).values():
        for x in v if isinstance(v, list) else [v]:
            assert not isinstance(x, str) or (x and x.encode("utf-8"))
        if isinstance(v, int) and not isinstance(v, bool):
            assert abs(v) <= MAX_COUNT


@QUIET
@given(value=VALUES)
def test_taro_durations_parse(value: str) -> None:
    """`--timeout` of listen/wait and `--ttl` of unlock: a duration within 100 years, or a usage error."""
    from runtools.model.durations import parse_duration

    try:
        v = parse_duration(value, "--timeout")
    except UsageError as e:
        assert "--timeout" in str(e) and "\n" not in str(e)
        return
    assert 0 <= v <= MAX_DURATION_S


@FEW
@given(case=st.sampled_from(TARO_CASES), value=st.sampled_from(EXTREMES))
def test_taro_subprocess(case: tuple, value: str, cli, seeded: Path, home: Path) -> None:
    verb, flags, _kw = case
    positional = not flags[0].startswith("-")
    if "--env" in flags:
        value = safe_path(value)
    assume((verb not in ("listen", "wait") or positional) and verb not in SERVERS)
    extra = ["--timeout", "0"] if verb in ("listen", "wait") else []
    argv = [verb, *extra, *([] if positional else [flags[-1], value]), *taro_positionals(verb, flags, value)]
    before = snapshot(home, seeded)
    p = cli.taro(*argv, cwd=seeded, binary=True, timeout=60)
    err = p.stderr.decode("utf-8", "replace")
    one_line(err)
    assert p.returncode in (0, 1, 2, 3, 4, 5, 124), (argv, p.returncode, err)
    if p.returncode == 2:
        assert snapshot(home, seeded) == before


# -- orchesjob: the parsers and the checks before any I/O in-process, whole verbs as subprocesses --

OJ_CASES = [(verb, opt, kind) for verb, (options, *_r) in oj._TABLE.items()
            for opt, (_dest, kind) in options.items() if kind != "flag"]
OJ_BASE = {  # a valid rest of the command line for each verb
    "start": ["--run-key", "k"], "status": ["--run-key", "k"], "logs": ["--run-key", "k"],
    "abort": ["--run-key", "k"], "unlock": ["--run-key", "k"], "rerun": ["--run-key", "k"], "clean": ["--all"],
}


def oj_argv(verb: str, opt: str, value: str, inline: bool) -> list[str]:
    base = [w for w in OJ_BASE[verb]]
    if opt in base:
        i = base.index(opt)
        del base[i:i + 2]
    if verb == "clean" and opt in ("--before", "--after", "--job-id", "--run-key"):
        base = []
    words = [f"{opt}={value}"] if inline else [opt, value]
    return [verb, *base, *words, *(["--", "true"] if verb == "start" else [])]


@QUIET
@given(case=st.sampled_from(OJ_CASES), value=VALUES, inline=st.booleans())
def test_orchesjob_option_values(case: tuple, value: str, inline: bool) -> None:
    verb, opt, _kind = case
    argv = oj_argv(verb, opt, value, inline)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), open(os.devnull, "w") as out, contextlib.redirect_stdout(out):
        try:
            a = oj.parse_args(argv)
        except SystemExit as e:
            assert e.code == 2
            text = err.getvalue()
            one_line(text)
            assert text.startswith("orchesjob: ") and (opt in text or "argument" in text), text
            return
    # accepted by the parser: the checks made before any I/O accept it or refuse it in one line
    fast = oj.fast_parse(argv)
    assert fast is None or vars(fast) == vars(a)
    assert value != ""
    value.encode("utf-8")
    from runtools.orchesjob.ops import clean_args_error, parse_ttl

    try:
        if verb == "unlock":
            parse_ttl(a.ttl)
        if verb == "clean":
            msg = clean_args_error(a.before, a.after, a.all, a.job_id, a.run_key)
            if msg:
                raise UsageError(msg)
    except UsageError as e:
        assert "\n" not in str(e)
        return
    for d in ("start_timeout", "grace_seconds"):
        v = getattr(a, d, None)
        assert v is None or 0 <= v <= MAX_DURATION_S
    assert getattr(a, "tail", None) is None or 0 <= a.tail <= MAX_COUNT


@pytest.fixture
def ojhome(tmp_path: Path) -> Path:
    """An orchesjob home with one finished strict job (run key `k`)."""
    h = tmp_path / "oj"
    env = {**os.environ, "ORCHESJOB_HOME": str(h)}
    p = subprocess.run([str(BIN / "orchesjob"), "start", "--sync", "--strict", "--run-key", "k", "--", "true"],
                       env=env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    return h


@FEW
@given(case=st.sampled_from(OJ_CASES), value=st.sampled_from(EXTREMES))
def test_orchesjob_subprocess(case: tuple, value: str, ojhome: Path) -> None:
    verb, opt, _kind = case
    assume(not (verb == "logs" and value in ("-f", "--follow")))
    argv = oj_argv(verb, opt, value, inline=False)
    if verb in ("start", "rerun"):  # the job ends before the next example looks at the home
        argv.insert(1, "--sync")
    before = snapshot(ojhome)
    p = subprocess.run([str(BIN / "orchesjob"), *argv], env={**os.environ, "ORCHESJOB_HOME": str(ojhome)},
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    err = p.stderr.decode("utf-8", "replace")
    one_line(err)
    assert p.returncode in (0, 1, 2, 3, 4, 5), (argv, p.returncode, err)
    if p.returncode == 2:
        assert snapshot(ojhome) == before, argv


def test_orchesjob_extremes_that_used_to_write_first(ojhome: Path) -> None:
    env = {**os.environ, "ORCHESJOB_HOME": str(ojhome)}
    before = snapshot(ojhome)
    for argv in (["unlock", "--run-key", "k", "--ttl", "99999999999999999999d"],
                 ["unlock", "--run-key", "k", "--ttl", str(MAX_DURATION_S + 1)],
                 ["start", "--run-key", "", "--", "true"], ["start", "--run-key", "k2", "--", ""],
                 ["abort", "--run-key", "k", "--grace-seconds", "1e300"]):
        p = subprocess.run([str(BIN / "orchesjob"), *argv], env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, (argv, p.stderr)
    assert snapshot(ojhome) == before
    p = subprocess.run([str(BIN / "orchesjob"), "status", "--run-key", "k"], env=env, capture_output=True, timeout=30)
    assert p.returncode == 0


@pytest.mark.parametrize("var", ["ORCHESJOB_HOME", "ORCHESJOB_LOCK_TIMEOUT"])
def test_orchesjob_empty_environment_variables(var: str, ojhome: Path) -> None:
    env = {**os.environ, "ORCHESJOB_HOME": str(ojhome), var: ""}
    p = subprocess.run([str(BIN / "orchesjob"), "status", "--running"], env=env, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2 and p.stderr == f"orchesjob: ${var} is set but empty: unset it, or set it to a value\n"


@pytest.mark.parametrize("var", ["RUNTOOLS_HOME", "RUNTOOLS_ENV"])
@pytest.mark.parametrize("argv", [["run", "job", "--", "true"], ["taro", "ps"], ["taro", "disable", "x"]])
def test_runtools_empty_environment_variables(var: str, argv: list[str], cli, home: Path) -> None:
    p = cli.exec(argv, env={var: ""})
    assert p.returncode == 2 and p.stderr.endswith(f"${var} is set but empty: unset it, or set it to a value\n")
    assert not home.exists() or not list(home.rglob("*.db"))


# -- run job as a subprocess: a few whole runs ---------------------------------------------------

BLOCKING = {"pending", "approval", "pending_timeout", "after_timeout", "detach"}


@FEW
@given(opt=st.sampled_from([o for o in RUN_VALUE_OPTIONS if o[1] not in BLOCKING]),
       value=st.sampled_from(EXTREMES))
def test_run_job_subprocess(opt: tuple, value: str, cli, home: Path, tmp_path: Path) -> None:
    flags, dest, *_ = opt
    if dest == "env":
        value = safe_path(value)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    before = snapshot(home, work)
    p = cli.run(*PARTNERS.get(dest, []), flags[-1], value, "--", "true", binary=True, cwd=work)
    err = p.stderr.decode("utf-8", "replace")
    one_line(err)
    assert p.returncode in (0, 2, 100, 101, 103, 105), (flags, value, p.returncode, err)
    if p.returncode == 2:
        assert snapshot(home, work) == before


def test_run_job_extremes(cli, home: Path) -> None:
    assert cli.run("--id", "dup", "--run-id", "r1", "--", "true").returncode == 0
    before = snapshot(home)
    for args, says in ((["--id", "dup", "--run-id", "r1"], "run id r1 of job dup already exists; choose another"),
                       (["--pending", ""], "--pending"), (["--approval", ""], "--approval"),
                       (["--max-concurrent", "9" * 30], "--max-concurrent"),
                       (["-x", "--excl-group", ""], "--excl-group"),
                       (["--run-key="], "--run-key"), (["-e", ""], "-e")):
        p = cli.run(*args, "--", "true")
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and says in p.stderr, (args, p.stderr)
    p = cli.run("--", "")
    assert p.returncode == 2 and "empty command" in p.stderr
    assert snapshot(home) == before


# -- runcue-sim -------------------------------------------------------------------------------

SIM_OPTIONS = [a for a in sim.build_parser()._actions if a.option_strings and a.nargs != 0]


@QUIET
@given(action=st.sampled_from(SIM_OPTIONS), value=VALUES)
def test_runcue_sim_option_values(action: Any, value: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            a = sim.build_parser().parse_args([action.option_strings[-1], value])
        except SystemExit as e:
            assert e.code == 2
            text = err.getvalue()
            one_line(text)
            assert any(o in text for o in action.option_strings), text
            return
    assert 1 <= a.count <= sim.MAX_SIM_COUNT and 1 <= a.concurrent <= MAX_COUNT
    assert 0 < a.timeout <= MAX_DURATION_S and 0 <= a.latency <= MAX_DURATION_S * 1000
    for f in (a.jitter, a.outliers, a.error_rate):
        assert 0 <= f <= 1
    assert 0 <= a.submit_rate < float("inf")


@pytest.mark.parametrize("args", [["-n", "0"], ["-l", "nan"], ["--timeout", "inf"], ["-j", "2"], ["-r", ""],
                                  ["--seed", "9" * 30], ["-c", "-1"], ["-n", "99999999999999999999"]])
def test_runcue_sim_extremes_exit_2(args: list[str]) -> None:
    p = subprocess.run([str(BIN / "runcue-sim"), *args, "--no-tui"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("runcue-sim: "), p.stderr


def test_runcue_sim_valid_extremes_run_and_end() -> None:
    p = subprocess.run([str(BIN / "runcue-sim"), "-n", "1", "-l", "0", "-j", "1", "--outliers", "1", "-e", "1",
                        "-c", str(MAX_COUNT), "-r", "99999999999999999999/s", "-s", "1e18", "--seed",
                        str(-MAX_COUNT), "--timeout", "10", "--no-tui"], capture_output=True, text=True, timeout=60)
    one_line(p.stderr)
    assert p.returncode in (0, 1) and "Summary" in p.stdout, p.stderr


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e300", "soon"])
def test_orchesjob_lock_timeout_must_be_a_sane_number(value: str, tmp_path: Path) -> None:
    env = {**os.environ, "ORCHESJOB_HOME": str(tmp_path / "oj"), "ORCHESJOB_LOCK_TIMEOUT": value}
    p = subprocess.run([str(BIN / "orchesjob"), "start", "--sync", "--run-key", "k", "--", "true"], env=env,
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    assert p.stderr == f"orchesjob: invalid $ORCHESJOB_LOCK_TIMEOUT {value!r}: use seconds, e.g. 10\n"
    assert not (tmp_path / "oj").exists()


def test_orchesjob_status_survives_an_override_stored_by_an_older_version(ojhome: Path) -> None:
    """Before the ttl ceiling, `unlock --ttl 99999999999999999999d` stored an expiry no clock
    shows, and every later `status` of the key crashed: it is shown as the last showable date."""
    env = {**os.environ, "ORCHESJOB_HOME": str(ojhome)}
    p = subprocess.run([str(BIN / "orchesjob"), "unlock", "--run-key", "k", "--ttl", "1d"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    with contextlib.closing(sqlite3.connect(ojhome / "orchesjob.db")) as c, c:
        (value,) = c.execute("SELECT value FROM settings WHERE kind='unlock' AND key='k'").fetchone()
        c.execute("UPDATE settings SET value=? WHERE kind='unlock' AND key='k'",
                  (value.replace('"expires_at":', '"expires_at":8640000000000000000000,"x":'),))
    p = subprocess.run([str(BIN / "orchesjob"), "status", "--run-key", "k"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert '"expires_at_iso": "9999-12-31T23:59:59' in p.stdout
