"""Runtime errors logged while mitmproxy is still starting up.

mitmproxy's errorcheck addon exits the process (status 1) when anything is logged at ERROR before
start-up completes, that is until every addon's `running` hook has returned. That is right for
configuration errors (a bad rule file must stop the gateway). But the listener is already open by
then and background tasks already run, so a runtime condition in that window stopped the gateway
at random. CI caught one: the first signing-key fetch from an unreachable IdP failed while the
audit addon was still opening its ledger, and the gateway exited instead of refusing with 503.

Runtime conditions (a dependency that does not answer, a request refused) are therefore logged
through `runtime_error`: at WARNING while that check is listening, at ERROR after. The condition
itself is still reported where it matters: the refusal sent to the client, its audit record, and
`/-/readyz`.
"""

from __future__ import annotations

import logging

from mitmproxy.addons.errorcheck import ErrorCheckHandler

# What the check would be handed: its own filter decides whether it would keep it (mitmproxy's log
# handlers also ignore records from other tests than the one that installed them).
_PROBE = logging.LogRecord("phigate", logging.ERROR, __file__, 0, "probe", None, None)


def starting_up() -> bool:
    """True while mitmproxy's start-up check is listening (an ERROR record would stop the process)."""
    return any(isinstance(h, ErrorCheckHandler) and h.filter(_PROBE) for h in logging.getLogger().handlers)


def runtime_error(logger: logging.Logger, msg: str, *args: object) -> None:
    """Log a runtime condition at ERROR, or at WARNING while starting up (see the module docstring)."""
    logger.log(logging.WARNING if starting_up() else logging.ERROR, msg, *args)
