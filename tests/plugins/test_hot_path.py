"""`run job` with no config (and with a config that turns no hook on) imports none of the
machinery of issue 11: no TOML parser, no entry-point scan, no TUI, no HTTP client."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("tomllib", "importlib.metadata", "textual", "rich", "urllib.request", "http.client",
         "runtools.plugins", "runtools.eventlog", "runtools.retention", "runtools.config_schema", "runtools.tui")


def _imported(cli) -> set[str]:
    # the entry point itself, not pip's console-script wrapper (which imports `re` for its argv[0])
    entry = "import sys; from runtools.cli.run import main; sys.argv[0] = 'run'; sys.exit(main())"
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", entry, "job", "--", "true"],
                       capture_output=True, text=True, timeout=30, env=cli._env(None), cwd=cli.cwd)
    assert p.returncode == 0, p.stderr
    return {line.split("|")[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}


def test_run_job_without_config_imports_no_hook_machinery(cli):
    mods = _imported(cli)
    assert "runtools.job.instance" in mods
    assert not mods & set(HEAVY), mods & set(HEAVY)


def test_a_config_without_hooks_is_parsed_once_and_loads_no_hooks(cli):
    (cli.cwd / "runtools.toml").write_text('[jobs."x*"]\ntimeout = "1h"\n\n[retention]\nkeep = 100\n')
    mods = _imported(cli)
    assert "tomllib" in mods  # the first run parses the file (~8 ms of imports) ...
    assert "runtools.plugins.hub" in mods  # the hook point, for automatic retention
    assert not mods & {"importlib.metadata", "urllib.request", "textual", "rich", "runtools.eventlog"}
    mods = _imported(cli)  # ... later runs read the parsed, checked config from the cache
    assert not mods & {"tomllib", "re", "runtools.config_schema", "importlib.metadata", "urllib.request"}, mods
    (cli.cwd / "runtools.toml").write_text('[jobs."x*"]\ntimeout = "2h"\n')  # changed: parsed again
    assert "tomllib" in _imported(cli)
