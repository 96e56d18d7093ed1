"""Plugins are entry points in group `runtools.plugins`: hooks on created / state changed /
ended / warning; a plugin that raises or hangs never breaks or delays a run beyond its bound
(logged once); `taro plugins` lists what is installed and whether it loads."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

PLUGIN = '''
import json, os, time

def _log(*what):
    with open(os.environ["PLUGIN_LOG"], "a") as f:
        f.write(json.dumps(what) + "\\n")

class Recorder:
    def on_created(self, run):
        _log("created", run["instance_id"], run["stage"])
    def on_state_changed(self, run, event):
        _log("state", event)
    def on_warning(self, run, warning):
        _log("warning", warning)
    def on_ended(self, run):
        _log("ended", run["status"])

class Raiser:
    def on_created(self, run):
        raise RuntimeError("boom")
    def on_ended(self, run):
        raise RuntimeError("boom again")

class Hanger:
    def on_created(self, run):
        time.sleep(60)

class Nothing:
    pass
'''


@pytest.fixture
def installed(tmp_path: Path) -> dict[str, str]:
    """A distribution with four entry points (and one that does not import) on PYTHONPATH."""
    site = tmp_path / "site"
    (site / "rtplug-1.0.dist-info").mkdir(parents=True)
    (site / "rtplug.py").write_text(PLUGIN)
    (site / "rtslow.py").write_text("import time\ntime.sleep(60)\nclass X:\n    def on_ended(self, run): pass\n")
    (site / "rtplug-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: rtplug\nVersion: 1.0\n")
    (site / "rtplug-1.0.dist-info" / "entry_points.txt").write_text(textwrap.dedent("""\
        [runtools.plugins]
        recorder = rtplug:Recorder
        raiser = rtplug:Raiser
        hanger = rtplug:Hanger
        nothing = rtplug:Nothing
        missing = rtplug_not_there:X
        slowimport = rtslow:X
        """))
    return {"PYTHONPATH": str(site), "PLUGIN_LOG": str(tmp_path / "plugin.log"), "XDG_CACHE_HOME": str(tmp_path / "c")}


def test_taro_plugins_lists_what_is_installed_and_whether_it_loads(cli, installed):
    (cli.cwd / "runtools.toml").write_text('[plugins]\ntimeout = "0.5s"\n')
    rows = {r["name"]: r for r in json.loads(cli.taro("plugins", "--json", env=installed).stdout)}
    assert set(rows) == {"recorder", "raiser", "hanger", "nothing", "missing", "slowimport"}
    assert rows["recorder"]["loads"] and rows["recorder"]["hooks"] == ["on_created", "on_state_changed", "on_ended",
                                                                      "on_warning"]
    assert not rows["missing"]["loads"] and "ModuleNotFoundError" in rows["missing"]["error"]
    assert not rows["nothing"]["loads"] and "none of the hooks" in rows["nothing"]["error"]
    assert rows["slowimport"]["error"] == "did not load within 0.5s"
    assert not any(r["enabled"] for r in rows.values())
    (cli.cwd / "runtools.toml").write_text('[plugins]\nenabled = true\nonly = ["recorder"]\ntimeout = "0.5s"\n')
    text = cli.taro("plugins", env=installed).stdout
    assert "recorder             enabled " in text and "raiser               disabled" in text


def test_hooks_are_called_and_bad_plugins_never_break_or_delay_a_run(cli, installed):
    (cli.cwd / "runtools.toml").write_text('[plugins]\nenabled = true\ntimeout = "0.5s"\n')
    t0 = time.monotonic()
    p = cli.run("--id", "plugged", "--output-warn", "WARN", "--", "sh", "-c", "echo WARN; exit 4", env=installed)
    took = time.monotonic() - t0
    assert p.returncode == 4
    assert took < 5  # the hanging plugin cost at most its 0.5 s bound
    log = [json.loads(x) for x in Path(installed["PLUGIN_LOG"]).read_text().splitlines()]
    run = cli.history("plugged")[0]
    assert log[0] == ["created", run["instance_id"], "CREATED"]
    assert ["state", "executing"] in log and ["ended", "FAILED"] == log[-1]
    assert ["warning", "output matched /WARN/: WARN"] in log
    assert run["status"] == "FAILED" and run["exit_code"] == 4
    err = p.stderr
    assert err.count("plugin raiser") == 1 and "raised RuntimeError: boom" in err  # once, then skipped
    assert err.count("plugin hanger") == 1 and "did not return within 0.5s" in err
    assert err.count("plugin missing does not load") == 1
    assert err.count("plugin slowimport does not load: did not return within 0.5s") == 1  # an import that hangs
    warnings = run["warnings"]
    assert any(w.startswith("plugin raiser on_created raised RuntimeError: boom") for w in warnings)
    assert any(w.startswith("plugin hanger on_created did not return") for w in warnings)


def test_no_config_no_plugin_scan(cli, installed):
    """Without [plugins] enabled the wrapper never looks for entry points (no cache file made)."""
    assert cli.run("--id", "x", "--", "true", env=installed).returncode == 0
    assert not (Path(installed["XDG_CACHE_HOME"]) / "runtools").exists()
    assert not Path(installed["PLUGIN_LOG"]).exists()


def test_state_changes_decided_in_transactions_reach_plugins_on_postgres(cli, installed, wait_until):
    server = pytest.importorskip("pg.server")
    url = server.postgres_url()  # skips without PostgreSQL, fails under CI
    (cli.cwd / "runtools.toml").write_text('[plugins]\nenabled = true\nonly = ["recorder"]\n')
    holder = cli.spawn_gated("q", "-e", url, "--max-concurrent", "1")

    def states() -> list[str]:
        p = cli.taro("ps", "-e", url, "--json")
        return [r["state"] for r in json.loads(p.stdout)] if p.returncode == 0 else []

    wait_until(lambda: "EXECUTING" in states(), 20, "the holder to execute")
    waiter = cli.spawn_run("-e", url, "--id", "q", "--max-concurrent", "1", "--", "true", env=installed)
    wait_until(lambda: "QUEUED" in states(), 20, "the second run to queue")
    cli.release(holder)
    assert holder.wait(timeout=30) == 0 and waiter.wait(timeout=30) == 0
    log = [json.loads(x) for x in Path(installed["PLUGIN_LOG"]).read_text().splitlines()]
    changes = [x[1] for x in log if x[0] == "state"]
    assert changes[:1] == ["queued"] and "executing" in changes, log
    assert log[-1] == ["ended", "COMPLETED"]
