"""The seed README's three examples, as written, against temp dirs and fake services.

The bodies between the `# --- seed` markers are copied from the README unchanged;
only the fake services they call (cut_apples, payment_api, ...) live here.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import runcue
from runcue.models import WorkState

from ._helpers import run

# ----------------------------------------------------------------- fakes

_lock = threading.Lock()
calls: dict[str, list[Any]] = {}


def _record(kind: str, value: Any) -> None:
    with _lock:
        calls.setdefault(kind, []).append(value)


def cut_apples(apple_ids: list[int]) -> list[str]:
    _record("cut", list(apple_ids))
    return [f"slice-{a}-{i}" for a in apple_ids for i in range(4)]


def load_slices(job_id: str) -> list[str]:
    return json.loads(Path(f"prep/{job_id}/slices.json").read_text())["slices"]


def bake_pie(slices: list[str]) -> None:
    _record("bake", len(slices))


class FakePage:
    def __init__(self, n: int) -> None:
        self.n = n

    def save(self, path: str) -> None:
        Path(path).write_bytes(b"PNG page %d" % self.n)


def pdf_to_images(pdf_path: str) -> list[FakePage]:
    _record("split", pdf_path)
    return [FakePage(i) for i in range(int(Path(pdf_path).read_text()))]


def call_openai_vision(page_path: str) -> str:
    _record("vision", page_path)
    return f"text of {Path(page_path).name}"


class _PaymentAPI:
    def charge(self, amount: int, idempotency_key: str) -> SimpleNamespace:
        _record("charge", (idempotency_key, amount))
        return SimpleNamespace(id=f"tx-{idempotency_key}")


class _EmailAPI:
    def send(self, to: str, template: str) -> None:
        _record("email", (to, template))


payment_api = _PaymentAPI()
email_api = _EmailAPI()


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    calls.clear()
    return tmp_path


# ------------------------------------------------------ example 1: apple pie


def apple_pie_factory() -> runcue.Cue:
    # --- seed example 1
    cue = runcue.Cue()
    cue.service("knife", concurrent=1)    # One knife, serial
    cue.service("oven", concurrent=2)     # Two ovens

    MAX_SLICE_AGE = 86400  # 24 hours

    def slices_valid(job_id):
        path = Path(f"prep/{job_id}/slices.json")
        if not path.exists():
            return False
        data = json.loads(path.read_text())
        return (time.time() - data["sliced_at"]) < MAX_SLICE_AGE

    @cue.task("slice_apples", uses="knife")
    def slice_apples(work):
        slices = cut_apples(work.params["apple_ids"])
        Path(f"prep/{work.params['job_id']}/slices.json").write_text(
            json.dumps({"slices": slices, "sliced_at": time.time()})
        )
        return {"count": len(slices)}

    @cue.task("make_pie", uses="oven")
    def make_pie(work):
        slices = load_slices(work.params["job_id"])
        bake_pie(slices)
        return {"pie": f"output/{work.params['job_id']}/pie.json"}

    @cue.is_ready
    def is_ready(work):
        if work.task == "make_pie":
            return slices_valid(work.params["job_id"])
        return True

    @cue.is_stale
    def is_stale(work):
        if work.task == "slice_apples":
            return not slices_valid(work.params["job_id"])
        return True
    # --- end seed
    return cue


def test_apple_pie_factory(workdir: Path) -> None:
    jobs = ["fresh", "stale", "none1", "none2"]
    for job in jobs:
        (workdir / "prep" / job).mkdir(parents=True)
    fresh = {"slices": ["s"] * 8, "sliced_at": time.time()}
    (workdir / "prep/fresh/slices.json").write_text(json.dumps(fresh))
    (workdir / "prep/stale/slices.json").write_text(
        json.dumps({"slices": ["old"], "sliced_at": time.time() - 2 * 86400})
    )

    async def main() -> dict[str, Any]:
        cue = apple_pie_factory()
        knife_peak = knife_now = 0
        skipped: list[str] = []

        @cue.on_start
        def on_start(work):
            nonlocal knife_peak, knife_now
            if work.task == "slice_apples":
                knife_now += 1
                knife_peak = max(knife_peak, knife_now)

        @cue.on_complete
        def on_complete(work, result, duration):
            nonlocal knife_now
            if work.task == "slice_apples":
                knife_now -= 1

        cue.on_skip(lambda work: skipped.append(work.params["job_id"]))
        async with cue:
            pies = [await cue.submit("make_pie", params={"job_id": j}) for j in jobs]  # pies first: they wait
            for i, job in enumerate(jobs):
                await cue.submit("slice_apples", params={"job_id": job, "apple_ids": [i, i + 10]})
        return {"pies": [await cue.get(p) for p in pies], "peak": knife_peak, "skipped": skipped}

    out = run(main())
    assert all(p.state is WorkState.COMPLETED and p.result["pie"].startswith("output/") for p in out["pies"])
    assert out["skipped"] == ["fresh"]  # fresh slices: no re-slicing
    assert sorted(ids[0] for ids in calls["cut"]) == [1, 2, 3]  # stale + missing ones re-sliced
    assert out["peak"] == 1  # one knife
    assert sorted(calls["bake"]) == [8, 8, 8, 8]  # every pie used fresh slices (4 per apple, 2 apples)


# ------------------------------------------------------ example 2: PDF pipeline


def pdf_pipeline() -> runcue.Cue:
    # --- seed example 2
    cue = runcue.Cue()
    cue.service("local", concurrent=4)
    cue.service("openai", rate="60/min", concurrent=5)

    @cue.task("split_pdf", uses="local")
    def split_pdf(work):
        pages = pdf_to_images(work.params["pdf_path"])
        for i, page in enumerate(pages):
            page.save(f"work/{work.params['job_id']}/pages/{i:03d}.png")
        return {"page_count": len(pages)}

    @cue.task("extract_text", uses="openai")
    def extract_text(work):
        text = call_openai_vision(work.params["page_path"])
        text_path = work.params["page_path"].replace(".png", ".txt")
        Path(text_path).write_text(text)
        return {"text_path": text_path}

    @cue.is_ready
    def is_ready(work):
        if work.task == "extract_text":
            return Path(work.params["page_path"]).exists()
        return True

    @cue.is_stale
    def is_stale(work):
        if work.task == "extract_text":
            output = work.params["page_path"].replace(".png", ".txt")
            return not Path(output).exists()
        return True
    # --- end seed
    return cue


def test_pdf_pipeline_and_reprocessing_pages(workdir: Path) -> None:
    job_id = "report"
    (workdir / f"work/{job_id}/pages").mkdir(parents=True)
    (workdir / "report.pdf").write_text("12")

    async def main() -> None:
        cue = pdf_pipeline()
        async with cue:
            for i in range(12):  # extraction queued before the split: it waits for the pages
                await cue.submit("extract_text", params={"page_path": f"work/{job_id}/pages/{i:03d}.png"})
            await cue.submit("split_pdf", params={"pdf_path": "report.pdf", "job_id": job_id})
        assert len(calls["vision"]) == 12
        for i in range(5, 11):
            Path(f"work/{job_id}/pages/{i:03d}.txt").unlink()
        calls.clear()

        async with cue:
            # --- seed: reprocess pages 5-10
            for i in range(5, 11):
                await cue.submit("extract_text", params={
                    "page_path": f"work/{job_id}/pages/{i:03d}.png"
                })
            # Pages exist—runs immediately. No need to re-split.
            # --- end seed
        assert "split" not in calls
        assert sorted(calls["vision"]) == [f"work/{job_id}/pages/{i:03d}.png" for i in range(5, 11)]
        assert all(w.state is WorkState.COMPLETED for w in await cue.list(limit=100))

    run(main())
    assert sorted(p.name for p in (workdir / f"work/{job_id}/pages").glob("*.txt")) == [
        f"{i:03d}.txt" for i in range(12)
    ]


# ----------------------------------------------- example 3: order fulfillment


def order_fulfillment() -> runcue.Cue:
    # --- seed example 3
    cue = runcue.Cue()
    cue.service("payment", rate="100/min")
    cue.service("email", rate="50/min")

    @cue.task("charge_payment", uses="payment")
    def charge_payment(work):
        order_id = work.params["order_id"]
        proof_path = Path(f"orders/{order_id}/payment.json")

        # Idempotent: check proof first
        if proof_path.exists():
            return json.loads(proof_path.read_text())

        result = payment_api.charge(
            amount=work.params["amount"],
            idempotency_key=order_id
        )

        proof_path.write_text(json.dumps({
            "charged_at": time.time(),
            "transaction_id": result.id
        }))
        return {"transaction_id": result.id}

    @cue.task("send_confirmation", uses="email")
    def send_confirmation(work):
        order_id = work.params["order_id"]
        proof_path = Path(f"orders/{order_id}/email_sent.json")

        if proof_path.exists():
            return json.loads(proof_path.read_text())

        email_api.send(to=work.params["email"], template="shipped")
        proof_path.write_text(json.dumps({"sent_at": time.time()}))
        return {"sent": True}

    @cue.is_ready
    def is_ready(work):
        order_id = work.params["order_id"]
        if work.task == "send_confirmation":
            return Path(f"orders/{order_id}/payment.json").exists()
        return True

    @cue.is_stale
    def is_stale(work):
        order_id = work.params["order_id"]
        if work.task == "charge_payment":
            return not Path(f"orders/{order_id}/payment.json").exists()
        if work.task == "send_confirmation":
            return not Path(f"orders/{order_id}/email_sent.json").exists()
        return True
    # --- end seed
    return cue


def test_order_fulfillment_with_proof_artifacts(workdir: Path) -> None:
    orders = [f"o{i}" for i in range(5)]
    for order in orders:
        (workdir / "orders" / order).mkdir(parents=True)

    async def submit_all(cue: runcue.Cue) -> list[str]:
        ids = []
        for n, order in enumerate(orders):
            email = {"order_id": order, "email": f"{order}@x"}
            ids.append(await cue.submit("send_confirmation", params=email))
            ids.append(await cue.submit("charge_payment", params={"order_id": order, "amount": 100 + n}))
        return ids

    async def main() -> None:
        cue = order_fulfillment()
        async with cue:
            first = await submit_all(cue)
        works = [await cue.get(i) for i in first]
        assert all(w is not None and w.state is WorkState.COMPLETED for w in works)
        assert sorted(c[0] for c in calls["charge"]) == orders
        assert sorted(e[0] for e in calls["email"]) == [f"{o}@x" for o in orders]

        skipped: list[str] = []
        restarted = order_fulfillment()  # "crash" and resubmit everything
        restarted.on_skip(lambda work: skipped.append(work.task))
        async with restarted:
            await submit_all(restarted)
        assert len(skipped) == 10
        assert len(calls["charge"]) == 5 and len(calls["email"]) == 5  # no double charge, no double email

    run(main())


def test_examples_do_not_need_a_running_loop_to_be_defined() -> None:
    for build in (apple_pie_factory, pdf_pipeline, order_fulfillment):
        assert isinstance(build(), runcue.Cue)
