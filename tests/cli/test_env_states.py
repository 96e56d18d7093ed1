"""Every verb against an environment that is missing, read-only, someone else's, locked, damaged,
truncated or written by a newer runtools: the documented exit code, one line on stderr (no
traceback, no "internal error"), and nothing created or changed — reads write nothing, and a
write that cannot be done leaves nothing half-written.

Exit codes: taro 3 not found, 5 storage unusable; `run job` 125 (the wrapper failed); orchesjob
5 (its "lock error"). Read-only and someone else's environments are tried as the unprivileged
user `nobody` (root's permission checks do not bite); skipped where that is impossible.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SETPRIV = shutil.which("setpriv")
AS_NOBODY = [SETPRIV or "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
FAST_LOCK = "0.3"  # seconds a write waits for a held write lock (RUNTOOLS_BUSY_TIMEOUT / ORCHESJOB_LOCK_TIMEOUT)

# -- the verbs -------------------------------------------------------------------------------
# name -> (argv with {env} for the environment path, kind, exit code on the healthy template)
# kind: "read" never writes; "write" changes the environment when it can; "create" may also
# create a missing environment (run job, orchesjob start)
T = ["taro"]
VERBS: dict[str, tuple[list[str], str, int]] = {
    "taro ps": ([*T, "ps", "-e", "{env}"], "read", 0),
    "taro history": ([*T, "history", "-e", "{env}"], "read", 0),
    "taro tail": ([*T, "tail", "job", "-e", "{env}"], "read", 0),
    "taro output": ([*T, "output", "job", "-e", "{env}"], "read", 0),
    "taro stop": ([*T, "stop", "job", "-e", "{env}"], "read", 3),  # nothing active to stop
    "taro wait": ([*T, "wait", "nomatch", "--timeout", "0.05", "-e", "{env}"], "read", 124),
    "taro listen": ([*T, "listen", "--timeout", "0.05", "-e", "{env}"], "read", 0),
    "taro stats": ([*T, "stats", "-e", "{env}"], "read", 0),
    "taro list-disabled": ([*T, "list-disabled", "-e", "{env}"], "read", 0),
    "taro config list-disabled": ([*T, "config", "list-disabled", "-e", "{env}"], "read", 0),
    "taro approve": ([*T, "approve", "job", "-e", "{env}"], "read", 3),  # nothing pending
    "taro release": ([*T, "release", "latch", "-e", "{env}"], "read", 3),
    "taro deny": ([*T, "deny", "job", "-e", "{env}"], "read", 3),
    "taro disable": ([*T, "disable", "nightly", "-e", "{env}"], "write", 0),
    "taro enable": ([*T, "enable", "old", "-e", "{env}"], "write", 0),
    "taro unlock": ([*T, "unlock", "k", "-e", "{env}"], "write", 0),
    "run job": (["run", "job", "-e", "{env}", "--id", "new", "--", "true"], "create", 0),
    "orchesjob status": (["orchesjob", "status", "--run-key", "k"], "read", 0),
    "orchesjob status --running": (["orchesjob", "status", "--running"], "read", 0),
    "orchesjob logs": (["orchesjob", "logs", "--run-key", "k"], "read", 0),
    "orchesjob abort": (["orchesjob", "abort", "--run-key", "k"], "write", 4),  # it has ended
    "orchesjob unlock": (["orchesjob", "unlock", "--run-key", "k"], "write", 0),
    "orchesjob clean": (["orchesjob", "clean", "--all"], "write", 0),
    "orchesjob rerun": (["orchesjob", "rerun", "--run-key", "k", "--sync"], "create", 0),
    "orchesjob start": (["orchesjob", "start", "--run-key", "n", "--sync", "--", "true"], "create", 0),
}

# What each state answers, by kind: an int for all, or a dict of verb -> code for exceptions.
UNUSABLE = {"read": 5, "write": 5, "create": 5, "run job": 125}
STATES: dict[str, dict] = {
    "healthy": {"read": None, "write": None, "create": None},
    # a missing explicit environment: taro says it does not exist (3); orchesjob keeps its seed's
    # answers for a home without jobs (nothing created either); run job / start create it
    "missing": {"read": 3, "write": 3, "create": 0, "orchesjob status --running": 0, "orchesjob clean": 0,
                "orchesjob abort": 3, "orchesjob unlock": 3, "orchesjob rerun": 3, "orchesjob status": 3,
                "orchesjob logs": 3},
    # None: as when healthy; a write that has nothing to change answers as when healthy
    "read-only": {"read": None, "write": 5, "create": 5, "run job": 125, "orchesjob abort": None},
    "other-user": UNUSABLE,
    "locked": {"read": None, "write": 5, "create": 5, "run job": 125},
    "damaged": UNUSABLE,
    "truncated": UNUSABLE,
    "newer": UNUSABLE,
}
NOBODY_STATES = {"read-only", "other-user"}


def expected(state: str, verb: str) -> int:
    rules = STATES[state]
    _argv, kind, healthy = VERBS[verb]
    code = rules[verb] if verb in rules else rules[kind]
    return healthy if code is None else code


# -- the template environment ----------------------------------------------------------------


def _env_vars(base: Path, runtime: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTOOLS_", "ORCHESJOB_"))}
    env.update(RUNTOOLS_HOME=str(base / "home"), XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(base / "cfg"),
               XDG_DATA_HOME=str(base / "data"), HOME=str(base))
    env.update(extra or {})
    return env


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """A directory the unprivileged user can reach (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="rt-states-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def template(base: Path) -> Path:
    """One environment holding a taro history (runs.db: job `job` with strict run key k, job `old`
    disabled) and an orchesjob history (orchesjob.db: key k, ended). Made at `base/env`, where each
    case gets its copy (records hold absolute paths of their output), then moved aside."""
    env_dir = base / "env"
    runtime = base / "template-rt"
    runtime.mkdir(mode=0o700)
    env = _env_vars(base, runtime, {"ORCHESJOB_HOME": str(env_dir)})
    for argv in (["run", "job", "-e", str(env_dir), "--id", "job", "--run-key", "k", "--strict", "--", "echo", "hi"],
                 ["taro", "disable", "old", "-e", str(env_dir)],
                 ["orchesjob", "start", "--run-key", "k", "--sync", "--", "echo", "hi"]):
        p = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
    assert {"runs.db", "orchesjob.db"} <= set(os.listdir(env_dir))
    # fold a WAL left behind into the file: damage must hit it. orchesjob's worker may still hold its
    # database open for a moment after --sync answered, and the WAL goes only with the last connection.
    deadline = time.monotonic() + 15
    while True:
        for db in ("runs.db", "orchesjob.db"):
            c = sqlite3.connect(env_dir / db)
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            c.close()
        left = [n for n in os.listdir(env_dir) if n.endswith(("-wal", "-shm"))]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # the poll interval of a deadline loop
    assert not left, left
    return env_dir.rename(base / "template")


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: type, mode, owner and (files) the hash of the content."""
    out: dict[str, tuple] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, digest)
    return out


def _damage(db: Path, state: str) -> None:
    if state == "damaged":
        with open(db, "r+b") as f:
            f.write(os.urandom(64) + b"this is not an SQLite database" * 100)
    elif state == "truncated":
        os.truncate(db, db.stat().st_size // 2)
    elif state == "newer":
        with sqlite3.connect(db) as c:
            c.execute("PRAGMA user_version=99")
        c.close()


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chown(dirpath, uid, gid)
        for n in filenames:
            os.chown(os.path.join(dirpath, n), uid, gid)


def _read_only(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames:
            p = os.path.join(dirpath, n)
            os.chmod(p, stat.S_IMODE(os.stat(p).st_mode) & ~0o222)
        os.chmod(dirpath, stat.S_IMODE(os.stat(dirpath).st_mode) & ~0o222)


class Locker:
    """A process holding the write lock of the environment's databases (BEGIN EXCLUSIVE)."""

    CODE = ("import sqlite3, sys\n"
            "cs = [sqlite3.connect(p, isolation_level=None) for p in sys.argv[1:]]\n"
            "[c.execute('BEGIN EXCLUSIVE') for c in cs]\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n")

    def __init__(self, dbs: list[Path]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, *map(str, dbs)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "locked\n"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


CASES = [(state, verb) for state in STATES for verb in VERBS]


@pytest.mark.parametrize(("state", "verb"), CASES, ids=[f"{s}:{v}" for s, v in CASES])
def test_verb_in_environment_state(state: str, verb: str, base: Path, template: Path, request) -> None:
    nobody = state in NOBODY_STATES
    if nobody and (os.geteuid() != 0 or SETPRIV is None):
        pytest.skip("needs root and setpriv to run as the unprivileged user nobody")
    case = Path(tempfile.mkdtemp(prefix="case-", dir=base))
    case.chmod(0o755)
    env_dir = base / "env"
    request.addfinalizer(lambda: shutil.rmtree(env_dir, ignore_errors=True))
    runtime = case / "rt"
    runtime.mkdir(mode=0o700)
    if state != "missing":
        shutil.copytree(template, env_dir, symlinks=True)
    if state in ("damaged", "truncated", "newer"):
        for db in ("runs.db", "orchesjob.db"):
            _damage(env_dir / db, state)
    if nobody:
        pw = pwd.getpwnam("nobody")
        os.chown(runtime, pw.pw_uid, pw.pw_gid)
        os.chown(case, pw.pw_uid, pw.pw_gid)  # its own cwd and HOME
        if state == "read-only":
            _chown_tree(env_dir, pw.pw_uid, pw.pw_gid)
            _read_only(env_dir)
        # other-user: the template stays root's, 0700 as every environment is created
    locker = Locker([env_dir / "runs.db", env_dir / "orchesjob.db"]) if state == "locked" else None
    try:
        before = snapshot(env_dir)
        argv, kind, _healthy = VERBS[verb]
        argv = [str(BIN / argv[0]), *(a.replace("{env}", str(env_dir)) for a in argv[1:])]
        env = _env_vars(case, runtime, {"ORCHESJOB_HOME": str(env_dir), "RUNTOOLS_BUSY_TIMEOUT": FAST_LOCK,
                                        "ORCHESJOB_LOCK_TIMEOUT": FAST_LOCK})
        p = subprocess.run((AS_NOBODY if nobody else []) + argv, env=env, cwd=case, capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
        after = snapshot(env_dir)
    finally:
        if locker is not None:
            locker.close()
    want = expected(state, verb)
    err = p.stderr
    assert p.returncode == want, f"{verb} in a {state} environment exited {p.returncode}, not {want}: {err}"
    assert "Traceback" not in err and "internal error" not in err, err
    if want != 0:
        assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err!r}"
    if want in (5, 125):
        assert str(env_dir) in err, f"the message names no path: {err}"
    changed = want == 0 and kind != "read"
    if not changed:
        diff = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        if verb == "orchesjob start":  # its per-key gate: an empty lock file, taken before the worker
            diff = {k: v for k, v in diff.items() if not (k.startswith("gates/") and v[0] is None)}
        assert not diff, f"{verb} changed the {state} environment: {diff}"
    if state == "missing" and kind != "create":
        assert not env_dir.exists()


def test_a_runtime_dir_too_long_for_socket_paths_falls_back(cli, tmp_path):
    """$XDG_RUNTIME_DIR so long that a socket path under it would not fit (~107 bytes): the
    sockets go to /tmp/runtools-$UID instead, for the wrapper and for taro alike."""
    long_dir = tmp_path / ("r" * 60) / ("t" * 40)
    long_dir.mkdir(parents=True, mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(long_dir)}
    wrapper = cli.spawn_run("--id", "long", "--", "sleep", "600", env=env)
    cli.wait_state("long", "EXECUTING")
    p = cli.taro("stop", "long", env=env)
    assert p.returncode == 0, p.stderr
    assert wrapper.wait(10) == 143
    assert cli.history("long")[0]["status"] == "STOPPED"


# -- the default environment before its first run; the Python API ----------------------------

DEFAULT_READS = [(["ps"], 0), (["history"], 0), (["stats"], 0), (["list-disabled"], 0), (["tail", "job"], 3),
                 (["output", "job"], 3), (["stop", "job"], 3), (["approve", "job"], 3), (["enable", "old"], 3),
                 (["unlock", "k"], 3), (["wait", "nomatch", "--timeout", "0.05"], 124),
                 (["listen", "--timeout", "0.05"], 0), (["ps", "--json"], 0)]


@pytest.mark.parametrize(("args", "code"), DEFAULT_READS, ids=[" ".join(a) for a, _ in DEFAULT_READS])
def test_the_default_environment_before_its_first_run_reads_as_empty_and_is_not_created(cli, home, args, code):
    p = cli.taro(*args)
    assert p.returncode == code, p.stderr
    assert "does not exist" not in p.stderr and "Traceback" not in p.stderr
    if args == ["ps", "--json"]:
        assert p.stdout.strip() == "[]"
    assert not home.exists()  # not even $RUNTOOLS_HOME


def test_a_named_environment_that_does_not_exist_is_an_error_not_an_empty_history(cli, home):
    p = cli.taro("history", "-e", "prod")
    assert p.returncode == 3
    assert p.stderr == (f"taro: environment prod ({home / 'prod'}) does not exist: run a job in it first, "
                        "or check -e / RUNTOOLS_ENV\n")
    p = cli.taro("ps", env={"RUNTOOLS_ENV": "/no/such/env"})
    assert (p.returncode, p.stderr.count("\n")) == (3, 1) and "/no/such/env does not exist" in p.stderr
    assert not home.exists() and not Path("/no/such/env").exists()


def test_taro_disable_creates_the_default_environment_but_no_other(cli, home, tmp_path):
    assert cli.taro("disable", "-e", str(tmp_path / "typo"), "nightly").returncode == 3
    assert not (tmp_path / "typo").exists()
    assert cli.taro("disable", "nightly").returncode == 0
    assert [d["pattern"] for d in cli.json("list-disabled")] == ["nightly"]


def test_python_api_reads_create_nothing(home, tmp_path):
    import runtools
    from runtools.env.base import RunQuery

    missing = tmp_path / "nowhere" / "env"
    for name in (str(missing), None):
        with runtools.environment(name) as env:
            assert env.find_runs(RunQuery()) == []
            assert env.active_runs() == []
            assert env.get_run("job@r1") is None
            assert env.stats(RunQuery()) == []
            assert env.read_settings("disabled") == {}
    assert not missing.parent.exists() and not home.exists()
    result = runtools.run(["true"], job_id="first", env=str(missing))  # the first run creates it
    assert result.exit_code == 0 and (missing / "runs.db").exists()
    assert stat.S_IMODE(missing.stat().st_mode) == 0o700


def test_reads_of_a_read_only_copy_show_its_history(cli, base, template):
    """As its owner, without write permission anywhere in it (a backup, a mounted snapshot)."""
    if os.geteuid() != 0 or SETPRIV is None:
        pytest.skip("needs root and setpriv to run as the unprivileged user nobody")
    env_dir = base / "env"
    shutil.copytree(template, env_dir, symlinks=True)
    try:
        pw = pwd.getpwnam("nobody")
        _chown_tree(env_dir, pw.pw_uid, pw.pw_gid)
        _read_only(env_dir)
        runtime = Path(tempfile.mkdtemp(prefix="rt-ro-", dir="/tmp"))
        os.chown(runtime, pw.pw_uid, pw.pw_gid)
        env = _env_vars(base, runtime)
        before = snapshot(env_dir)
        p = subprocess.run([*AS_NOBODY, str(BIN / "taro"), "history", "-e", str(env_dir), "--json"], env=env,
                           cwd="/", capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert [r["job_id"] for r in json.loads(p.stdout)] == ["job"]
        p = subprocess.run([*AS_NOBODY, str(BIN / "taro"), "output", "job", "-e", str(env_dir)], env=env,
                           cwd="/", capture_output=True, text=True, timeout=30)
        assert (p.returncode, p.stdout) == (0, "hi\n"), p.stderr
        assert snapshot(env_dir) == before
        shutil.rmtree(runtime, ignore_errors=True)
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)


def test_an_invalid_busy_timeout_is_a_usage_error(cli):
    p = cli.run("--id", "x", "--", "true", env={"RUNTOOLS_BUSY_TIMEOUT": "soon"})
    assert (p.returncode, p.stderr) == (2, "run: invalid $RUNTOOLS_BUSY_TIMEOUT 'soon': use seconds, e.g. 60\n")
