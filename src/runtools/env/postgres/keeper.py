"""The keeper of an orphaned command on postgres: `taro stop` from any host, after its wrapper died.

A run's guardian (environment.py, `_guard`) starts this module in a fresh Python when it finds the
wrapper gone while the command runs on (it cannot do this itself: it only makes system calls).
It holds the run's keeper key and listens on its keeper channel; `taro stop` (`--interrupt`,
`--kill-after`) of that run from another host (PostgresEnvironment.stop_orphan) asks it, and it
stops the orphan exactly as `taro stop` on this host does (runtools.env.local.orphan: TERM the
command's group, KILL after the grace; the run ends STOPPED or INTERRUPTED, who asked recorded),
then answers with the run as it is afterwards. It holds no key that keeps the run alive: the
run's liveness stays its lease's. On this host `taro stop` still signals the orphan itself.

File descriptors from the guardian: 3 ends (EOF) when the guardian ends — the command ended, or
was killed because its lease was cut — and then so does the keeper (after any stop in hand); 4
carries "libpq URL\\nschema\\ninstance id\\n" (a pipe: the password never appears in argv).
"""

from __future__ import annotations

import os
import select

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _read_all(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    os.close(fd)
    return out


def main() -> None:
    import _thread

    from runtools.env.postgres import PostgresEnvironment
    from runtools.env.postgres.environment import send
    from runtools.model.jsonenc import dumps, loads

    url, schema, iid = _read_all(4).decode().split("\n")[:3]
    url += ("&" if "?" in url else "?") + f"schema={schema}"
    env = PostgresEnvironment(url, create=False)
    inflight: list = []  # one lock per stop in hand, released once answered: all answered before we go
    try:
        run = env.get_run(iid)
        if run is None or not run.active:
            return
        hub = env._hub()

        def stop(req: dict, rid: str, to: str, done: Any) -> None:
            resp: dict[str, Any]
            try:
                ended = env.stop_orphan(run, bool(req.get("interrupt")), req.get("by"), float(req.get("grace", 10.0)))
                resp = {"ok": True, "run": ended.to_dict() if ended is not None else None}
            except Exception as e:
                resp = {"ok": False, "error": str(e)}
            finally:
                with hub.lock:
                    try:
                        send(hub.conn, to, dumps({"id": rid, "resp": resp}))
                    except Exception:
                        pass
                done.release()

        def on_request(payload: str) -> None:
            try:
                msg = loads(payload)
                req, rid, to = msg["req"], msg["id"], msg["reply"]
            except Exception:
                return
            done = _thread.allocate_lock()
            done.acquire()
            inflight.append(done)
            _thread.start_new_thread(stop, (req, rid, to, done))

        key, channel = env._keeper_key(iid), env._keeper_channel(iid)
        hub.listen(channel, on_request)
        hub.hold(key)
        select.select([3], [], [])  # until the guardian ends: the command is gone
        hub.release(key)
        hub.unlisten(channel, on_request)
        for done in list(inflight):  # a stop in hand finishes (and answers) first
            done.acquire()
    finally:
        env.close()


if __name__ == "__main__":
    try:
        main()
    except Exception:
        pass  # nothing to tell: nobody reads this process's output
