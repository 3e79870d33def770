"""The reviewer console in headless Chromium (Playwright driving the Debian chromium): an approver
signs in with their token, sees the held export live, approves it with a justification, and the held
chromadb client completes. Request content a requester controls is shown as text, never run."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_approvals_chroma import Env
from tests.support.servers import Chroma, Gateway, Idp, http_call

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox: CI runs as root in a container. The rest keeps Chromium off the network (no updates,
# no component downloads, no sync): the test must only ever talk to loopback.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser_page() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (./run.sh setup installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            yield page
        finally:
            browser.close()


def test_console_approve_releases_the_held_client(browser_page: Any, gateway_factory: Callable[..., Gateway],
                                                   chroma: Chroma, idp: Idp, tmp_path: Path) -> None:
    env = Env(gateway_factory, chroma, idp, tmp_path)
    name, cid = env.collection("patients")
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(env.admin_url + "/")
    assert page.text_content("#who") == "not signed in"
    page.fill("#token", idp.token("approver-1"))
    page.click("#use-token")
    page.wait_for_selector("#who:has-text('signed in as Privacy Officer One')")

    # A requester-controlled key that would run script if the console ever used innerHTML.
    token = idp.token("clin-1")
    env.open(name, token)
    path = f"/api/v2/tenants/default_tenant/databases/default_database/collections/{cid}/get"
    hostile = threading.Thread(target=http_call, args=("POST", env.gw.url + path,
                                                        {"<img src=x onerror=window.pwned=1>": 1}),
                               kwargs={"headers": {"Authorization": f"Bearer {token}"}, "timeout": 60}, daemon=True)
    hostile.start()
    client = env.export("clin-1", name)

    admin = env.approver("approver-2")
    holds: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while len(holds) < 2:
        assert time.monotonic() < deadline, "the two holds did not appear"
        time.sleep(0.1)
        holds = [h for h in admin.pending() if h["collection"] == name]
    # The console lists both live (it polls), with time left counting down.
    for h in holds:
        page.wait_for_selector(f"tr[data-hold-id='{h['hold_id']}']", timeout=15000)
    hostile_hold = next(h for h in holds if "<img" in json.dumps(h["summary"]))
    export_hold = next(h for h in holds if h is not hostile_hold)
    hostile_row = page.locator(f"tr[data-hold-id='{hostile_hold['hold_id']}']")
    assert "<img src=x onerror=window.pwned=1>" in hostile_row.locator(".summary").inner_text()
    assert page.evaluate("window.pwned") is None
    assert page.locator("img").count() == 0

    row = page.locator(f"tr[data-hold-id='{export_hold['hold_id']}']")
    assert "clin-1" in row.inner_text() and "export" in row.inner_text()
    assert ":" in row.locator(".left").inner_text()
    # Approve without a justification: refused in the page, the hold stays pending.
    row.locator("button.approve").click()
    page.wait_for_selector("#error:has-text('justification is required')")
    assert client.running()
    row.locator("textarea.justification").fill("checked with the data steward, ticket PRIV-9")
    row.locator("button.approve").click()
    [result] = client.result(timeout=30)
    assert result["ok"] and sorted(result["result"]["ids"]) == ["n1", "n2", "n3"]
    page.wait_for_selector(f"tr[data-hold-id='{export_hold['hold_id']}']", state="detached", timeout=15000)
    page.wait_for_selector("#decisions td.outcome-approved", timeout=15000)
    assert "checked with the data steward, ticket PRIV-9" in page.inner_text("#decisions")

    hostile_row.locator("textarea.justification").fill("not a real request")
    hostile_row.locator("button.deny").click()
    hostile.join(30)
    assert not hostile.is_alive()
    assert errors == []
