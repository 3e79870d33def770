"""Requests/s of small requests through stock mitmdump and the lean engine, in one run, with ratios.

    .phigate/venv/bin/python -m tests.bench.bench_engine [--runs 3] [--seconds 5] [--connections 16]

Targets, all in front of the same real Chroma server, same client load (wrk, keep-alive):
  (a) stock mitmdump, no phigate addons (bare reverse proxy)
  (b) stock mitmdump with the phigate chain (`mitmdump -s addons/chain.py`)
  (c) the lean engine with the same chain, mitmproxy's stock hook dispatch (`--plain-dispatch`):
      the gain from loading fewer built-ins alone
  (d) the lean engine with the same chain (what `./run.sh gateway` runs)
Target: (d) >= 2x (b). Medians over the runs; targets interleaved so that noise from the
shared machine hits all alike. Also prints CPU ms per request of each gateway process (user+sys
from /proc over the wrk run), which is what the engine saves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
from collections.abc import Mapping
from pathlib import Path

from tests.bench.bench_gateway import COLLECTION, wrk_rps
from tests.bench.proc_cost import cpu_seconds
from tests.conftest import BACKEND_CREDENTIAL, gateway_options
from tests.support.servers import (
    ROOT,
    VENV_BIN,
    Chroma,
    Gateway,
    Idp,
    Process,
    chroma_steps,
    free_port,
    http_call,
    lean_options,
    wait_http,
)

# As tests/conftest.py: the backend credential Forward injects, a test-only masking token key.
BENCH_ENV = {"PHIGATE_TEST_BACKEND_CREDENTIAL": BACKEND_CREDENTIAL,
             "PHIGATE_TOKEN_KEYS": "k1=a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="}


COLLECTIONS = "/api/v2/tenants/default_tenant/databases/default_database/collections"


def count_path(chroma_url: str) -> str:
    """Create a small collection directly in Chroma; the path of its count (the small request)."""
    chroma_steps(chroma_url, None, [
        {"op": "create", "collection": COLLECTION},
        {"op": "add", "collection": COLLECTION, "ids": ["a", "b"], "embeddings": [[0.1, 0.2], [0.2, 0.1]],
         "documents": ["note a", "note b"]}])
    status, _, body = http_call("GET", f"{chroma_url}{COLLECTIONS}/{COLLECTION}")
    if status != 200:
        raise RuntimeError(f"Chroma did not return the collection: {status}")
    return f"{COLLECTIONS}/{json.loads(body)['id']}/count"


def bare_mitmdump(upstream: str) -> tuple[Process, int]:
    """Stock mitmdump as a bare reverse proxy (no phigate addons), not yet started."""
    port = free_port()
    argv = [str(VENV_BIN / "mitmdump"), "--mode", f"reverse:{upstream}@127.0.0.1:{port}", "--set", "flow_detail=0"]
    return Process("bare-mitmdump", argv), port


def measure(url: str, headers: Mapping[str, str], pid: int, seconds: int, connections: int) -> tuple[float, float]:
    """(requests/s, CPU ms per request of `pid`) for one wrk run."""
    c0 = cpu_seconds(pid)
    rps = wrk_rps(url, headers, seconds, connections)
    cpu_ms = (cpu_seconds(pid) - c0) * 1000 / max(1.0, rps * seconds)
    return rps, cpu_ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--client", default="admin-1",
                    help="IdP client whose token the load uses (policy must allow a count)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk (./run.sh setup installs it)")

    workdir = Path(ROOT / ".phigate" / "bench-engine")
    workdir.mkdir(parents=True, exist_ok=True)
    with Idp() as idp, Chroma() as chroma:
        token = idp.token(args.client)
        path = count_path(chroma.url)
        bare, bare_port = bare_mitmdump(chroma.url)
        opts = gateway_options(idp, workdir)
        # No admin listener (three gateways would race for its port); one node id per gateway, as
        # each holds its own audit ledger segment.
        opts.update({"phigate_admin_port": "0", "phigate_holds_db": str(workdir / "holds.db")})
        env = BENCH_ENV
        declared = lean_options()

        def gw_opts(node: str) -> dict[str, str]:
            return {k: v for k, v in {**opts, "phigate_node_id": node}.items() if k in declared}

        gateways = {
            "mitmdump + chain": Gateway(chroma.url, gw_opts("bench-mitmdump"), env=env),
            "lean, stock dispatch": Gateway(chroma.url, gw_opts("bench-lean-plain"), env=env, runner="lean",
                                            args=["--plain-dispatch"]),
            "lean + chain": Gateway(chroma.url, gw_opts("bench-lean"), env=env, runner="lean"),
        }
        bare.start()
        try:
            wait_http(f"http://127.0.0.1:{bare_port}/api/v2/heartbeat", 30)
            for gw in gateways.values():
                gw.start()
                # warm-up: the collection's UUID -> name is learned from a lookup by name
                with contextlib.suppress(RuntimeError):  # a refusal shows in the status check below
                    chroma_steps(gw.url, token, [{"op": "count", "collection": COLLECTION}])
                status = http_call("GET", f"{gw.url}{path}", headers={"Authorization": f"Bearer {token}"})[0]
                if status != 200:
                    raise SystemExit(f"the chain answers {status} to the benchmark request (policy must allow "
                                     f"{args.client} a count)")
            auth = {"Authorization": f"Bearer {token}"}
            assert bare.proc is not None
            targets: dict[str, tuple[str, dict[str, str], int]] = {
                "mitmdump bare": (f"http://127.0.0.1:{bare_port}{path}", {}, bare.proc.pid)}
            for name, gw in gateways.items():
                assert gw.proc.proc is not None
                targets[name] = (f"{gw.url}{path}", auth, gw.proc.proc.pid)
            rps: dict[str, list[float]] = {k: [] for k in targets}
            cpu: dict[str, list[float]] = {k: [] for k in targets}
            for _ in range(args.runs):
                for name, (url, headers, pid) in targets.items():
                    r, c = measure(url, headers, pid, args.seconds, args.connections)
                    rps[name].append(r)
                    cpu[name].append(c)
        finally:
            for gw in gateways.values():
                gw.stop()
            bare.stop()

    med = {k: statistics.median(v) for k, v in rps.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"small request: GET .../collections/<id>/count, {args.runs} runs x {args.seconds}s, "
          f"{args.connections} connections, wrk -t2")
    print(f"{'target':<24}{'req/s (median)':>16}{'CPU ms/req':>12}   runs")
    for k in targets:
        print(f"{k:<24}{med[k]:>16.0f}{cpu_med[k]:>12.3f}   {', '.join(f'{x:.0f}' for x in rps[k])}")
    base = med["mitmdump + chain"]
    print(f"lean + chain / mitmdump + chain: {med['lean + chain'] / base:.2f}x (target >= 2.0)")
    print(f"lean, stock dispatch / mitmdump + chain: {med['lean, stock dispatch'] / base:.2f}x")
    print(f"lean + chain / mitmdump bare: {med['lean + chain'] / med['mitmdump bare']:.2f}x")
    print(f"mitmdump + chain / mitmdump bare: {base / med['mitmdump bare']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
