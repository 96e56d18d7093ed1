"""taro serve over a postgres environment: the same API, reading through the Environment
contract; live events and output follow come through the database."""

from __future__ import annotations

import threading

from pg.server import postgres_url

from ._serve import Served, sse


def test_serve_a_postgres_environment(cli, tmp_path, wait_until):
    url = postgres_url()
    assert cli.run("-e", url, "--id", "pg-first", "--", "echo", "one").returncode == 0
    s = Served(cli, tmp_path, "-e", url)
    try:
        runs = s.get("/api/runs", params={"pattern": "pg-first"}).json()
        assert [r["status"] for r in runs] == ["COMPLETED"]
        assert s.get(f"/api/runs/{runs[0]['instance_id']}/output").text == "one\n"
        got: list = []
        ready = threading.Event()

        def listen() -> None:
            with s.client() as c, c.stream("GET", "/api/events", params={"pattern": "pg-live"}) as resp:
                ready.set()
                for ev in sse(resp):
                    got.append(ev["data"]["event"])
                    if ev["data"]["event"] == "ended":
                        return

        t = threading.Thread(target=listen, daemon=True)
        t.start()
        assert ready.wait(10)
        p = cli.spawn_gated("pg-live", "-e", url, before="echo live-line")
        iid = wait_until(
            lambda: next((r["instance_id"] for r in s.get("/api/runs", params={"active": "true"}).json()
                          if r["job_id"] == "pg-live" and r["state"] == "EXECUTING"), None), 15, "pg-live executing")
        with s.client() as c, c.stream("GET", f"/api/runs/{iid}/output", params={"follow": "true",
                                                                                 "stream": "stdout"}) as resp:
            chunks = resp.iter_bytes()
            buf = b""
            while b"live-line" not in buf:
                buf += next(chunks)
            assert s.post(f"/api/runs/{iid}/stop").status_code == 200
            for chunk in chunks:
                buf += chunk
        assert buf == b"live-line\n"
        p.wait(15)
        t.join(15)
        assert got[0] == "created" and got[-1] == "ended", got
        rec = s.get(f"/api/runs/{iid}").json()
        assert rec["status"] == "STOPPED" and rec["actions"][-1]["by"] == "alice (taro serve)"
    finally:
        s.stop()
