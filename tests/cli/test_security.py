"""State and sockets are the owner's alone; ids are validated before they touch a path."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def _modes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath, name)
            out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def test_environment_state_is_owner_only_whatever_the_umask(cli, home):
    old = os.umask(0o002)  # a permissive umask must not leak into what runtools creates
    try:
        assert cli.run("--id", "perm", "--", "sh", "-c", "echo out; echo err >&2").returncode == 0
        p = cli.spawn_gated("live")
        live = cli.wait_state("live")
        runtime = Path(os.environ["XDG_RUNTIME_DIR"])
        for root in (home, runtime):
            modes = _modes(root)
            assert modes, root
            leaky = {k: oct(v) for k, v in modes.items() if v & 0o077}
            assert leaky == {}, f"group/other can reach {leaky} under {root}"
        sockets = [p for p in runtime.rglob("*") if stat.S_ISSOCK(p.lstat().st_mode)]
        assert sockets, "the live run serves control on a Unix socket"
        cli.release(p)
        assert p.wait(10) == 0
        assert cli.history("live")[0]["instance_id"] == live["instance_id"]
    finally:
        os.umask(old)


def test_ids_that_could_escape_a_path_are_rejected_before_anything_is_written(cli, home):
    for bad in ("../x", "a/b", ".hidden", "x" * 129, ""):
        p = cli.run("--id", bad, "--", "true")
        assert p.returncode == 2, bad
        assert p.stderr.count("\n") == 1 and ("invalid job id" in p.stderr or "--id needs a value" in p.stderr)
    p = cli.run("--id", "ok", "--run-id", "../../etc", "--", "true")
    assert p.returncode == 2 and "invalid run id" in p.stderr
    p = cli.run("--id", "ok", "--tag", "a/b", "--", "true")
    assert p.returncode == 2 and "invalid tag" in p.stderr
    assert not (home / "local" / "output").exists()
