"""The core chain only (identity + classify + policy + forward), for tests/bench/bench_gateway.py.

This measures the cost of identity and policy alone; masking and audit have their own benchmarks.
Loaded as `mitmdump -s tests/bench/chain_core.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from addons.classify import Classify  # noqa: E402
from addons.forward import Forward  # noqa: E402
from addons.gateway import Gateway  # noqa: E402
from addons.identity import Identity  # noqa: E402
from addons.policy import Policy  # noqa: E402

addons = [Gateway(), Identity(), Classify(), Policy(), Forward()]
