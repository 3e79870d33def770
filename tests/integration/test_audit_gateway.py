"""The audit ledger under the real gateway (stock mitmdump with the chain) and the real OpenID provider.

- every response a client receives has its durable event, and verify/export/replay/reports read the
  ledger while the gateway keeps serving (no lock errors, no pause);
- kill -9 under load, restart: every answered request has its event, the ledger verifies, and
  numbering continues;
- a ledger that cannot be written (file size limit on the live process) turns into 503s and a
  not-ready `/-/readyz`, and traffic resumes with an incident recorded once it can be written again.
"""

from __future__ import annotations

import base64
import http.client
import io
import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import orjson
import pytest

from addons.cli import export as cli_export
from addons.cli import replay as cli_replay
from addons.cli import verify as cli_verify
from addons.ledger import keys
from addons.ledger.read import open_ledger
from tests.support.servers import ROOT, Gateway, Idp, RecordingUpstream, http_call

pytestmark = pytest.mark.integration

CREDENTIAL_ENV = "PHIGATE_TEST_BACKEND_CREDENTIAL"
BACKEND_SECRET = "backend-secret-audit-7c1"
REC_KEY = "it1:" + base64.b64encode(b"r" * 32).decode()
QUERY = "/api/v2/tenants/default_tenant/databases/default_database/collections/c-1/query"


def audit_in_chain() -> bool:
    return "from addons.audit import Audit" in (ROOT / "addons" / "chain.py").read_text()


class Setup:
    def __init__(self, tmp: Path, idp: Idp, upstream: str) -> None:
        self.tmp = tmp
        self.idp = idp
        self.upstream = upstream
        self.audit = tmp / "audit"
        self.witness = tmp / "witness"
        self.key_file = tmp / "signing.pem"
        keys.generate_key_file(self.key_file)
        self.extra_script = tmp / "audit_last.py"
        # Until the Audit line is in addons/chain.py, load it last as a second script.
        self.extra_script.write_text(
            f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom addons.audit import Audit\naddons = [Audit()]\n"
        )

    def gateway(self, **extra: Any) -> Gateway:
        options = {
            "phigate_rules": str(ROOT / "rules"), "phigate_profile": "chroma", "phigate_issuer": self.idp.issuer,
            "phigate_audience": "phigate", "phigate_backend_credential_env": CREDENTIAL_ENV,
            "phigate_allow_plain_http": "true", "phigate_node_id": "it-node",
            "phigate_audit_dir": str(self.audit), "phigate_witness": str(self.witness) + "/",
            "phigate_audit_key_file": str(self.key_file),
            "phigate_recording_key_env": "PHIGATE_IT_REC_KEY",
            "phigate_admin_port": "0", "phigate_holds_db": str(self.tmp / "holds.db"),
            **{k: str(v) for k, v in extra.items()},
        }
        args = () if audit_in_chain() else ("-s", str(self.extra_script))
        env = {**os.environ, CREDENTIAL_ENV: BACKEND_SECRET, "PHIGATE_IT_REC_KEY": REC_KEY}
        return Gateway(self.upstream, options, env=env, args=args).start()

    def verify_args(self) -> list[str]:
        return ["--dir", str(self.audit), "--witness", str(self.witness) + "/", "--key-file", str(self.key_file)]


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream({"POST " + QUERY: (200, {"ids": [["p1"]], "documents": [["note"]]})}) as server:
        yield server


@pytest.fixture
def setup(tmp_path: Path, idp: Idp, upstream: RecordingUpstream) -> Setup:
    return Setup(tmp_path, idp, upstream.url)


def call(gw: Gateway, token: str | None, ua: str, body: Any = None) -> tuple[int, bytes]:
    headers = {"user-agent": ua, "content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    # A filtered search: whatever the policy decides, it answers now (an unfiltered one is held).
    payload = {"n_results": 1, "where": {"ward": "a"}, **(body or {})}
    status, _, data = http_call("POST", gw.url + QUERY, payload, headers)
    return status, data


def events_by_ua(audit: Path, prefix: str) -> dict[str, tuple[int, int]]:
    con = open_ledger(audit)
    try:
        rows = con.execute("SELECT user_agent, status, seq FROM events WHERE user_agent LIKE ?",
                           [prefix + "%"]).fetchall()
    finally:
        con.close()
    return {ua: (status, seq) for ua, status, seq in rows}


def run_cli(main: Any, argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def test_every_answer_has_its_event_and_tools_read_while_it_runs(setup: Setup) -> None:
    gw = setup.gateway()
    try:
        token = setup.idp.token("clin-1")
        answered = {f"ua-{i}": call(gw, token, f"ua-{i}") for i in range(20)}
        answered |= {f"ua-anon-{i}": call(gw, None, f"ua-anon-{i}") for i in range(3)}
        got = events_by_ua(setup.audit, "ua-")
        assert {ua: s for ua, (s, _) in got.items()} == {ua: s for ua, (s, _) in answered.items()}

        # Readers and tools while the gateway holds its writer and keeps serving.
        stop = threading.Event()
        served: list[int] = []

        def traffic() -> None:
            n = 0
            while not stop.is_set():
                served.append(call(gw, token, f"bg-{n}")[0])
                n += 1

        t = threading.Thread(target=traffic)
        t.start()
        try:
            time.sleep(1.5)  # let a checkpoint land
            code, out = run_cli(cli_verify.main, setup.verify_args())
            assert code == 0, out
            assert "OK: the ledger verifies" in out
            code, out = run_cli(cli_export.main, ["--dir", str(setup.audit), "--format", "json"])
            lines = [orjson.loads(line) for line in out.splitlines()]
            assert code == 0 and {r["user_agent"] for r in lines} >= set(answered)
            con = open_ledger(setup.audit)
            fails = con.execute("SELECT count(*) FROM auth_failures").fetchone()
            versions = con.execute("SELECT count(DISTINCT path) FROM rule_versions").fetchone()
            con.close()
            assert fails == (3,)
            assert versions is not None and versions[0] >= 1
        finally:
            stop.set()
            t.join()
        assert len(served) > 5, "traffic paused while the tools read the ledger"

        # Replay: the session's exchanges, decrypted, with no credential in them.
        con = open_ledger(setup.audit)
        (session,) = con.execute("SELECT session_id FROM events WHERE user_agent = 'ua-0'").fetchone() or (None,)
        con.close()
        os.environ["PHIGATE_RECORDING_KEY"] = REC_KEY
        try:
            code, out = run_cli(cli_replay.main, [str(session), "--dir", str(setup.audit), "--json"])
        finally:
            del os.environ["PHIGATE_RECORDING_KEY"]
        assert code == 0
        exchanges = [orjson.loads(line) for line in out.splitlines()]
        assert len(exchanges) >= 20 and all(e["exchange"] for e in exchanges)
        assert '"n_results"' in base64.b64decode(exchanges[0]["exchange"]["request"]["body"]).decode()
        assert BACKEND_SECRET not in out and token not in out
    finally:
        gw.stop()
    assert cli_verify.main(setup.verify_args()) == 0


def test_kill_9_under_load_loses_no_answered_event(setup: Setup) -> None:
    gw = setup.gateway()
    token = setup.idp.token("clin-1")
    answered: dict[str, int] = {}
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            status, _ = call(gw, token, f"crash-{i}")
        except (OSError, http.client.HTTPException):
            return  # the gateway died before (completely) answering: no promise was made
        with lock:
            answered[f"crash-{i}"] = status

    assert gw.proc.proc is not None
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(300)]
        while len(answered) < 120:
            time.sleep(0.01)
        os.killpg(gw.proc.proc.pid, signal.SIGKILL)
        for f in futures:
            f.result()
    gw.proc.proc.wait(10)
    assert 120 <= len(answered) < 300

    events = events_by_ua(setup.audit, "crash-")
    missing = sorted(set(answered) - set(events))
    assert not missing, f"{len(missing)} answered requests have no event: {missing[:5]}"
    assert all(events[ua][0] == status for ua, status in answered.items())
    before = max(seq for _, seq in events.values())

    again = setup.gateway()
    try:
        call(again, token, "after-restart")
        after = events_by_ua(setup.audit, "after-restart")["after-restart"][1]
        assert after > before
        time.sleep(1.5)
        code, out = run_cli(cli_verify.main, setup.verify_args())
        assert code == 0, out
    finally:
        again.stop()


def test_unwritable_ledger_fails_closed_and_recovers(setup: Setup) -> None:
    gw = setup.gateway()
    try:
        token = setup.idp.token("clin-1")
        assert gw.proc.proc is not None
        pid = gw.proc.proc.pid
        # A big recorded request makes the recordings file larger than the limit we set next.
        call(gw, token, "big", {"pad": "x" * 300_000})
        limit = max(gw.proc.log_path.stat().st_size + 100_000, 200_000)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        try:
            status, body = call(gw, token, "while-full")
            assert status == 503 and b"audit_unavailable" in body
            status, body = call(gw, token, "while-full-2")
            assert status == 503 and b"audit_unavailable" in body
            code, _, ready = http_call("GET", gw.url + "/-/readyz")
            assert code == 503 and b"audit store write failed" in ready
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        deadline = time.monotonic() + 20
        while http_call("GET", gw.url + "/-/readyz")[0] != 200:
            assert time.monotonic() < deadline, "the ledger did not recover"
            time.sleep(0.5)
        status, _ = call(gw, token, "after-recovery")
        assert status != 503
        got = events_by_ua(setup.audit, "")
        assert "while-full" not in got and "after-recovery" in got
        con = open_ledger(setup.audit)
        incidents = con.execute("SELECT kind, detail FROM incidents").fetchall()
        con.close()
        assert incidents and incidents[0][0] == "audit_write_failure" and "File too large" in incidents[0][1]
    finally:
        gw.stop()
    assert cli_verify.main(setup.verify_args()) == 0
