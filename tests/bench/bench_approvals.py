"""Do pending holds cost other traffic anything? And how fast does a decision reach a held client?

    .phigate/venv/bin/python -m tests.bench.bench_approvals [--runs 3] [--holds 50,200] [--seconds 5]

One run, real servers on loopback (OpenID provider, Chroma, the gateway as stock mitmdump):
- small allowed requests (GET .../count) direct, through the gateway with no pending hold, and with
  N holds pending (held bulk exports on open connections): p50/p99 latency on one keep-alive
  connection and requests/s with wrk, medians over runs, ratios against "no holds";
- decision latency: from the approve call's answer to the held client's response, for a decision on
  the same gateway process and for one made on another process sharing the hold store.
Target: ordinary traffic keeps its latency and throughput while holds are pending.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from addons.cli.approvals import AdminClient
from tests.bench.bench_gateway import latencies, pct, wrk_rps
from tests.support.servers import ROOT, Chroma, Gateway, Idp, chroma_steps, free_port, wait_http

COLLECTION = "bench_holds"
TOKEN_KEYS = "k1=a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="  # bench-only masking token key


class HeldExports:
    """N bulk exports held by the gateway, each on its own open connection."""

    def __init__(self, url: str, path: str, token: str, n: int) -> None:
        self.statuses: list[int] = []
        self.done_at: dict[int, float] = {}
        self.threads = [threading.Thread(target=self._one, args=(i, url, path, token), daemon=True)
                        for i in range(n)]

    def _one(self, i: int, url: str, path: str, token: str) -> None:
        u = urllib.parse.urlparse(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        conn.request("POST", path, body=b"{}", headers={"Authorization": f"Bearer {token}",
                                                        "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        self.done_at[i] = time.perf_counter()
        self.statuses.append(resp.status)
        conn.close()

    def start(self) -> HeldExports:
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self.threads:
            t.join(120)


def start_gateway(chroma: Chroma, idp: Idp, workdir: Path, db: Path, admin_port: int) -> Gateway:
    return Gateway(chroma.url, {
        "phigate_rules": str(ROOT / "rules"), "phigate_profile": "chroma", "phigate_issuer": idp.issuer,
        "phigate_audience": "phigate", "phigate_backend_credential_env": "BENCH_CRED",
        "phigate_allow_plain_http": "true", "phigate_audit_dir": str(workdir / "audit"),
        "phigate_holds_db": str(db), "phigate_admin_port": str(admin_port),
    }, env={"BENCH_CRED": "bench-backend-credential", "PHIGATE_TOKEN_KEYS": TOKEN_KEYS}).start()


def wait_pending(admin: AdminClient, n: int, timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        pending = admin.pending()
        if len(pending) >= n:
            return pending
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(pending)} of {n} holds appeared")
        time.sleep(0.1)


def decision_latency(gw_url: str, export_path: str, token: str, admin: AdminClient, n: int) -> list[float]:
    """ms from the approve call's answer to the held client's response, for n holds one by one."""
    out = []
    for _ in range(n):
        held = HeldExports(gw_url, export_path, token, 1).start()
        [hold] = wait_pending(admin, 1)
        admin.approve(hold["hold_id"], "benchmark approval")
        answered = time.perf_counter()
        held.join()
        out.append(max(0.0, (held.done_at[0] - answered) * 1000))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--holds", default="50,200", help="pending-hold counts to measure, comma-separated")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--latency-requests", type=int, default=300)
    ap.add_argument("--decisions", type=int, default=10)
    args = ap.parse_args()
    counts = [int(x) for x in args.holds.split(",") if x.strip()]
    use_wrk = shutil.which("wrk") is not None

    workdir = ROOT / ".phigate" / "bench-approvals"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    db = workdir / "holds.sqlite"
    with Idp() as idp, Chroma() as chroma:
        chroma_steps(chroma.url, None, [
            {"op": "create", "collection": COLLECTION},
            {"op": "add", "collection": COLLECTION, "ids": ["a", "b"], "embeddings": [[0.1, 0.2], [0.2, 0.1]],
             "documents": ["note a", "note b"]}])
        cols = json.loads(urllib.request.urlopen(
            f"{chroma.url}/api/v2/tenants/default_tenant/databases/default_database/collections").read())
        cid = next(c["id"] for c in cols if c["name"] == COLLECTION)
        base = f"/api/v2/tenants/default_tenant/databases/default_database/collections/{cid}"
        admin_port, other_port = free_port(), free_port()
        gw = start_gateway(chroma, idp, workdir, db, admin_port)
        other = start_gateway(chroma, idp, workdir, db, other_port)  # a second process on the same store
        wait_http(f"http://127.0.0.1:{admin_port}/healthz", 30)
        wait_http(f"http://127.0.0.1:{other_port}/healthz", 30)
        token = idp.token("admin-1")  # db-admin: count is allowed, a bulk export is held
        chroma_steps(gw.url, token, [{"op": "count", "collection": COLLECTION}])  # learn the collection id
        admin = AdminClient(f"http://127.0.0.1:{admin_port}", idp.token("approver-1"))
        admin_other = AdminClient(f"http://127.0.0.1:{other_port}", idp.token("approver-2"))
        headers = {"Authorization": f"Bearer {token}"}
        targets = {"direct": (f"{chroma.url}{base}/count", {}), "gateway, no holds": (f"{gw.url}{base}/count", headers)}
        p50: dict[str, list[float]] = {}
        p99: dict[str, list[float]] = {}
        rps: dict[str, list[float]] = {}
        try:
            for _ in range(args.runs):
                for name, (url, hdrs) in targets.items():
                    lat = latencies(url, hdrs, args.latency_requests)
                    p50.setdefault(name, []).append(pct(lat, 50))
                    p99.setdefault(name, []).append(pct(lat, 99))
                    if use_wrk:
                        rps.setdefault(name, []).append(wrk_rps(url, hdrs, args.seconds, args.connections))
                for n in counts:
                    name = f"gateway, {n} holds"
                    held = HeldExports(gw.url, f"{base}/get", token, n).start()
                    pending = wait_pending(admin, n)
                    url, hdrs = targets["gateway, no holds"]
                    lat = latencies(url, hdrs, args.latency_requests)
                    p50.setdefault(name, []).append(pct(lat, 50))
                    p99.setdefault(name, []).append(pct(lat, 99))
                    if use_wrk:
                        rps.setdefault(name, []).append(wrk_rps(url, hdrs, args.seconds, args.connections))
                    for h in pending:
                        admin.deny(h["hold_id"], "benchmark: release the held connection")
                    held.join()
                    if any(s != 403 for s in held.statuses):
                        raise RuntimeError(f"denied exports answered {sorted(set(held.statuses))}, expected 403")
            same = decision_latency(gw.url, f"{base}/get", token, admin, args.decisions)
            cross = decision_latency(gw.url, f"{base}/get", token, admin_other, args.decisions)
        finally:
            other.stop()
            gw.stop()

    print(f"allowed request: GET .../collections/<id>/count; {args.runs} runs; holds are bulk exports "
          f"held on open connections")
    print(f"{'target':<22}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    for name in p50:
        r = f"{statistics.median(rps[name]):>10.0f}" if name in rps else f"{'-':>10}"
        print(f"{name:<22}{statistics.median(p50[name]):>10.2f}{statistics.median(p99[name]):>10.2f}{r}")
    ref50 = statistics.median(p50["gateway, no holds"])
    for n in counts:
        name = f"gateway, {n} holds"
        line = f"{n} pending holds: p50 x{statistics.median(p50[name]) / ref50:.2f} of no holds"
        if name in rps:
            line += f", req/s x{statistics.median(rps[name]) / statistics.median(rps['gateway, no holds']):.2f}"
        print(line + " (target: ~x1.00)")
    print(f"decision -> held client answered: same process p50 {statistics.median(same):.1f} ms "
          f"(max {max(same):.1f}); decided on another process p50 {statistics.median(cross):.1f} ms "
          f"(max {max(cross):.1f}; store polled every 200 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
