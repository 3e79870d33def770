"""The same gateway behaviour on both runners: stock `mitmdump -s addons/chain.py` and the lean engine.

The rest of the suite runs on one runner (PHIGATE_TEST_RUNNER, default mitmdump); this module always
runs a representative subset on both and compares what a client and the backend see: the gateway's
own endpoints, identity refusals, policy decisions, the credential swap, a real chromadb session,
and the built-ins the lean engine keeps for a reverse proxy (h2c upgrade stripped, Alt-Svc
rewritten to the gateway's port).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import BACKEND_CREDENTIAL
from tests.support.servers import RUNNERS, Chroma, Gateway, Idp, RecordingUpstream, chroma_steps, http_call

pytestmark = pytest.mark.integration


def without_request_id(body: bytes) -> Any:
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if isinstance(doc, dict):
        doc.pop("request_id", None)
    return doc


def observe(gw: Gateway, upstream: RecordingUpstream, idp: Idp) -> list[Any]:
    """What clients and the backend see for a fixed set of requests (request ids removed)."""
    admin = {"Authorization": f"Bearer {idp.token('admin-1')}"}
    agent = {"Authorization": f"Bearer {idp.token('agent-1')}"}
    base = "/api/v2/tenants/default_tenant/databases/default_database/collections"
    calls: list[tuple[str, str, dict[str, str], Any]] = [
        ("GET", "/-/healthz", {}, None),
        ("GET", "/-/nothing-here", {}, None),
        ("GET", "/api/v2/heartbeat", {}, None),  # no token
        ("GET", "/api/v2/heartbeat", {"Authorization": "Bearer not-a-jwt"}, None),
        ("GET", "/api/v2/heartbeat", admin, None),
        ("GET", "/api/v2/heartbeat", {**admin, "Upgrade": "h2c", "Connection": "Upgrade, HTTP2-Settings",
                                      "HTTP2-Settings": "AAMAAABkAAQAAP__"}, None),
        ("DELETE", f"{base}/keep_me", admin, None),  # no-drop
        ("DELETE", f"{base}/keep_me", agent, None),
        ("GET", "/api/v2/no/such/route", admin, None),  # unknown: default deny
    ]
    seen: list[Any] = []
    for method, path, headers, body in calls:
        before = len(upstream.requests)
        status, resp_headers, resp_body = http_call(method, f"{gw.url}{path}", body, headers)
        forwarded = upstream.requests[before:]
        seen.append({
            "call": f"{method} {path} {sorted(headers)}",
            "status": status,
            "www-authenticate": "www-authenticate" in resp_headers,
            "body": without_request_id(resp_body),
            "forwarded": [{"path": r["path"], "authorization": r["headers"].get("authorization"),
                           "x-chroma-token": r["headers"].get("x-chroma-token"),
                           "upgrade": r["headers"].get("upgrade"),
                           "http2-settings": r["headers"].get("http2-settings")} for r in forwarded],
        })
    return seen


def test_both_runners_answer_alike(idp: Idp, gateway_factory: Callable[..., Gateway]) -> None:
    results: dict[str, list[Any]] = {}
    for runner in RUNNERS:
        with RecordingUpstream() as upstream:
            gw = gateway_factory(upstream.url, runner=runner)
            results[runner] = observe(gw, upstream, idp)
            gw.stop()
    lean, stock = results["lean"], results["mitmdump"]
    assert lean == stock
    by_call = {r["call"].split(" [")[0] + f" #{i}": r for i, r in enumerate(lean)}
    statuses = [r["status"] for r in lean]
    assert statuses[:4] == [200, 404, 401, 401], by_call
    assert lean[2]["www-authenticate"] and lean[3]["www-authenticate"]
    # an allowed request reaches the backend with the backend's credential, never the caller's
    assert statuses[4] == 200
    assert [(f["authorization"], f["x-chroma-token"]) for f in lean[4]["forwarded"]] == [(None, BACKEND_CREDENTIAL)]
    # h2c upgrade attempts are stripped (disable_h2c): the backend never switches protocols
    assert statuses[5] == 200 and lean[5]["forwarded"][0]["upgrade"] is None
    assert lean[5]["forwarded"][0]["http2-settings"] is None
    # refusals never reach the backend
    assert statuses[6:] == [403, 403, 403]
    assert lean[6]["body"]["rule_id"] == "no-drop"
    assert all(r["forwarded"] == [] for r in lean[:4] + lean[6:])


def test_alt_svc_points_at_the_gateway_on_both_runners(idp: Idp, gateway_factory: Callable[..., Gateway]) -> None:
    # update_alt_svc: a backend advertising HTTP/3 on its own port must not lead clients around
    # the gateway.
    with RecordingUpstream() as upstream:
        upstream.headers["alt-svc"] = f'h3=":{upstream.port}"; ma=86400'
        for runner in RUNNERS:
            gw = gateway_factory(upstream.url, runner=runner)
            status, headers, _ = http_call("GET", f"{gw.url}/api/v2/heartbeat",
                                           headers={"Authorization": f"Bearer {idp.token('admin-1')}"})
            assert status == 200, runner
            # Rewritten to the gateway's port, or withheld by the response-header allow-list:
            # never the backend's own port.
            assert headers.get("alt-svc") in (None, f'h3=":{gw.port}"; ma=86400'), runner
            assert str(upstream.port) not in str(headers.get("alt-svc")), runner
            gw.stop()


def test_chromadb_session_on_the_lean_engine(chroma: Chroma, idp: Idp,
                                            gateway_factory: Callable[..., Gateway]) -> None:
    from tests.integration.test_chroma_session import comparable, session

    gw = gateway_factory(chroma.url, runner="lean")
    direct = chroma_steps(chroma.url, None, session("lean_direct"))
    via = chroma_steps(gw.url, idp.token("admin-1"), session("lean_gateway"))
    assert all(r["ok"] for r in direct), direct
    assert comparable(via[:-1], "lean_gateway") == comparable(direct[:-1], "lean_direct")
    assert via[-1]["ok"] is False  # the drop: denied by policy, as on stock mitmdump


class SwitchingUpstream:
    """A backend that answers every request with `101 Switching Protocols` and then records every
    byte that reaches it on that connection (what a tunnel would let through)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.heads: list[bytes] = []
        self.after_switch: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: Any) -> None:
        conn.settimeout(3.0)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            self.heads.append(head)
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tcp-tunnel\r\nConnection: Upgrade\r\n\r\n")
            if rest:
                self.after_switch.append(rest)
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                self.after_switch.append(chunk)
        except OSError:
            return
        finally:
            conn.close()

    def __enter__(self) -> SwitchingUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def _raw_exchange(port: int, first: bytes, second: bytes) -> tuple[bytes, bytes | None]:
    """Send `first` on one connection, read its answer, then try `second` on the same connection:
    (first answer, whatever came back to the second; None when the gateway had closed it)."""
    import socket
    import time

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(first)
        answer = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            head, sep, body = answer.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if sep and len(body) >= length:
                break
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        time.sleep(0.3)  # let the gateway finish with the connection (close it, or switch it)
        try:
            s.sendall(second)
            s.settimeout(2)
            late = s.recv(65536)
        except (OSError, TimeoutError):
            return answer, None
        return answer, late or None


def test_no_tunnel_after_a_101_on_both_runners(idp: Idp, gateway_factory: Callable[..., Gateway]) -> None:
    token = idp.token("admin-1")
    get_all = (b"POST /api/v2/tenants/default_tenant/databases/default_database/collections/"
               b"0b1c2d3e-0000-4000-8000-000000000001/get HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    for runner in RUNNERS:
        with SwitchingUpstream() as upstream:
            gw = gateway_factory(upstream.url, runner=runner)
            # An allowed request; the backend switches protocols instead of answering it.
            first = (f"GET /api/v2/heartbeat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
            answer, late = _raw_exchange(gw.port, first, get_all)
            assert answer.startswith(b"HTTP/1.1 502"), (runner, answer)
            assert b"upgrade_refused" in answer and b"request_id" in answer, (runner, answer)
            assert len(upstream.heads) == 1, runner
            # The unauthenticated export sent next on the same connection never reached the backend,
            # and the client got nothing back on it (the gateway closed the connection).
            assert upstream.after_switch == [], (runner, upstream.after_switch)
            assert late is None or late.startswith(b"HTTP/1.1 401"), (runner, late)
            # A client asking to upgrade is refused before anything is forwarded; CONNECT and
            # absolute-form targets too.
            for ask in (b"GET /api/v2/heartbeat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
                        b"dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n",
                        b"GET http://127.0.0.1:1/api/v2/heartbeat HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"
                        b"Authorization: Bearer " + token.encode() + b"\r\n\r\n",
                        b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n"):
                answer, _ = _raw_exchange(gw.port, ask, b"")
                assert answer.split(b"\r\n", 1)[0].split(b" ")[1] in (b"400", b"405"), (runner, ask, answer)
            assert len(upstream.heads) == 1 and upstream.after_switch == [], runner
            gw.stop()
