"""The core chain (identity + classify + policy + forward) in the lean engine, for bench_gateway.py.

    python -m tests.bench.lean_core --mode reverse:URL@HOST:PORT --set ...

The core chain benchmark measures identity + policy as the gateway runs them; `./run.sh gateway` runs the lean engine.
"""

from __future__ import annotations

import sys

from addons.classify import Classify
from addons.forward import Forward
from addons.gateway import Gateway
from addons.identity import Identity
from addons.policy import Policy
from addons.runtime.engine import main

if __name__ == "__main__":
    sys.exit(main(chain=[Gateway(), Identity(), Classify(), Policy(), Forward()]))
