"""The reviewer console in headless Chromium (Playwright driving the Debian chromium): an approver
signs in at the real OpenID provider (authorization code with PKCE), sees the held export as a plain
summary (who, what, which collection, when in UTC, purpose, how many records), approves it with a
justification, and the held chromadb client completes. Request content a requester controls is shown
as text, never run. The layout holds at 800 px; screenshots of the login and of a hold are written for
review."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_approvals_chroma import Env
from tests.support.browser import SHOTS, chromium_page
from tests.support.servers import Chroma, Gateway, Idp, http_call

pytestmark = pytest.mark.integration

@pytest.fixture
def browser_page() -> Iterator[Any]:
    with chromium_page(800) as page:  # the console must work at 800 px
        yield page


def sign_in(page: Any, admin_url: str, who: str) -> None:
    """The real login: the console sends the browser to the IdP, the person signs in, the IdP sends
    them back with a code, and the console exchanges it (PKCE) for their access token."""
    page.goto(admin_url + "/")
    page.click("#sign-in")
    page.wait_for_selector("input[name=login]", timeout=15000)  # the provider's own login form
    page.fill("input[name=login]", who)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    page.wait_for_selector("button[type=submit]:has-text('Continue')", timeout=15000)  # consent
    page.click("button[type=submit]:has-text('Continue')")
    page.wait_for_url(admin_url + "/", timeout=15000)


def no_horizontal_overflow(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_console_approve_releases_the_held_client(browser_page: Any, gateway_factory: Callable[..., Gateway],
                                                   chroma: Chroma, idp: Idp, tmp_path: Path) -> None:
    env = Env(gateway_factory, chroma, idp, tmp_path)
    name, cid = env.collection("patients")
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(env.admin_url + "/")
    assert page.text_content("#who") == "not signed in"
    page.wait_for_selector(f"#issuer:has-text('{idp.issuer}')")
    assert page.locator("#token").count() == 0, "no token is ever pasted"
    page.screenshot(path=str(SHOTS / "console-login.png"), full_page=True)
    assert no_horizontal_overflow(page)
    sign_in(page, env.admin_url, "approver-1")
    page.wait_for_selector("#who:has-text('signed in as Privacy Officer One (approver-1; approver)')")
    assert "code=" not in page.url  # the code is not left in the address bar or history
    # The token lives in the page's memory only.
    assert page.evaluate("JSON.stringify(Object.assign({}, sessionStorage, localStorage))") == "{}"

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
        page.wait_for_selector(f"article[data-hold-id='{h['hold_id']}']", timeout=15000)
    hostile_hold = next(h for h in holds if "<img" in json.dumps(h["summary"]))
    export_hold = next(h for h in holds if h is not hostile_hold)
    hostile_card = page.locator(f"article[data-hold-id='{hostile_hold['hold_id']}']")
    hostile_card.locator("details summary").click()
    assert "<img src=x onerror=window.pwned=1>" in hostile_card.locator(".request").inner_text()
    assert page.evaluate("window.pwned") is None
    assert page.locator("img").count() == 0

    card = page.locator(f"article[data-hold-id='{export_hold['hold_id']}']")
    text = card.inner_text()
    # A plain summary: who, what on which collection (by name, not its UUID), when (UTC, with the date),
    # purpose and how many records it would release.
    assert f"Dr. Clinician One (clin-1) asks to export collection “{name}”" in text
    requested = time.strftime("%Y-%m-%d", time.gmtime(export_hold["requested_at"]))
    assert re.search(rf"Requested\s+{requested} \d\d:\d\d:\d\d UTC", text), text
    assert re.search(r"Purpose\s+treatment", text), text
    assert re.search(r"Would release\s+every record in the collection \(no limit\)", text), text
    assert cid not in text and "null" not in text
    assert ":" in card.locator(".left").inner_text() and "UTC" in card.locator(".left").inner_text()
    assert no_horizontal_overflow(page)
    card.screenshot(path=str(SHOTS / "console-hold.png"))
    page.screenshot(path=str(SHOTS / "console-signed-in.png"), full_page=True)
    # Approve without a justification: refused in the page, the hold stays pending.
    card.locator("button.approve").click()
    page.wait_for_selector("#error:has-text('justification is required')")
    assert client.running()
    card.locator("textarea.justification").fill("checked with the data steward, ticket PRIV-9")
    card.locator("button.approve").click()
    [result] = client.result(timeout=30)
    assert result["ok"] and sorted(result["result"]["ids"]) == ["n1", "n2", "n3"]
    page.wait_for_selector(f"article[data-hold-id='{export_hold['hold_id']}']", state="detached", timeout=15000)
    page.wait_for_selector("#decisions td.outcome-approved", timeout=15000)
    decisions = page.inner_text("#decisions")
    assert "checked with the data steward, ticket PRIV-9" in decisions
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", decisions)
    assert no_horizontal_overflow(page)

    hostile_card.locator("textarea.justification").fill("not a real request")
    hostile_card.locator("button.deny").click()
    hostile.join(30)
    assert not hostile.is_alive()
    assert errors == []
    for shot in ("console-login.png", "console-hold.png", "console-signed-in.png"):
        assert (SHOTS / shot).stat().st_size > 5_000, f"{shot} is (nearly) blank"


def test_console_sign_in_refuses_a_person_without_a_reviewer_role(browser_page: Any,
                                                                    gateway_factory: Callable[..., Gateway],
                                                                    chroma: Chroma, idp: Idp, tmp_path: Path) -> None:
    env = Env(gateway_factory, chroma, idp, tmp_path)
    page = browser_page
    sign_in(page, env.admin_url, "clin-1")
    page.wait_for_selector("#error:has-text('the admin API is for reviewers')", timeout=15000)
    assert page.is_visible("#sign-in") and not page.is_visible("#work")
