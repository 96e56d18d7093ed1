"""GET /api/events: Server-Sent Events of lifecycle changes, with ids a client resumes from."""

from __future__ import annotations

import threading

from ._serve import sse


def _collect(served, out: list, ready: threading.Event, until_ended: str, headers=None) -> None:
    with served.client() as c, c.stream("GET", "/api/events", headers=headers or {}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        ready.set()
        for ev in sse(resp):
            out.append(ev)
            if ev["data"].get("event") == "ended" and ev["data"]["job_id"] == until_ended:
                return


def test_events_stream_live_and_resume_with_last_event_id(cli, served, wait_until):
    got: list = []
    ready = threading.Event()
    t = threading.Thread(target=_collect, args=(served, got, ready, "evt"), daemon=True)
    t.start()
    assert ready.wait(10)
    wait_until(lambda: served.get("/metrics").status_code == 200)  # the hub is subscribed by now
    assert cli.run("--id", "evt", "--", "echo", "hi").returncode == 0
    t.join(15)
    assert not t.is_alive()
    names = [e["data"]["event"] for e in got]
    assert names[0] == "created" and names[-1] == "ended", names
    assert "executing" in names
    last = got[-1]["data"]
    assert last["run"]["status"] == "COMPLETED" and last["instance_id"].startswith("evt@")
    assert set(last) >= {"event", "instance_id", "job_id", "run_id", "stage", "state", "status", "timestamp",
                         "detail", "run"}  # the same object as `taro listen --json`
    ids = [e["id"] for e in got]
    assert len(set(ids)) == len(ids)

    # resume after the first event: the rest is replayed, in order, without a gap
    again: list = []
    ready2 = threading.Event()
    t2 = threading.Thread(target=_collect, args=(served, again, ready2, "evt"),
                          kwargs={"headers": {"Last-Event-ID": ids[0]}}, daemon=True)
    t2.start()
    t2.join(15)
    assert not t2.is_alive()
    assert [e["id"] for e in again] == ids[1:]

    # an id the server cannot know (another server, or too old): a `reset` tells the client to reload
    with served.client() as c, c.stream("GET", "/api/events", params={"timeout": "0.5"},
                                        headers={"Last-Event-ID": "deadbeef-3"}) as resp:
        evs = list(sse(resp))
    assert [e.get("event") for e in evs] == ["reset"]


def test_events_filter_by_pattern_and_timeout(cli, served):
    assert cli.run("--id", "other", "--", "true").returncode == 0
    assert cli.run("--id", "wanted", "--", "true").returncode == 0
    with served.client() as c, c.stream("GET", "/api/events",
                                        params={"pattern": "wanted", "timeout": "1s",
                                                "last_event_id": f"{_epoch(served)}-0"}) as resp:
        evs = list(sse(resp))
    assert evs and all(e["data"]["job_id"] == "wanted" for e in evs)  # replayed from the epoch's start
    assert served.get("/api/events", params={"timeout": "soon"}).status_code == 400


def _epoch(served) -> str:
    with served.client() as c, c.stream("GET", "/api/events", params={"timeout": "0.1"},
                                        headers={"Last-Event-ID": "x-1"}) as resp:
        for line in resp.iter_lines():
            if line.startswith("id: "):
                return line[4:].split("-")[0]
    raise AssertionError("no id")
