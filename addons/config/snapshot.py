"""One rules version per flow.

The first hook a flow meets (the Gateway addon's `requestheaders`) pins the rules snapshot in force
on the flow's context; every later addon reads its rules through `pinned`, so a flow is classified,
decided, held and masked under one version even when rule files are edited while it is in flight,
and the audit records that version.
"""

from __future__ import annotations

from mitmproxy import http

from addons.config.rulefiles import RulesSnapshot, WatchedFile, current_snapshot
from addons.core.context import context


def rules_for(flow: http.HTTPFlow) -> RulesSnapshot:
    """The flow's rules snapshot, pinned now if no earlier hook pinned one."""
    c = context(flow)
    if c.rules is None:
        c.rules = current_snapshot()
    return c.rules


def pinned[T](flow: http.HTTPFlow, wf: WatchedFile[T]) -> T:
    """`wf`'s compiled rules as they were when the flow arrived."""
    return rules_for(flow).of(wf)
