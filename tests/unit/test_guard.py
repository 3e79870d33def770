"""Fail-closed hook wrappers (addons/core/guard.py): any exception is a refusal, never a pass."""

from __future__ import annotations

import logging

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from addons.core.context import Stage, context
from addons.core.guard import fail_closed


class Raising:
    @fail_closed(Stage.POLICY, 500)
    def request(self, flow: http.HTTPFlow) -> None:
        raise KeyError("patient John Smith")  # the message carries PHI: it must not be logged

    @fail_closed(Stage.MASKING, 502)
    async def response(self, flow: http.HTTPFlow) -> None:
        raise ValueError("secret-token-value")


def test_sync_hook_exception_becomes_refusal(caplog: pytest.LogCaptureFixture) -> None:
    f = tflow.tflow()
    with caplog.at_level(logging.ERROR, logger="phigate"):
        Raising().request(f)
    assert f.response is not None and f.response.status_code == 500
    body = f.response.json()
    assert body["error"] == "gateway_error" and "policy" in body["detail"]
    assert context(f).refusal is not None and context(f).refusal.stage == Stage.POLICY
    assert "KeyError" in caplog.text and "John Smith" not in caplog.text


async def test_async_hook_exception_replaces_the_upstream_response(caplog: pytest.LogCaptureFixture) -> None:
    f = tflow.tflow(resp=True)
    original = f.response.content
    with caplog.at_level(logging.ERROR, logger="phigate"):
        await Raising().response(f)
    assert f.response.status_code == 502 and f.response.content != original
    assert "secret-token-value" not in caplog.text and "secret-token-value" not in f.response.text
