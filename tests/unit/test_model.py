"""The pure model: ids, durations, patterns, statuses, run records, progress, stats, tails."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtools.errors import UsageError
from runtools.model.criteria import RunMatcher, glob_to_sql
from runtools.model.durations import (
    MAX_DURATION_S,
    MAX_WAIT_S,
    human_duration,
    iso,
    parse_duration,
    parse_instant,
    wait_slice,
)
from runtools.model.events import Event
from runtools.model.ids import (
    job_id_from_command,
    new_run_id,
    sanitize_id,
    validate_id,
)
from runtools.model.jsonenc import dumps
from runtools.model.run import RunRecord
from runtools.model.stats import job_stats
from runtools.model.status import Outcome, Stage, State, Status
from runtools.output.progress import format_progress, parse_progress
from runtools.output.tail import last_lines

# -- ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "my-task", "A_1.b:c+d-e", "_x", "9", "x" * 128])
def test_valid_ids(value):
    assert validate_id(value) == value


@pytest.mark.parametrize("value", ["", ".", "..", "../x", "a/b", "-x", ".x", "a b", "é", "a\nb", "x" * 129,
                                   "a@b", "a*", "+x"])
def test_invalid_ids(value):
    with pytest.raises(UsageError, match="invalid run id"):
        validate_id(value, "run id")


@given(st.text(max_size=200))
def test_sanitize_id_always_valid(text):
    assert validate_id(sanitize_id(text)) == sanitize_id(text)


@pytest.mark.parametrize("command, job", [
    ("./my-task.sh", "my-task"),
    ("/usr/local/bin/backup", "backup"),
    ("backup.tar.gz", "backup"),
    (".hidden.sh", "hidden"),
    ("dir/", "dir"),
    ("my task.py", "my_task"),
    ("-weird", "_-weird"),
    ("", "job"),
])
def test_job_id_from_command(command, job):
    assert job_id_from_command([command, "arg"]) == job


def test_run_ids_sort_by_creation_time_and_are_valid():
    base = 1_700_000_000 * 10**9
    ids = [new_run_id(base + i * 1000) for i in range(0, 5000, 7)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for rid in ids[:10]:
        assert len(rid) == 15 and validate_id(rid, "run id")
    assert new_run_id() > ids[-1]




# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), ("1.5", 1.5), ("0", 0), ("1.5s", 1.5), ("500ms", 0.5), ("10m", 600), ("2min", 120),
    ("3sec", 3), ("1h30m", 5400), ("2d", 172800), ("1h", 3600), ("1m5ms", 60.005), (" 10s ", 10), ("10S", 10),
    (2.5, 2.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "1x", "s", "1h 30m", "-1", "-1s", "nan", "inf", "1.5.5s", "10mm",
                                  "h1", "1e400"])
def test_parse_duration_rejects(text):
    with pytest.raises(UsageError, match="--timeout"):
        parse_duration(text, "--timeout")


@given(st.integers(0, 99), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_parse_duration_compound_round_trip(d, h, m, s, ms):
    text = f"{d}d{h}h{m}m{s}s{ms}ms"
    assert parse_duration(text) == pytest.approx(d * 86400 + h * 3600 + m * 60 + s + ms / 1000)


@given(st.floats(min_value=0, max_value=MAX_DURATION_S, allow_nan=False, allow_infinity=False))
def test_parse_duration_bare_number_round_trip(x):
    assert parse_duration(repr(x)) == x
    assert parse_duration(f"{x:f}s") == pytest.approx(x, abs=1e-6)


@given(st.floats(min_value=MAX_DURATION_S, exclude_min=True, allow_nan=False, allow_infinity=False))
def test_parse_duration_beyond_the_ceiling_is_a_usage_error(x):
    with pytest.raises(UsageError, match="at most 100 years"):
        parse_duration(repr(x))


@given(st.one_of(st.none(), st.floats(allow_nan=False)))
def test_wait_slice_is_always_safe_for_blocking_calls(x):
    w = wait_slice(x)
    assert 0.0 <= w <= MAX_WAIT_S


def test_parse_instant():
    now = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    assert parse_instant("2026-01-01T12:00:00+02:00") == datetime(2026, 1, 1, 10, tzinfo=UTC).timestamp()
    assert parse_instant("2h", now=now) == (now - timedelta(hours=2)).timestamp()
    assert parse_instant("today", now=now) == datetime(2026, 3, 10, tzinfo=UTC).timestamp()
    assert parse_instant("yesterday", now=now) == datetime(2026, 3, 9, tzinfo=UTC).timestamp()
    naive = parse_instant("2026-01-01T00:00:00")
    assert naive == datetime(2026, 1, 1).astimezone().timestamp()  # naive = local time
    for bad in ("", "soon", "2026-13-01", "-2h"):
        with pytest.raises(UsageError, match="--since"):
            parse_instant(bad, "--since")


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_iso_has_offset_and_round_trips_to_the_millisecond(ts):
    text = iso(ts)
    dt = datetime.fromisoformat(text)
    assert dt.utcoffset() is not None
    assert abs(dt.timestamp() - ts) <= 0.001
    assert parse_instant(text) == pytest.approx(dt.timestamp())


def test_iso_none():
    assert iso(None) is None


@pytest.mark.parametrize("s, text", [(None, ""), (0, "0.0s"), (9.94, "9.9s"), (42.4, "42s"), (61, "1m01s"),
                                     (3600 * 2 + 60 * 3, "2h03m"), (86400 * 3 + 3600, "3d01h")])
def test_human_duration(s, text):
    assert human_duration(s) == text


# -- patterns --------------------------------------------------------------------------------


def run(job="job", rid="r1", tags=(), **kw) -> RunRecord:
    return RunRecord(job, rid, 1.0, tags=list(tags), **kw)


@pytest.mark.parametrize("patterns, matches", [
    (None, True), ([], True), ("backup", True), ("back*", True), ("b?ckup", True), ("[ab]ackup", True),
    ("[!b]ackup", False), ("other", False), ("r1", True), ("nightly", True), ("night*", True),
    ("backup@r1", True), ("backup@*", True), ("*@r2", False), ("r1@backup", False),
    ("!backup", False), ("!other", True), (["other", "nightly"], True), (["backup", "!nightly"], False),
    (["!x", "!y"], True), ("BACKUP", False),
])
def test_matcher(patterns, matches):
    r = run("backup", "r1", ["nightly", "db"])
    assert RunMatcher.parse(patterns)(r) is matches


@pytest.mark.parametrize("bad", ["", "!", "a b", "a\tb", "x@y@z", "[abc", "abc]", "a\x01"])
def test_matcher_rejects(bad):
    with pytest.raises(UsageError, match="invalid pattern"):
        RunMatcher.parse([bad])


def test_matcher_all_and_equality():
    assert RunMatcher.parse(None).all and RunMatcher.parse([]).all
    m = RunMatcher.parse(["a", "!b"])
    assert not m.all
    assert (m.include, m.exclude) == (("a",), ("b",))
    assert m == RunMatcher.parse(["a", "!b"]) and hash(m) == hash(RunMatcher.parse(["a", "!b"]))


def test_glob_to_sql():
    assert glob_to_sql("[!ab]*") == "[^ab]*"
    assert glob_to_sql("a?b*") == "a?b*"


# -- statuses --------------------------------------------------------------------------------

OUTCOMES = {
    Outcome.SUCCESS: {"COMPLETED", "SKIPPED"},
    Outcome.ABORTED: {"STOPPED", "INTERRUPTED", "CANCELLED"},
    Outcome.REJECTED: {"OVERLAP", "UNSATISFIED", "DENIED", "TIMEOUT", "DISABLED", "DUPLICATE"},
    Outcome.FAULT: {"FAILED", "ERROR", "LOST"},
}


def test_every_status_has_the_designed_outcome():
    assert {s.value for s in Status} == set().union(*OUTCOMES.values())
    for outcome, names in OUTCOMES.items():
        for name in names:
            assert Status(name).outcome is outcome


def test_status_parse_and_values():
    assert Status.parse("completed") is Status.COMPLETED
    assert Status("LOST") is Status.LOST
    assert str(Status.FAILED) == "FAILED" and Status.FAILED == "FAILED"
    with pytest.raises(UsageError, match="unknown status"):
        Status.parse("great")
    with pytest.raises(ValueError):
        Status("nope")
    assert [s.value for s in Stage] == ["CREATED", "RUNNING", "ENDED"]
    assert [s.value for s in State] == ["PENDING", "QUEUED", "WAITING", "EXECUTING"]


# -- run records -----------------------------------------------------------------------------

PUBLIC_KEYS = {
    "instance_id", "job_id", "run_id", "stage", "state", "detail", "status", "outcome", "exit_code",
    "created_at", "started_at", "ended_at", "duration_s", "tags", "host", "user", "pid", "child_pid", "cwd",
    "command", "run_key", "attempt_no", "rerun_of", "warnings", "progress", "coordination", "actions", "error",
    "stdout_path", "stderr_path",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

records = st.builds(
    RunRecord,
    job_id=st.sampled_from(["a", "job-1", "x.y"]),
    run_id=st.text("abc123", min_size=1, max_size=10),
    created_at=st.floats(0, 4e9),
    stage=st.sampled_from(list(Stage)),
    state=st.none() | st.sampled_from(list(State)),
    status=st.none() | st.sampled_from(list(Status)),
    exit_code=st.none() | st.integers(0, 255),
    started_at=st.none() | st.floats(0, 4e9),
    ended_at=st.none() | st.floats(0, 4e9),
    tags=st.lists(st.text("abc", min_size=1, max_size=4), max_size=3),
    command=st.none() | st.lists(st.text(max_size=10), max_size=3),
    warnings=st.lists(st.text(max_size=10), max_size=2),
    progress=st.none() | st.dictionaries(st.sampled_from(["event", "completed"]), json_values, max_size=2),
    extra=st.dictionaries(st.text(max_size=5), json_values, max_size=3),
)


@given(records)
def test_record_dict_round_trip_through_json(r):
    d = r.to_dict()
    assert RunRecord.from_dict(json.loads(json.dumps(d))).to_dict() == json.loads(json.dumps(d))
    assert RunRecord.from_dict(d) == r
    assert r.copy() == r and r.copy() is not r


@given(records)
def test_record_to_json_keys(r):
    j = r.to_json()
    assert set(j) == PUBLIC_KEYS
    assert j["instance_id"] == f"{r.job_id}@{r.run_id}"
    assert j["outcome"] == (r.status.outcome.value if r.status else None)
    if r.stage is Stage.ENDED:
        assert j["state"] is None and j["detail"] is None
    json.dumps(j)


def test_record_duration_and_activity():
    r = run(started_at=10.0, ended_at=12.5, stage=Stage.ENDED, status=Status.COMPLETED)
    assert r.duration == 2.5 and not r.active and r.outcome == "SUCCESS"
    assert run().duration is None and run().active
    assert run(started_at=10.0, ended_at=9.0).duration == 0.0
    with pytest.raises(TypeError):
        RunRecord("a", "b", 1.0, nonsense=1)


def test_copy_is_deep():
    r = run(tags=["t"], extra={"k": [1]})
    c = r.copy()
    c.tags.append("u")
    c.extra["k"].append(2)
    assert r.tags == ["t"] and r.extra == {"k": [1]}


def test_event_json_and_wire():
    r = run(stage=Stage.RUNNING, state=State.EXECUTING)
    ev = Event("executing", r, 1_700_000_000.0, {"why": "x"})
    j = ev.to_json()
    assert {"event", "instance_id", "job_id", "stage", "state", "status", "timestamp"} <= set(j)
    assert (j["event"], j["stage"], j["state"], j["status"]) == ("executing", "RUNNING", "EXECUTING", None)
    back = Event.from_wire(json.loads(json.dumps(ev.to_wire())))
    assert (back.event, back.timestamp, back.detail, back.run) == ("executing", ev.timestamp, {"why": "x"}, r)


@given(json_values)
def test_jsonenc_matches_json(value):
    assert dumps(value) == json.dumps(value, separators=(",", ":"))


# -- progress --------------------------------------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    (b"event=[downloading] completed=[3] total=[10] unit=[files]",
     {"event": "downloading", "completed": 3, "total": 10, "unit": "files"}),
    (b"event=upload completed=2.5 total=10 unit=MB", {"event": "upload", "completed": 2.5, "total": 10,
                                                       "unit": "MB"}),
    (b"result=[all good now]", {"result": "all good now"}),
    (b"[info] completed=7 of total=9 rows", {"completed": 7, "total": 9}),
    (b"completed=[1,000]", {"completed": "1,000"}),
    (b"event=\xff\xfe", {"event": "\ufffd\ufffd"}),
    (b"pre_completed=3 x-total=4", None),
    (b"foo=bar", None),
    (b"no pairs here", None),
    (b"", None),
])
def test_parse_progress(line, expected):
    assert parse_progress(line) == expected


def test_format_progress():
    assert format_progress(None) == ""
    assert format_progress({"event": "dl", "completed": 3, "total": 10, "unit": "files"}) == "dl 3/10 files (30%)"
    assert format_progress({"completed": 5}) == "5"
    assert format_progress({"result": "ok"}) == "result: ok"


# -- stats -----------------------------------------------------------------------------------


def ended_run(job, i, duration, status=Status.COMPLETED):
    return RunRecord(job, f"r{i}", float(i), stage=Stage.ENDED, status=status, started_at=100.0,
                     ended_at=100.0 + duration)


def test_job_stats():
    runs = [ended_run("a", i, float(i)) for i in range(1, 101)]
    runs += [ended_run("b", 1, 1.0, Status.FAILED), RunRecord("b", "live", 500.0, stage=Stage.RUNNING)]
    a, b = job_stats(runs)
    assert (a["job_id"], a["runs"], a["ended"], a["succeeded"], a["success_rate"]) == ("a", 100, 100, 100, 1.0)
    assert (a["p50_s"], a["p95_s"], a["max_s"]) == (51.0, 95.0, 100.0)
    assert a["last_status"] == "COMPLETED"
    assert (b["runs"], b["active"], b["failed"], b["success_rate"], b["last_status"]) == (2, 1, 1, 0.0, None)
    assert job_stats([]) == []


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=60))
def test_stats_percentiles_are_order_statistics(durations):
    (s,) = job_stats([ended_run("j", i, d) for i, d in enumerate(durations)])
    values = sorted(round(d, 3) for d in durations)
    n = len(values)
    assert s["p50_s"] in values and s["p95_s"] in values
    assert s["p50_s"] <= s["p95_s"] <= s["max_s"] == pytest.approx(max(durations), abs=1e-3)
    assert sum(v <= s["p50_s"] for v in values) >= n / 2
    assert sum(v >= s["p50_s"] for v in values) >= n / 2
    assert sum(v <= s["p95_s"] for v in values) >= math.floor(0.95 * n)


# -- tails -----------------------------------------------------------------------------------


def reference_tail(content: bytes, n: int) -> list[bytes]:
    if n <= 0 or not content:
        return []
    body = content[:-1] if content.endswith(b"\n") else content
    return body.split(b"\n")[-n:]


@pytest.mark.parametrize("content, n, expected", [
    (b"", 5, []),
    (b"\n", 1, [b""]),
    (b"\n\n", 5, [b"", b""]),
    (b"one", 1, [b"one"]),
    (b"a\nb\nc\n", 2, [b"b", b"c"]),
    (b"a\nb\nc", 2, [b"b", b"c"]),
    (b"a\nb\n", 10, [b"a", b"b"]),
    (b"a\r\nb\r\n", 1, [b"b\r"]),
    (b"a\nb\n", 0, []),
])
def test_last_lines_edges(tmp_path, content, n, expected):
    p = tmp_path / "out"
    p.write_bytes(content)
    assert last_lines(str(p), n) == expected


def test_last_lines_missing_file_and_end_offset(tmp_path):
    assert last_lines(str(tmp_path / "nope"), 3) == []
    p = tmp_path / "out"
    p.write_bytes(b"a\nb\nc\nd\n")
    assert last_lines(str(p), 2, end=4) == [b"a", b"b"]
    assert last_lines(str(p), 2, end=0) == []


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30), st.booleans(),
       st.integers(0, 35), st.integers(1, 64))
def test_last_lines_matches_reference(tmp_path_factory, lines, trailing, n, block):
    content = b"\n".join(lines) + (b"\n" if trailing and lines else b"")
    p = tmp_path_factory.mktemp("tail") / "out"
    p.write_bytes(content)
    assert last_lines(str(p), n, block=block) == reference_tail(content, n)
