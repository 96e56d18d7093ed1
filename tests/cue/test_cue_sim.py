"""runcue-sim: every scenario runs to the end, --timeout always ends it, stalls are explained."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from runtools.cue import sim


@pytest.mark.parametrize("scenario", sorted(sim.SCENARIOS))
def test_every_scenario_runs_to_completion(scenario: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--scenario", scenario, "-n", "15", "-l", "3", "--no-tui", "--seed", "7", "--timeout", "20"]
    code = sim.main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"Summary ({scenario})" in out
    for key in ("submitted:", "completed:", "failed:      0", "duration:", "throughput:"):
        assert key in out
    assert "unfinished" not in out


def test_errors_jitter_outliers_rate_and_submit_rate(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--scenario", "single_queue", "-n", "30", "-l", "2", "-j", "0.5", "--outliers", "0.1"]
    argv += ["-e", "0.3", "-c", "4", "-r", "1000/s", "-s", "2000", "--seed", "3"]
    argv += ["--no-tui", "--timeout", "20"]
    assert sim.main(argv) == 0
    out = capsys.readouterr().out
    assert "submitted:   30" in out and "failed:" in out


def test_verbose_event_log(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--scenario", "dynamic", "-n", "4", "-l", "2", "-v", "--no-tui", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["TIME", "EVENT", "TASK", "WORK_ID", "DETAILS"]
    for marker in ("+ queued", "✓ completed", "⟳ invalidated", "[fetch]"):
        assert marker in out


def test_timeout_always_ends_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    code = sim.main(["--scenario", "pipeline", "-n", "5", "-l", "100000", "--no-tui", "--timeout", "0.3"])
    assert code == 1 and time.monotonic() - t0 < 5
    out = capsys.readouterr().out
    assert "timeout: stopped after 0.3s" in out and "unfinished" not in out.split("Summary")[0]


def test_stall_is_detected_and_explained(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--scenario", "pipeline", "-n", "2", "-l", "1", "-e", "1.0", "--no-tui", "--timeout", "10"]
    code = sim.main(argv)
    out = capsys.readouterr().out
    assert code == 0  # the stall timeout failed the blocked work; the run ended by itself
    assert "Stall detected! 4 work items blocked" in out
    assert "load: not_ready" in out and "transform: not_ready" in out
    assert "failed:      6" in out


def test_list_scenarios_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--list-scenarios"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == list(sim.SCENARIOS)
    assert sim.main(["--rate-limit", "lots"]) == 2
    assert "Invalid rate format: lots" in capsys.readouterr().err
    assert sim.main(["--count", "0", "--no-tui"]) == 2


def test_live_view_renders_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--scenario", "fanout", "-n", "10", "-l", "2", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "runcue-sim" in out and "aggregate" in out and "Summary (fanout)" in out


def test_console_script_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runtools.cue.sim", "--list-scenarios"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 0 and "single_queue" in proc.stdout
