"""taro stop, wait, listen, tail, output (black box, subprocess)."""

from __future__ import annotations

import json

import pytest

EVENT_KEYS = {"event", "instance_id", "job_id", "stage", "state", "status", "timestamp"}


def has(text: bytes) -> callable:
    return lambda line: text in line


def ended_of(job: str) -> callable:
    def check(line: bytes) -> bool:
        ev = json.loads(line)
        return ev["job_id"] == job and ev["event"] == "ended"

    return check


# -- stop ------------------------------------------------------------------------------------


@pytest.mark.parametrize("opts, status", [((), "STOPPED"), (("--interrupt",), "INTERRUPTED")])
def test_stop(cli, opts, status):
    p = cli.spawn_gated("stoppable")
    r = cli.wait_state("stoppable")
    s = cli.taro("stop", "stoppable", *opts)
    assert s.returncode == 0, s.stderr
    assert r["instance_id"] in s.stdout
    assert p.wait(10) == 143  # the command got TERM
    h = cli.history()
    assert [(x["instance_id"], x["status"], x["outcome"]) for x in h] == [
        (r["instance_id"], status, "ABORTED")]
    actions = h[0]["actions"]
    assert [a["action"] for a in actions] == ["interrupted" if opts else "stopped"]
    assert "taro" in actions[0]["by"]


def test_stop_more_than_one_run_needs_force(cli, wait_until):
    procs = [cli.spawn_gated("multi") for _ in range(2)]
    wait_until(lambda: [r["state"] for r in cli.runs(active=True)] == ["EXECUTING"] * 2, what="2 executing")
    s = cli.taro("stop", "multi")
    assert s.returncode == 1
    assert "-f" in s.stderr
    assert len(cli.ps()) == 2  # nothing stopped
    s = cli.taro("stop", "-f", "multi")
    assert s.returncode == 0, s.stderr
    assert s.stdout.count("stopping") == 2
    for p in procs:
        assert p.wait(10) == 143
    assert [r["status"] for r in cli.history()] == ["STOPPED", "STOPPED"]


def test_stop_without_match_exits_3(cli):
    s = cli.taro("stop", "nothing-here")
    assert s.returncode == 3
    assert s.stderr.count("\n") == 1


def test_stop_needs_a_pattern(cli):
    s = cli.taro("stop")
    assert s.returncode == 2 and s.stderr.count("\n") == 1


# -- wait ------------------------------------------------------------------------------------


def test_wait_returns_when_a_matching_run_ends(cli, wait_until):
    p = cli.spawn_gated("waited")
    r = cli.wait_state("waited")
    w = cli.spawn(["taro", "wait", "waited", "--json", "--timeout", "20"])
    wait_until(lambda: cli.listeners() >= 1, what="taro wait to listen")
    assert w.poll() is None
    cli.release(p)
    out, err = w.communicate(timeout=15)
    assert w.returncode == 0, err
    ev = json.loads(out)
    assert EVENT_KEYS <= ev.keys()
    assert (ev["event"], ev["instance_id"], ev["stage"], ev["status"]) == ("ended", r["instance_id"], "ENDED",
                                                                          "COMPLETED")


def test_wait_for_a_state_before_any_run_exists(cli, wait_until):
    w = cli.spawn(["taro", "wait", "later", "executing", "--json", "--timeout", "20"])
    wait_until(lambda: cli.listeners() >= 1, what="taro wait to listen")
    p = cli.spawn_gated("later")
    out, err = w.communicate(timeout=15)
    assert w.returncode == 0, err
    ev = json.loads(out)
    assert (ev["job_id"], ev["stage"], ev["state"]) == ("later", "RUNNING", "EXECUTING")
    cli.release(p)
    assert p.wait(10) == 0


def test_wait_for_a_status_skips_other_ends(cli, wait_until):
    w = cli.spawn(["taro", "wait", "failed", "--json", "--timeout", "20"])  # STATE only, any job
    wait_until(lambda: cli.listeners() >= 1, what="taro wait to listen")
    assert cli.run("--id", "fine", "--", "true").returncode == 0
    assert w.poll() is None  # a COMPLETED end does not satisfy "failed"
    assert cli.run("--id", "broken", "--", "false").returncode == 1
    out, err = w.communicate(timeout=15)
    assert w.returncode == 0, err
    ev = json.loads(out)
    assert (ev["job_id"], ev["status"]) == ("broken", "FAILED")


def test_wait_completed_word_alone(cli, wait_until):
    w = cli.spawn(["taro", "wait", "completed", "--timeout", "20"], binary=False)
    wait_until(lambda: cli.listeners() >= 1, what="taro wait to listen")
    assert cli.run("--id", "done", "--", "true").returncode == 0
    out, _ = w.communicate(timeout=15)
    assert w.returncode == 0 and "done@" in out and "COMPLETED" in out


def test_wait_timeout_exits_124(cli):
    p = cli.taro("wait", "never", "--timeout", "0.3", timeout=10)
    assert p.returncode == 124
    assert p.stderr.count("\n") == 1


@pytest.mark.parametrize("args", [["--timeout", "x"], ["ended", "completed"], ["[x"]])
def test_wait_bad_input(cli, args):
    p = cli.taro("wait", *args)
    assert p.returncode == 2 and p.stderr.count("\n") == 1


# -- listen ----------------------------------------------------------------------------------


def test_listen_streams_ndjson_events_of_matching_runs(cli, wait_until):
    lst = cli.spawn(["taro", "listen", "--json", "lj"])
    wait_until(lambda: cli.listeners() >= 1, what="taro listen to listen")
    assert cli.run("--id", "other", "--", "true").returncode == 0
    assert cli.run("--id", "lj", "--", "echo", "hi").returncode == 0
    lines = cli.read_lines(lst, ended_of("lj"))
    events = [json.loads(x) for x in lines]
    for ev in events:
        assert EVENT_KEYS <= ev.keys()
        assert ev["job_id"] == "lj"
        assert ev["timestamp"][-6] in "+-"
    names = [e["event"] for e in events]
    assert names[0] == "created" and names[-1] == "ended" and "executing" in names
    assert events[-1]["status"] == "COMPLETED" and events[-1]["stage"] == "ENDED"
    executing = events[names.index("executing")]
    assert (executing["stage"], executing["state"], executing["status"]) == ("RUNNING", "EXECUTING", None)
    assert lst.poll() is None  # keeps listening


def test_listen_text_and_timeout(cli, wait_until):
    lst = cli.spawn(["taro", "listen", "--timeout", "20"])
    wait_until(lambda: cli.listeners() >= 1, what="taro listen to listen")
    assert cli.run("--id", "txt", "--", "true").returncode == 0
    lines = cli.read_lines(lst, has(b"ended"))
    assert all(b"txt@" in x for x in lines)
    assert b"COMPLETED" in lines[-1]
    assert cli.taro("listen", "--timeout", "0.2", timeout=10).returncode == 0


# -- tail and output -------------------------------------------------------------------------


@pytest.fixture
def talky(cli) -> dict:
    p = cli.run("--id", "talky", "--", "sh", "-c",
                "for i in $(seq 1 20); do echo out$i; done; echo e1 >&2; echo e2 >&2")
    assert p.returncode == 0
    return cli.history("talky")[0]


def test_tail_last_lines(cli, talky):
    t = cli.taro("tail", "talky", "-n", "3")
    assert (t.returncode, t.stdout, t.stderr) == (0, "out18\nout19\nout20\n", "e1\ne2\n")
    t = cli.taro("tail", "talky")
    assert t.stdout == "".join(f"out{i}\n" for i in range(11, 21))
    t = cli.taro("tail", "talky", "-n", "1", "--stream", "stderr")
    assert (t.stdout, t.stderr) == ("", "e2\n")
    t = cli.taro("tail", "talky", "-n", "2", "--stream", "stdout")
    assert (t.stdout, t.stderr) == ("out19\nout20\n", "")
    assert cli.taro("tail", "talky", "-n", "0").stdout == ""
    lines = [json.loads(x) for x in cli.taro("tail", "talky", "-n", "2", "--json").stdout.splitlines()]
    iid = talky["instance_id"]
    assert lines[:2] == [{"instance_id": iid, "stream": "stdout", "line": f"out{i}"} for i in (19, 20)]
    assert [x["stream"] for x in lines[2:]] == ["stderr", "stderr"]


def test_tail_follow_until_the_run_ends(cli):
    p = cli.spawn_gated("follow", before="echo one; echo two", after="echo three; echo four >&2; echo five")
    cli.wait_state("follow")
    t = cli.spawn(["taro", "tail", "follow", "-f"])
    cli.read_lines(t, has(b"two"))  # the stored lines first
    cli.release(p)
    assert cli.read_lines(t, has(b"five")) == [b"three", b"five"]
    out, err = t.communicate(timeout=10)  # ends with the run
    assert t.returncode == 0
    assert out == b"" and err == b"four\n"
    assert p.wait(10) == 0


def test_tail_follow_json_stream_selection(cli):
    p = cli.spawn_gated("fj", before="echo before", after="echo after-out; echo after-err >&2")
    r = cli.wait_state("fj")
    t = cli.spawn(["taro", "tail", "fj", "-f", "--json", "--stream", "stderr"])
    cli.release(p)
    out, _ = t.communicate(timeout=10)
    assert t.returncode == 0
    assert [json.loads(x) for x in out.splitlines()] == [
        {"instance_id": r["instance_id"], "stream": "stderr", "line": "after-err"}]


def test_tail_of_an_ended_run_with_f_just_prints(cli, talky):
    t = cli.taro("tail", "talky", "-f", "-n", "1", "--stream", "stdout", timeout=10)
    assert (t.returncode, t.stdout) == (0, "out20\n")


def test_tail_and_output_without_a_run_exit_3(cli):
    for verb in ("tail", "output"):
        p = cli.taro(verb, "ghost")
        assert p.returncode == 3 and p.stderr.count("\n") == 1


def test_output_whole_and_by_stream(cli, talky):
    o = cli.taro("output", "talky")
    assert o.returncode == 0
    assert o.stdout == "".join(f"out{i}\n" for i in range(1, 21))
    assert o.stderr == "e1\ne2\n"
    o = cli.taro("output", "talky", "--stream", "stderr")
    assert (o.stdout, o.stderr) == ("", "e1\ne2\n")


def test_output_picks_latest_or_the_named_run(cli, talky):
    assert cli.run("--id", "talky", "--", "echo", "newer").returncode == 0
    assert cli.taro("output", "talky").stdout == "newer\n"
    assert cli.taro("output", talky["instance_id"], "--stream", "stdout").stdout.startswith("out1\nout2\n")
