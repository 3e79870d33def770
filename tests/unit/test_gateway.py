"""Gateway-wide behaviour: health endpoints, readiness, TLS-only listener (addons/gateway.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from mitmproxy.test import taddons, tflow

from addons import gateway
from addons.core import readiness
from addons.core.context import context
from addons.core.readiness import register_readiness
from addons.gateway import Gateway


@pytest.fixture(autouse=True)
def _clean_readiness() -> Iterator[None]:
    saved = dict(readiness._readiness)
    readiness._readiness.clear()  # checks registered by addons other tests built are not ours
    yield
    readiness._readiness.clear()
    readiness._readiness.update(saved)


def plain_flow(path: str) -> tflow.HTTPFlow:
    f = tflow.tflow()
    f.request.path = path
    f.client_conn.timestamp_tls_setup = None  # what mitmproxy's tls_established reads
    return f


def test_plain_http_refused_unless_asked_for() -> None:
    gw = Gateway()
    with taddons.context(gw):
        f = plain_flow("/api/v2/heartbeat")
        gw.request(f)
        assert f.response is not None and f.response.status_code == 400
        assert f.response.json()["error"] == "tls_required"
        assert context(f).refusal is not None


def test_tls_flows_pass_on() -> None:
    gw = Gateway()
    with taddons.context(gw):
        f = tflow.tflow()
        f.client_conn.timestamp_tls_setup = 1.0
        gw.request(f)
        assert f.response is None


def test_health_and_readiness() -> None:
    gw = Gateway()
    with taddons.context(gw) as tctx:
        tctx.configure(gw, phigate_allow_plain_http=True)
        f = plain_flow("/-/healthz")
        gw.request(f)
        assert f.response is not None and f.response.json() == {"status": "ok"}
        register_readiness("audit", lambda: "audit store is not writable")
        f = plain_flow("/-/readyz")
        gw.request(f)
        assert f.response is not None and f.response.status_code == 503
        assert f.response.json()["reasons"] == {"audit": "audit store is not writable"}
        assert context(f).answered_by_gateway


def test_a_readiness_check_that_raises_means_not_ready() -> None:
    def broken() -> str | None:
        raise OSError("disk")

    register_readiness("broken", broken)
    assert "broken" in readiness.not_ready_reasons()


def test_missing_required_options_stop_the_gateway(caplog: pytest.LogCaptureFixture) -> None:
    gw = Gateway()
    with taddons.context(gw) as tctx:
        stopped: list[bool] = []
        tctx.master.shutdown = lambda: stopped.append(True)  # type: ignore[method-assign]
        gw.running()
        assert stopped == [True]
        assert "phigate_rules is not set" in caplog.text
        assert "phigate_profile is not set" in caplog.text


def test_rules_option_must_be_a_folder(tmp_path) -> None:
    gw = Gateway()
    with taddons.context(gw) as tctx, pytest.raises(Exception, match="is not a folder"):
        tctx.configure(gw, phigate_rules=str(tmp_path / "nope"))


def test_connections_to_the_backend_are_lazy() -> None:
    # A refused request must never have opened a backend connection (mitmproxy's default is eager).
    from mitmproxy.addons.proxyserver import Proxyserver

    gw = Gateway()
    with taddons.context(Proxyserver(), gw) as tctx:
        tctx.configure(gw, connection_strategy="eager")
        assert tctx.options.connection_strategy == "lazy"


def test_plain_http_follows_the_option_both_ways() -> None:
    # The option is read at configure (not per request): each change must still take effect.
    gw = Gateway()
    with taddons.context(gw) as tctx:
        for allow in (True, False, True):
            tctx.configure(gw, phigate_allow_plain_http=allow)
            flow = plain_flow("/api/v2/heartbeat")
            gw.request(flow)
            assert (flow.response is None) is allow, f"phigate_allow_plain_http={allow}"


def test_phigate_logger_follows_the_console_verbosity() -> None:
    # Under mitmdump the root logger is at DEBUG: a per-request log.debug would build, format and
    # relay (as an add_log event to every addon) a record nobody prints unless the phigate logger
    # stops it at the verbosity termlog prints.
    phigate_log = logging.getLogger("phigate")
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.DEBUG)
    gw = Gateway()
    try:
        with taddons.context(gw) as tctx:
            tctx.options.add_option("termlog_verbosity", str, "info", "as mitmproxy's termlog declares it")
            tctx.configure(gw, termlog_verbosity="info")
            assert not phigate_log.isEnabledFor(logging.DEBUG)
            assert phigate_log.isEnabledFor(logging.INFO)
            tctx.configure(gw, termlog_verbosity="debug")
            assert phigate_log.isEnabledFor(logging.DEBUG)
            tctx.configure(gw, termlog_verbosity="error")
            assert not phigate_log.isEnabledFor(logging.WARNING)
            gw.done()
            assert phigate_log.level == logging.NOTSET  # handed back at shutdown
    finally:
        phigate_log.setLevel(logging.NOTSET)
        root.setLevel(saved)


def test_tunnel_options_are_forced_off() -> None:
    gw = Gateway()
    with taddons.context(gw) as tctx:
        tctx.options.rawtcp = True
        tctx.options.websocket = True
        tctx.configure(gw, rawtcp=True, websocket=True)
        assert tctx.options.rawtcp is False and tctx.options.websocket is False


@pytest.mark.parametrize("status", [101, 100, 103])
def test_a_switching_answer_is_refused_and_the_connection_closed(status: int) -> None:
    gw = Gateway()
    with taddons.context(gw):
        f = tflow.tflow(resp=True)
        assert f.response is not None
        f.response.status_code = status
        f.response.headers["upgrade"] = "websocket"
        gw.response(f)
        assert f.response.status_code == 502
        assert f.response.json()["error"] == "upgrade_refused"
        assert f.response.headers["connection"] == "close"


@pytest.mark.parametrize(("method", "authority", "headers", "error"), [
    ("CONNECT", "backend:443", {}, "tunnel_refused"),
    ("GET", "other-host:80", {}, "tunnel_refused"),
    ("GET", "", {"upgrade": "websocket", "connection": "upgrade"}, "upgrade_refused"),
])
def test_tunnel_requests_are_refused(method: str, authority: str, headers: dict[str, str], error: str) -> None:
    gw = Gateway()
    with taddons.context(gw):
        f = tflow.tflow()
        f.client_conn.timestamp_tls_setup = 1.0
        f.request.method = method
        f.request.authority = authority
        f.request.headers.update(headers)
        gw.request(f)
        assert f.response is not None and f.response.status_code == 400
        assert f.response.json()["error"] == error


def test_readyz_names_rejected_rule_edits_and_stays_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    from addons.config import rulefiles

    monkeypatch.setattr(rulefiles, "rejected_edits", lambda: {"rules/policy.yaml": "bad value 'sometimes'"})
    gw = Gateway()
    with taddons.context(gw) as tctx:
        tctx.configure(gw, phigate_allow_plain_http=True)
        f = plain_flow("/-/readyz")
        gw.request(f)
        assert f.response is not None and f.response.status_code == 200
        assert f.response.json() == {"status": "ready",
                                     "rejected_rule_edits": {"rules/policy.yaml": "bad value 'sometimes'"}}


async def test_backend_check_says_why_without_the_address() -> None:
    import socket

    from addons.request.upstream_call import Upstream

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    why = await gateway.check_backend(Upstream("http", "127.0.0.1", port), "/api/v2/healthcheck")
    assert why is not None and "GET /api/v2/healthcheck" in why and str(port) not in why


def test_backend_target_reads_the_reverse_mode() -> None:
    gw = Gateway()
    with taddons.context(gw) as tctx:
        tctx.options.mode = ["reverse:https://db.internal:8000@8443"]
        target = gateway.backend_target()
        assert target is not None
        upstream, path = target
        assert (upstream.scheme, upstream.host, upstream.port, path) == ("https", "db.internal", 8000, "/")
