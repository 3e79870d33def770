"""Benchmark: the cost masking adds to a ~1 MB Chroma query response, and to small responses.

    .phigate/venv/bin/python -m tests.bench.bench_masking

In-process, through the Masking addon's real hooks (taddons/tflow): a Chroma /query response of 100
hits with 1536-d vectors and ~1 KB clinical notes, masked for an agent (tokenize mrn + name, generalize
dob, detect on documents) versus the same response for a role with nothing to mask (parse for the
accounting of disclosures only) versus no masking addon at all. Medians over several runs.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections.abc import Callable

import orjson
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from addons.context import Identity, Operation, OpKind, context
from addons.gateway import Gateway
from addons.masking import Masking
from tests.support.masking_fixtures import TEST_KEY, chroma_profile
from tests.support.phi_corpus import Generator

PATH = "/api/v2/tenants/t/databases/d/collections/c0ffee00-0000-0000-0000-000000000000/query"


def query_body(hits: int = 100, dim: int = 1536, seed: int = 7) -> bytes:
    rnd = random.Random(seed)
    gen = Generator(seed)
    docs = []
    for _ in range(hits):
        text = ""
        while len(text) < 1000:
            text += gen.note().text + " "
        docs.append(text[:1100])
    body = {
        "ids": [[f"rec-{i}" for i in range(hits)]],
        # float32 values written the way Chroma's server writes them (shortest repr of the f32)
        "embeddings": [[[float(f"{rnd.uniform(-1, 1):.7g}") for _ in range(dim)] for _ in range(hits)]],
        "documents": [docs],
        "uris": None,
        "metadatas": [[{"mrn": str(1000000 + i), "patient_name": gen.name(), "dob": "1961-03-05",
                        "ward": "cardio"} for i in range(hits)]],
        "distances": [[rnd.random() for _ in range(hits)]],
        "include": ["documents", "metadatas", "distances", "embeddings"],
    }
    return orjson.dumps(body)


def small_body() -> bytes:
    return orjson.dumps({"ids": [["p1"]], "embeddings": None, "documents": [["Follow-up, stable."]],
                         "uris": None, "metadatas": [[{"mrn": "1234567", "ward": "cardio"}]],
                         "distances": [[0.12]], "include": ["documents", "metadatas", "distances"]})


def flow_for(body: bytes, roles: frozenset[str]) -> http.HTTPFlow:
    f = tflow.tflow(resp=True)
    f.request.method, f.request.path = "POST", PATH
    f.response = http.Response.make(200, body, {"content-type": "application/json"})
    c = context(f)
    c.identity = Identity("bench", "iss", roles, "jti", 0)
    c.operation = Operation("chroma", OpKind.SEARCH, "chroma.query", "POST", PATH)
    return f


def timed(fn: Callable[[], None], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    os.environ["PHIGATE_TOKEN_KEYS"] = "k1=" + TEST_KEY
    big, small = query_body(), small_body()
    m = Masking(chroma_profile())
    with taddons.context(Gateway(), m) as tctx:
        tctx.configure(m, phigate_rules="rules", phigate_profile="chroma")

        def hooks(body: bytes, roles: frozenset[str]) -> Callable[[], None]:
            def run() -> None:
                f = flow_for(body, roles)
                m.responseheaders(f)
                m.response(f)
                assert f.response is not None and f.response.status_code == 200, f.response
            return run

        def bare(body: bytes) -> Callable[[], None]:
            def run() -> None:
                flow_for(body, frozenset({"agent"}))
            return run

        runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
        print(f"1 MB-class Chroma query response: {len(big) / 1e6:.2f} MB, 100 hits x 1536-d, ~1 KB notes")
        results = {}
        cases = (("flow only (no masking)", bare(big)),
                 ("clinician (account only)", hooks(big, frozenset({"clinician"}))),
                 ("agent (tokenize+detect)", hooks(big, frozenset({"agent"}))))
        for name, fn in cases:
            fn()
            xs = timed(fn, runs)
            results[name] = statistics.median(xs)
            print(f"  {name:28} p50 {statistics.median(xs):7.2f} ms   p90 {sorted(xs)[int(len(xs) * 0.9)]:7.2f} ms")
        base = results["flow only (no masking)"]
        print(f"  masking adds (agent):      {results['agent (tokenize+detect)'] - base:.2f} ms p50 (target < 15 ms)")
        print(f"  accounting adds (clinician): {results['clinician (account only)'] - base:.2f} ms p50")
        small_results = {}
        for name, fn in (("flow only", bare(small)), ("agent", hooks(small, frozenset({"agent"})))):
            fn()
            xs = timed(fn, runs * 20)
            small_results[name] = statistics.median(xs)
        add = small_results["agent"] - small_results["flow only"]
        print(f"small response: masking adds {add * 1000:.0f} us p50 per request")
        print("  compare with bare mitmdump's per-request cost (tests/bench/bench_gateway.py):"
              " target < 10% of it")


if __name__ == "__main__":
    main()
