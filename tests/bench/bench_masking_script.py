"""mitmdump script for bench_masking.py: the Masking addon alone, behind a stand-in for identity and
classification (the bench measures masking, not token checks).

    mitmdump -s tests/bench/bench_masking_script.py --set phigate_rules=rules --set phigate_profile=chroma

The caller's roles come from the `x-bench-role` header; every request is treated as chroma.query.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from mitmproxy import http  # noqa: E402

from addons.core.context import Caller, Operation, OpKind, context  # noqa: E402
from addons.gateway import Gateway  # noqa: E402
from addons.masking import Masking  # noqa: E402


class BenchIdentity:
    def request(self, flow: http.HTTPFlow) -> None:
        c = context(flow)
        role = flow.request.headers.get("x-bench-role", "agent")
        c.identity = Caller("bench", "bench", frozenset({role}), "bench", 0)
        c.operation = Operation("chroma", OpKind.SEARCH, "chroma.query", "POST", flow.request.path)


# PHIGATE_BENCH_NO_MASKING=1: the same process without the masking addon, to isolate its share.
addons = [Gateway(), BenchIdentity()] + ([] if os.environ.get("PHIGATE_BENCH_NO_MASKING") else [Masking()])
