"""The dashboard in a real headless browser (Debian's chromium driven by Playwright): sign in,
see a run appear live, follow its output, approve a pending run, stop a running one.

Screenshots go to $RUNTOOLS_SCREENSHOTS (default: the test's tmp dir)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import need_service

from ._serve import OPERATE, READ

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser():
    need_service(os.path.exists(CHROMIUM), "Debian chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield b
        b.close()


def shots(tmp_path: Path) -> Path:
    d = Path(os.environ.get("RUNTOOLS_SCREENSHOTS") or tmp_path / "shots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def sign_in(page, url: str, token: str) -> None:
    page.goto(url + "/")
    assert page.locator("input[name=token]").is_visible()
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#view h2")


def test_sign_in_live_runs_output_approve_and_stop(cli, served, browser, tmp_path):
    out = shots(tmp_path)
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.goto(served.url + "/")
    page.fill("input[name=token]", "not-the-token")
    page.click("button[type=submit]")
    assert page.locator(".err").inner_text() == "That token is not valid."
    sign_in(page, served.url, OPERATE)
    (cookie,) = ctx.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert OPERATE not in cookie["value"]
    page.wait_for_selector("#conn.live")

    # a run appears live (SSE), with its state
    runner = cli.spawn_gated("live-job", before="echo hello-from-run; echo progress 1/4")
    row = page.locator("#active tr[data-iid^='live-job@']")
    row.wait_for()
    page.locator("#active tr[data-iid^='live-job@'] .state", has_text="EXECUTING").wait_for()
    # a pending run lands in the approvals inbox
    gated = cli.spawn_run("--id", "deploy", "--approval", "ops", "--", "true")
    page.locator("#approvals tr[data-iid^='deploy@'] button", has_text="Approve").wait_for()
    page.screenshot(path=str(out / "dashboard.png"), full_page=True)

    # the page's control needs its CSRF token: a bare POST with the cookie is refused
    status = page.evaluate("""async () => (await fetch('/api/jobs/x/disable', {method: 'POST'})).status""")
    assert status == 403

    page.locator("#approvals tr[data-iid^='deploy@'] button", has_text="Approve").click()
    assert gated.wait(15) == 0
    page.locator("#approvals tr[data-iid^='deploy@']").wait_for(state="detached")
    rec = cli.history("deploy")[0]
    assert rec["actions"][0]["by"] == "alice (taro serve)"

    # the run's page follows its output live
    page.locator("#active tr[data-iid^='live-job@'] a").click()
    page.locator("#output", has_text="hello-from-run").wait_for()
    page.screenshot(path=str(out / "run.png"), full_page=True)

    # stop it, with a confirmation
    page.locator("button", has_text="Stop").first.click()
    page.locator("#modal-text", has_text="Stop live-job@").wait_for()
    page.click("#modal-ok")
    page.locator("dl.record .state", has_text="STOPPED").wait_for(timeout=15000)
    runner.wait(10)
    rec = cli.history("live-job")[0]
    assert rec["status"] == "STOPPED" and rec["actions"][-1]["by"] == "alice (taro serve)"
    page.screenshot(path=str(out / "run-stopped.png"), full_page=True)

    # the job page: durations chart and success rate
    for i in range(3):
        cli.run("--id", "charted", "--", "sh", "-c", f"exit {int(i == 1)}")
    page.goto(served.url + "/#/job/charted")
    page.locator(".chart svg rect").nth(2).wait_for()
    assert "67%" in page.locator(".stats").inner_text()
    page.goto(served.url + "/#/history?pattern=charted")
    page.locator("tr[data-iid^='charted@']").nth(2).wait_for()
    page.screenshot(path=str(out / "history.png"), full_page=True)
    ctx.close()


def test_read_token_page_has_no_controls_and_phone_layout(cli, served, browser, tmp_path):
    out = shots(tmp_path)
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                              has_touch=True)
    page = ctx.new_page()
    sign_in(page, served.url, READ)
    p = cli.spawn_gated("phone-job", before="echo hi")
    page.locator("#active tr[data-iid^='phone-job@']").wait_for()
    assert page.locator("tr[data-iid^='phone-job@'] button").count() == 0  # read: no Stop buttons
    # nothing wider than the phone's screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(out / "phone.png"), full_page=True)
    cli.release(p)
    assert p.wait(10) == 0
    ctx.close()
