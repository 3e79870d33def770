"""Throughput and latency of small requests: (a) direct Chroma, (b) bare mitmdump reverse proxy,
(c) the core chain (identity + classify + policy + forward, tests/bench/chain_core.py) under stock
mitmdump and in the lean engine (tests/bench/lean_core.py, as `./run.sh gateway` runs chains),
(d) the full chain (addons/chain.py: + approvals, masking, audit) under stock mitmdump, and (e) the
full chain in the lean engine, in one run, with ratios.

    .phigate/venv/bin/python -m tests.bench.bench_gateway [--runs 3] [--seconds 5] [--connections 16]
        [--profile core.svg]   # + a py-spy CPU profile of the core chain under wrk (not measured)

Throughput: wrk (Debian package) with keep-alive connections, median requests/s over several runs.
Latency: one keep-alive connection, sequential requests, p50/p99 per run, medians over runs (low
concurrency: what one agent sees). The machine is shared and noisy: read the ratios, not the
absolute figures. Targets: (c) keeps >= 85% of (b)'s requests/s and adds < 2 ms p50.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from addons.cli.keys import gateway_options, make_keys
from tests.support.servers import ROOT, VENV_BIN, Chroma, Gateway, Idp, Process, chroma_steps, free_port, wait_http

COLLECTION = "bench_notes"


def wrk_rps(url: str, headers: Mapping[str, str], seconds: int, connections: int) -> float:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s"]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} non-2xx responses; the benchmark would be meaningless")
    assert m, out
    return float(m.group(1))


def latencies(url: str, headers: Mapping[str, str], n: int) -> list[float]:
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    path = u.path + (f"?{u.query}" if u.query else "")
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=dict(headers))
        resp = conn.getresponse()
        resp.read()
        out.append((time.perf_counter() - t0) * 1000)
        if resp.status != 200:
            raise RuntimeError(f"{url}: status {resp.status}")
    conn.close()
    return out


def profile_under_load(pid: int, out: str, url: str, headers: Mapping[str, str], seconds: int,
                       connections: int) -> None:
    """Record a py-spy flame graph of `pid` during one extra wrk run (its figures are not kept:
    sampling slows the process it samples)."""
    spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy: .phigate/venv/bin/pip install py-spy")
    rec = subprocess.Popen([spy, "record", "--rate", "200", "--duration", str(seconds), "--output", out,
                            "--pid", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # py-spy attaches before the load starts
    wrk_rps(url, headers, seconds, connections)
    _, err = rec.communicate(timeout=seconds + 60)
    if rec.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    print(f"core chain CPU profile (py-spy, {seconds}s under wrk): {out}")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--latency-requests", type=int, default=400)
    ap.add_argument("--client", default="admin-1", help="IdP client whose token the load uses")
    ap.add_argument("--profile", metavar="SVG", default=None,
                    help="after the measured runs, record the core chain's CPU profile under wrk with "
                         "py-spy into this flame graph (an extra run, not in the figures)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk (./run.sh setup installs it)")

    with Idp() as idp, Chroma() as chroma:
        token = idp.token(args.client)
        steps = [{"op": "create", "collection": COLLECTION},
                 {"op": "add", "collection": COLLECTION, "ids": ["a", "b"], "embeddings": [[0.1, 0.2], [0.2, 0.1]],
                  "documents": ["note a", "note b"]}]
        chroma_steps(chroma.url, None, steps)
        cols = json.loads(urllib.request.urlopen(
            f"{chroma.url}/api/v2/tenants/default_tenant/databases/default_database/collections").read())
        cid = next(c["id"] for c in cols if c["name"] == COLLECTION)
        path = f"/api/v2/tenants/default_tenant/databases/default_database/collections/{cid}/count"

        bare_port = free_port()
        bare = Process("bare-mitmdump", [str(VENV_BIN / "mitmdump"), "--mode",
                                          f"reverse:{chroma.url}@127.0.0.1:{bare_port}", "--set", "flow_detail=0"])
        bare.start()
        wait_http(f"http://127.0.0.1:{bare_port}/api/v2/heartbeat", 30)
        workdir = Path(tempfile.mkdtemp(prefix="phigate-bench-"))
        base = {
            "phigate_rules": str(ROOT / "rules"), "phigate_profile": "chroma", "phigate_issuer": idp.issuer,
            "phigate_audience": "phigate", "phigate_allow_plain_http": "true",
        }
        keys = make_keys(workdir / "keys")
        core = Gateway(chroma.url, {**base, "phigate_backend_credential_file": str(keys["backend-credential"])},
                       script=ROOT / "tests" / "bench" / "chain_core.py", runner="mitmdump").start()
        full = Gateway(chroma.url, {**base, **gateway_options(keys), "phigate_audit_dir": str(workdir / "audit"),
                                    "phigate_holds_db": str(workdir / "holds.sqlite"), "phigate_admin_port": "0"},
                       runner="mitmdump").start()
        # The core chain as ./run.sh gateway runs chains: in the lean engine (addons/runtime/engine.py).
        lean_core_port = free_port()
        lean_core = Process("lean-core", [
            str(VENV_BIN / "python"), "-m", "tests.bench.lean_core", "--mode",
            f"reverse:{chroma.url}@127.0.0.1:{lean_core_port}", "-q",
            *[a for k, v in {**base, "phigate_backend_credential_file": str(keys["backend-credential"])}.items()
              for a in ("--set", f"{k}={v}")]], cwd=ROOT)
        lean_core.start()
        wait_http(f"http://127.0.0.1:{lean_core_port}/-/healthz", 30, lean_core.proc)
        lean_core_url = f"http://127.0.0.1:{lean_core_port}"
        # The same full chain as ./run.sh gateway runs it: the lean engine (addons/runtime/engine.py).
        lean = Gateway(chroma.url, {**base, **gateway_options(keys), "phigate_audit_dir": str(workdir / "audit-lean"),
                                    "phigate_holds_db": str(workdir / "holds-lean.sqlite"), "phigate_admin_port": "0"},
                       runner="lean").start()
        for url in (core.url, full.url, lean.url, lean_core_url):
            # One warm-up each: the collection's UUID -> name is learned from the client's lookup.
            warm = chroma_steps(url, token, [{"op": "count", "collection": COLLECTION}])
            if not warm[0]["ok"]:
                raise RuntimeError(f"warm-up through {url} failed: {warm}")
        auth = {"Authorization": f"Bearer {token}"}
        targets = {
            "direct": (f"{chroma.url}{path}", {}),
            "bare mitmdump": (f"http://127.0.0.1:{bare_port}{path}", {}),
            "core chain": (f"{core.url}{path}", auth),
            "core chain, lean": (f"{lean_core_url}{path}", auth),
            "full chain": (f"{full.url}{path}", auth),
            "full chain, lean": (f"{lean.url}{path}", auth),
        }
        try:
            rps: dict[str, list[float]] = {k: [] for k in targets}
            p50: dict[str, list[float]] = {k: [] for k in targets}
            p99: dict[str, list[float]] = {k: [] for k in targets}
            for _ in range(args.runs):
                for name, (url, headers) in targets.items():  # interleaved: noise hits all alike
                    rps[name].append(wrk_rps(url, headers, args.seconds, args.connections))
                    lat = latencies(url, headers, args.latency_requests)
                    p50[name].append(pct(lat, 50))
                    p99[name].append(pct(lat, 99))
            if args.profile:
                assert core.proc.proc is not None
                url, headers = targets["core chain"]
                profile_under_load(core.proc.proc.pid, args.profile, url, headers, args.seconds,
                                   args.connections)
        finally:
            core.stop()
            full.stop()
            lean.stop()
            lean_core.stop()
            bare.stop()

    med = {k: statistics.median(v) for k, v in rps.items()}
    m50 = {k: statistics.median(v) for k, v in p50.items()}
    m99 = {k: statistics.median(v) for k, v in p99.items()}
    print(f"small request: GET {path.split('collections/')[0]}collections/<id>/count, "
          f"{args.runs} runs x {args.seconds}s, {args.connections} connections")
    print(f"{'target':<18}{'req/s (median)':>16}{'runs':>28}{'p50 ms':>10}{'p99 ms':>10}")
    for k in targets:
        runs = ", ".join(f"{x:.0f}" for x in rps[k])
        print(f"{k:<18}{med[k]:>16.0f}{runs:>28}{m50[k]:>10.2f}{m99[k]:>10.2f}")
    print(f"bare mitmdump / direct throughput: {med['bare mitmdump'] / med['direct']:.3f}")
    for name in ("core chain", "core chain, lean", "full chain", "full chain, lean"):
        core = name.startswith("core")
        print(f"{name} / bare mitmdump throughput: {med[name] / med['bare mitmdump']:.2f}"
              + (" (target >= 0.85: identity + policy)" if core else ""))
        print(f"{name} added p50 latency vs bare mitmdump: {m50[name] - m50['bare mitmdump']:.2f} ms"
              + (" (target < 2 ms)" if core else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
