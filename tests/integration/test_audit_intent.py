"""Write-ahead intent under the real gateway: nothing reaches the backend without its intent record.

- the audit disk fills up mid-traffic (a small tmpfs mounted for the test): every request the
  backend received has a durable intent in the ledger; once the ledger is broken, a request that
  a rule would hold is refused before any hold exists or any approver is paged;
- a gateway killed while the backend works on a request leaves an intent without an outcome, which
  `verify` and the packet's integrity section report as "outcome unknown".
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from addons.cli import verify as cli_verify
from addons.ledger.read import open_ledger
from reports.sections import integrity
from tests.integration.test_audit_gateway import QUERY, Setup, call, run_cli
from tests.support.servers import Idp, RecordingUpstream, http_call

pytestmark = pytest.mark.integration

BY_ID = "GET /api/v2/tenants/default_tenant/databases/default_database/collections/by-id/c-1"


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream({"POST " + QUERY: (200, {"ids": [["p1"]], "documents": [["note"]]}),
                            BY_ID: (200, {"id": "c-1", "name": "patients"})}) as server:
        yield server


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 384 KiB tmpfs for the audit folder: it fills up after a few dozen requests."""
    where = tmp_path / "audit"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k,mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def intents_by_ua(audit: Path) -> set[str]:
    con = open_ledger(audit)
    try:
        return {str(r[0]) for r in con.execute("SELECT user_agent FROM intents").fetchall()}
    finally:
        con.close()


def test_disk_full_mid_traffic_nothing_reaches_the_backend_without_an_intent(
    tmp_path: Path, idp: Idp, upstream: RecordingUpstream, small_disk: Path
) -> None:
    with RecordingUpstream() as pager:
        setup = Setup(tmp_path, idp, upstream.url)
        gw = setup.gateway(phigate_approval_webhooks=pager.url + "/page")
        try:
            token = idp.token("clin-1")

            def held(ua: str) -> int:
                try:
                    return http_call("POST", gw.url + QUERY, {"n_results": 1},
                                     {"authorization": f"Bearer {token}", "user-agent": ua}, timeout=2)[0]
                except OSError:
                    return 0  # still held when the client gave up (the hold is cancelled)

            held("held-before")  # a whole-collection search: held, and approvers paged
            deadline = time.monotonic() + 10
            while not pager.requests and time.monotonic() < deadline:
                time.sleep(0.1)
            assert pager.requests, "a held request pages approvers"

            statuses: dict[str, int] = {}

            def one(i: int) -> None:
                statuses[f"fill-{i}"] = call(gw, token, f"fill-{i}", {"pad": "x" * 2000})[0]

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(one, range(400)))
            assert 200 in statuses.values() and 503 in statuses.values(), sorted(set(statuses.values()))
            assert set(statuses.values()) <= {200, 503}

            # The ledger is broken now: the gate refuses before classification, holds or paging.
            paged = len(pager.requests)
            assert held("held-while-broken") == 503
            code, _, ready = http_call("GET", gw.url + "/-/readyz")
            assert code == 503 and b"No space left" in ready
        finally:
            gw.stop()
        assert len(pager.requests) == paged
    con = sqlite3.connect(tmp_path / "holds.db")
    try:
        # (The hold of "held-before" only.)
        assert con.execute("SELECT count(*) FROM holds").fetchone() == (1,)
    finally:
        con.close()
    received = {r["headers"].get("user-agent", "") for r in upstream.requests if r["path"].endswith("/query")}
    assert {ua for ua, s in statuses.items() if s == 200} <= received
    missing = received - intents_by_ua(small_disk)
    assert not missing, f"{len(missing)} requests reached the backend with no intent record: {sorted(missing)[:5]}"


class SlowUpstream:
    """Answers the query route only after `delay_s`: a backend still working when the gateway dies."""

    def __init__(self, delay_s: float) -> None:
        self.received = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._answer(b'{"id": "c-1", "name": "patients"}')

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.received.set()
                time.sleep(delay_s)
                self._answer(b'{"ids": [["p1"]]}')

            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_gateway_killed_between_intent_and_outcome_leaves_outcome_unknown(tmp_path: Path, idp: Idp) -> None:
    slow = SlowUpstream(delay_s=20)
    try:
        setup = Setup(tmp_path, idp, slow.url)
        gw = setup.gateway()
        token = idp.token("clin-1")
        assert gw.proc.proc is not None
        client = threading.Thread(target=lambda: _ignore_errors(call, gw, token, "in-flight"), daemon=True)
        client.start()
        assert slow.received.wait(15), "the request never reached the backend"
        os.killpg(gw.proc.proc.pid, signal.SIGKILL)
        gw.proc.proc.wait(10)
    finally:
        slow.close()
    con = open_ledger(setup.audit)
    try:
        (seq,) = con.execute("SELECT seq FROM intents WHERE user_agent = 'in-flight'").fetchone() or (None,)
        outcome = con.execute("SELECT count(*) FROM events WHERE user_agent = 'in-flight'").fetchone()
    finally:
        con.close()
    assert seq is not None and outcome == (0,)
    code, out = run_cli(cli_verify.main, setup.verify_args())
    assert code == 0, out  # every acknowledged record is signed, even after kill -9
    assert "1 forwarded requests with outcome unknown" in out and f"intent seq {seq}" in out
    outcome_packet = integrity.run_verify(setup.audit, [], str(setup.key_file), str(setup.witness) + "/")
    assert outcome_packet.ok
    assert any("outcome unknown" in text for _, text in outcome_packet.details)
    shutil.rmtree(setup.audit, ignore_errors=True)


def _ignore_errors(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # the gateway is killed under this request
        return
