"""Runtime errors logged during mitmproxy's start-up window (addons/core/startup.py)."""

from __future__ import annotations

import logging

import pytest
from mitmproxy.addons.errorcheck import ErrorCheck

from addons.auth.jwks import FetchError, KeySet
from addons.core import startup


async def _unreachable(url: str) -> object:
    raise FetchError(f"{url} unreachable ([Errno 111] Connection refused)")


async def test_a_failed_key_fetch_during_start_up_is_a_warning_not_a_start_up_error(
        caplog: pytest.LogCaptureFixture) -> None:
    check = ErrorCheck()  # what mitmdump installs: it exits if it saw an ERROR when start-up ends
    try:
        assert startup.starting_up()
        keys = KeySet("http://127.0.0.1:9", fetch=_unreachable)
        with caplog.at_level(logging.INFO, logger="phigate"):
            assert await keys.refresh() is False
        assert check.logger.has_errored == []
        record = next(r for r in caplog.records if "cannot refresh signing keys" in r.getMessage())
        assert record.levelno == logging.WARNING
        assert keys.not_ready() is not None and "unreachable" in keys.not_ready()  # readiness says why
    finally:
        check.finish()
    # Once start-up is over, the same condition is an ERROR again.
    assert not startup.starting_up()
    caplog.clear()
    keys = KeySet("http://127.0.0.1:9", fetch=_unreachable)
    with caplog.at_level(logging.INFO, logger="phigate"):
        await keys.refresh()
    record = next(r for r in caplog.records if "cannot refresh signing keys" in r.getMessage())
    assert record.levelno == logging.ERROR


def test_configuration_errors_at_start_up_still_stop_the_process() -> None:
    # Only runtime conditions go through runtime_error; an ERROR logged any other way during
    # start-up is still seen by the check (a bad rule file must stop the gateway).
    check = ErrorCheck()
    try:
        logging.getLogger("phigate").error("phigate: rules/policy.yaml: bad rule")
        startup.runtime_error(logging.getLogger("phigate"), "phigate: issuer unreachable")
        assert [r.getMessage() for r in check.logger.has_errored] == ["phigate: rules/policy.yaml: bad rule"]
    finally:
        check.finish()
