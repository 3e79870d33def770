"""Per-request cost of the Classify and Policy request hooks on the real Chroma captures.

    .phigate/venv/bin/python -m tests.bench.bench_classify [--runs 5] [--iterations 2000]

The end-to-end figures (direct vs bare mitmdump vs the gateway) are in bench_gateway.py; this one
isolates what classification and policy add to each request, in-process, so the number is not
drowned by the shared machine's network noise. Budget: the whole gateway adds < 2 ms p50.
Prints, per capture kind, the median over runs of the per-request p50 and p99 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from addons.classify import Classify
from addons.config import rulefiles
from addons.core.context import Caller, context
from addons.gateway import Gateway
from addons.policy import Policy
from tests.support.masking_fixtures import CHROMA_CAPTURES

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = CHROMA_CAPTURES
SAMPLES = {  # capture -> label
    "004_GET_api_v2_heartbeat.json": "heartbeat (GET, no body)",
    "010_POST_t_tenant_databases_default_database_collections_f43b389c-34ca-4a94-9620-85cc91eb9677_query.json":
        "query (POST, 0.3 KB)",
    "011_POST_ult_tenant_databases_default_database_collections_f43b389c-34ca-4a94-9620-85cc91eb9677_get.json":
        "get by filter (POST)",
    "008_POST_ult_tenant_databases_default_database_collections_f43b389c-34ca-4a94-9620-85cc91eb9677_add.json":
        "add 4 records (POST, 0.9 KB)",
}
CLINICIAN = Caller(subject="bench", issuer="bench", roles=frozenset({"clinician", "db-admin"}),
                     token_id="bench", expires_at=4e9)


def make_flow(doc: dict[str, Any]) -> http.HTTPFlow:
    f = tflow.tflow()
    f.request.method = doc["method"]
    f.request.path = doc["path"]
    f.request.headers = http.Headers(content_type="application/json")
    body = (doc.get("request_body") or {}).get("json")
    f.request.raw_content = orjson.dumps(body) if body is not None else b""
    context(f).identity = CLINICIAN
    return f


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(hooks: list[Any], doc: dict[str, Any], iterations: int) -> tuple[float, float]:
    flows = [make_flow(doc) for _ in range(iterations)]  # built outside the timed part
    times: list[float] = []
    for f in flows:
        start = time.perf_counter()
        for hook in hooks:
            result = hook(f)
            if inspect.isawaitable(result):  # Classify.request is async (it may ask the backend)
                await result
        times.append((time.perf_counter() - start) * 1e6)
    return percentile(times, 0.5), percentile(times, 0.99)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    rulefiles.forget_all()
    gateway, classify, policy = Gateway(), Classify(), Policy()
    with taddons.context(gateway, classify, policy) as tctx:
        tctx.configure(classify, phigate_rules=str(ROOT / "rules"), phigate_profile="chroma")
        classify.names.learn("f43b389c-34ca-4a94-9620-85cc91eb9677", "patients_notes")
        print(f"{'request':32} {'p50 us':>8} {'p99 us':>8} {'bare p50':>9} {'of 2 ms':>8}")
        for name, label in SAMPLES.items():
            doc = json.loads((FIXTURES / name).read_text())
            bare = [(await measure([lambda f: None], doc, args.iterations))[0] for _ in range(args.runs)]
            runs = [await measure([classify.request, policy.request], doc, args.iterations)
                    for _ in range(args.runs)]
            p50 = statistics.median(r[0] for r in runs)
            p99 = statistics.median(r[1] for r in runs)
            print(f"{label:32} {p50:8.1f} {p99:8.1f} {statistics.median(bare):9.2f} {p50 / 2000:8.1%}")


if __name__ == "__main__":
    asyncio.run(main())
