"""Headless Chromium for tests: Debian's chromium driven by Playwright (no browser is downloaded)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Screenshots for a person to look at (tests only check they are not blank).
SHOTS = Path(os.environ.get("PHIGATE_SCREENSHOTS", ROOT / ".phigate" / "screenshots"))
# No sandbox: CI runs as root in a container. The rest keeps Chromium off the network (no updates,
# no component downloads, no sync): tests must only ever talk to loopback.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def chromium_page(width: int, height: int = 900) -> Iterator[Any]:
    """A Playwright page in headless Debian chromium; skips the test when either is missing."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (./run.sh setup installs it)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()
