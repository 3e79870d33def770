"""The phigate addon chain, in enforcement order: the one place that order is written down.

    mitmdump --mode reverse:http://127.0.0.1:8000@8443 -s addons/chain.py --set phigate_rules=rules/ ...

Order matters: mitmproxy calls each hook on every addon in this order, so identity must have run
before policy reads roles, and audit, last, sees every decision and holds the response until its
event is durable.
"""

from __future__ import annotations

import sys
from pathlib import Path

# mitmdump loads this file as a script, not as part of the package: make `addons` importable.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from addons.approvals import Approvals  # noqa: E402
from addons.audit import Audit  # noqa: E402
from addons.classify import Classify  # noqa: E402
from addons.forward import Forward  # noqa: E402
from addons.gateway import Gateway  # noqa: E402
from addons.identity import Identity  # noqa: E402
from addons.masking import Masking  # noqa: E402
from addons.policy import Policy  # noqa: E402


def build() -> list[object]:
    audit = Audit()
    return [
        Gateway(),  # options, start-up checks, rule reloads, /-/healthz and /-/readyz
        audit.gate,  # a ledger that cannot record refuses here: before classification, holds or paging
        Identity(),  # verify the OIDC access token (or refuse 401/400/503) -> ctx.identity
        Classify(),  # canonical target, backend profile: method + path + body -> ctx.operation (or 400)
        Policy(),  # default-deny rules -> ctx.decision (403 with rule id and reason)
        Approvals(),  # hold risky requests until a human decides (admin API + console) -> ctx.hold
        Forward(),  # final gate: only allowed or released flows leave; credential swap
        Masking(),  # detokenize request handles, mask responses per role (or 502) -> ctx.masking
        audit,  # last: a durable intent before the request leaves, a durable signed event before the response
    ]


addons = build()
