"""Operating the gateway: a real Prometheus scrapes /metrics, and the JSON log carries one decision
line per request with no token and no PHI, against a real Chroma and a real OpenID provider."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.masking_fixtures import PHI_SEED, TEST_KEY
from tests.support.servers import Chroma, Gateway, Idp, Process, free_port, http_call, run_chroma_client, wait_http

pytestmark = pytest.mark.integration

PHI = ("1234567", "2345678", "John Smith", "Jane Doe", "1980-02-14", "1961-03-05")

# Searches by the clinician (sees PHI) and the agent (masked), and one the policy refuses (no filter
# on a whole-collection export).
TRAFFIC = """
import chromadb, json
out = []
for token in ({clin!r}, {agent!r}):
    c = chromadb.HttpClient(host="127.0.0.1", port={port}, headers={{"Authorization": "Bearer " + token}})
    col = c.get_collection("{name}")
    for _ in range(3):
        r = col.query(query_embeddings=[[0.1, 0.2, 0.3]], n_results=2, where={{"mrn": "1234567"}},
                      include=["metadatas", "documents"])
        out.append(r["metadatas"][0][0]["mrn"])
print(json.dumps(out))
"""

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def prometheus_query(base: str, expr: str) -> list[dict[str, Any]]:
    status, _, body = http_call("GET", f"{base}/api/v1/query?query={urllib.parse.quote(expr)}")
    assert status == 200, body
    doc = json.loads(body)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]  # type: ignore[no-any-return]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_prometheus_scrapes_rates_and_the_json_log_has_decisions_without_tokens_or_phi(
        chroma: Chroma, idp: Idp, gateway_factory: Callable[..., Gateway]) -> None:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (./run.sh setup installs Debian's prometheus)")
    name = run_chroma_client(PHI_SEED.format(host="127.0.0.1", port=int(chroma.url.rsplit(":", 1)[1])))["name"]
    admin_port = free_port()
    gw = gateway_factory(chroma.url, runner="lean", env={"PHIGATE_TOKEN_KEYS": f"k1={TEST_KEY}"},
                         phigate_admin_port=admin_port, phigate_log_format="json")
    admin = f"http://127.0.0.1:{admin_port}"
    wait_http(f"{admin}/healthz", 15)

    workdir = Path(tempfile.mkdtemp(prefix="phigate-prom-"))
    prom_port = free_port()
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: phigate\n    static_configs: [{{targets: ['127.0.0.1:{admin_port}']}}]\n")
    prom = Process("prometheus", [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}",
                                  f"--storage.tsdb.path={workdir / 'data'}",
                                  f"--web.listen-address=127.0.0.1:{prom_port}"])
    prom.start()
    base = f"http://127.0.0.1:{prom_port}"
    try:
        wait_http(f"{base}/-/ready", 30, prom.proc)
        wait_for(lambda: [r["value"][1] for r in prometheus_query(base, 'up{job="phigate"}')] == ["1"], 20,
                 f"the first scrape of {admin}/metrics\n{prom.log()[-2000:]}")
        clin, agent = idp.token("clin-1"), idp.token("agent-1")
        # Two rounds, scrapes apart: a rate needs the counter to grow between two samples.
        for _ in range(2):
            mrns = run_chroma_client(TRAFFIC.format(port=gw.port, clin=clin, agent=agent, name=name))
            assert mrns[:3] == ["1234567"] * 3 and all(m.startswith("tok_mrn_k1_") for m in mrns[3:])
            time.sleep(2.5)
        # An unauthenticated call: a refusal at the identity stage.
        assert http_call("GET", f"{gw.url}/api/v2/heartbeat")[0] == 401

        def rate_seen() -> bool:
            rows = prometheus_query(base, 'sum by (decision) (rate(phigate_requests_total{operation="search"}[15s]))')
            return any(r["metric"].get("decision") == "allow" and float(r["value"][1]) > 0 for r in rows)

        wait_for(rate_seen, 20, "a non-zero request rate in Prometheus")
        wait_for(lambda: bool(prometheus_query(base, 'phigate_refusals_total{stage="identity"} >= 1')), 10,
                 "the identity refusal in Prometheus")
        masked = prometheus_query(base, "sum(phigate_masked_values_total)")
        assert masked and float(masked[0]["value"][1]) > 0
        assert prometheus_query(base, "phigate_holds_pending")[0]["value"][1] == "0"
        assert prometheus_query(base, "sum(phigate_audit_fsync_seconds_count)")[0]["value"][1] != "0"
        assert prometheus_query(base, 'phigate_jwks_refreshes_total{result="ok"}')
    finally:
        prom.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    gw.stop()
    log = gw.proc.log()
    for secret in (clin, agent, *PHI):
        assert secret not in log, f"{secret[:12]}... appears in the gateway log"
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len([x for x in log.splitlines() if x.strip()]), "a log line is not JSON"
    assert all(x["ts"].endswith("Z") for x in lines)
    decisions = [x for x in lines if x["msg"] == "decision" and x.get("operation") == "search"]
    assert len(decisions) == 12
    for d in decisions:
        assert d["decision"] == "allow" and d["status"] == 200 and d["latency_ms"] > 0
        assert d["subject"] and d["rule"] and d["request_id"] and d["collection"] == name
    assert not [x for x in lines if "client connect" in x["msg"] or "client disconnect" in x["msg"]]
