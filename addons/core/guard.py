"""Fail-closed wrappers for enforcing hooks.

mitmproxy fails open: when a hook raises, it logs "Addon error" and the flow continues with the
original request or response. Every hook that enforces something is wrapped here so that any
exception becomes a refusal the audit addon records, never a forwarded request or an unmasked
response.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from mitmproxy import http

from addons.core.context import Stage
from addons.core.respond import refuse
from addons.core.startup import runtime_error

log = logging.getLogger("phigate")

Hook = TypeVar("Hook", bound=Callable[..., Any])

# Request-side hooks: they must not act on a flow that already has an answer (an earlier addon
# refused it, or the client went away). Response hooks always run: they guard what leaves.
REQUEST_HOOKS = frozenset({"requestheaders", "request"})


def is_settled(flow: http.HTTPFlow) -> bool:
    """True when an enforcing request hook must not act: the flow already has an answer."""
    return flow.response is not None or flow.error is not None


def _fail(flow: http.HTTPFlow, stage: Stage, status: int, exc: BaseException) -> None:
    # Log only the exception type: messages can echo request values (PHI, tokens).
    runtime_error(log, "phigate %s hook failed (%s); refusing the flow", stage, type(exc).__name__)
    refuse(flow, stage, status, "gateway_error", f"the gateway could not complete the {stage} step")

def fail_closed(stage: Stage, status: int = 500) -> Callable[[Hook], Hook]:
    """Turn any exception raised by the wrapped `(self, flow)` hook into a refusal.

    A request-side hook is not called at all for a flow that is already settled.
    Use status 500/503 for request hooks and 502 for response hooks (the upstream answered, but
    the gateway could not make that answer safe to release).
    """

    def wrap(hook: Hook) -> Hook:
        skips_settled = hook.__name__ in REQUEST_HOOKS
        if inspect.iscoroutinefunction(hook):

            @functools.wraps(hook)
            async def async_guarded(self: Any, flow: http.HTTPFlow) -> None:
                if skips_settled and is_settled(flow):
                    return
                try:
                    await hook(self, flow)
                except Exception as exc:  # noqa: BLE001 - the whole point is to catch everything
                    _fail(flow, stage, status, exc)

            return async_guarded  # type: ignore[return-value]

        @functools.wraps(hook)
        def guarded(self: Any, flow: http.HTTPFlow) -> None:
            if skips_settled and is_settled(flow):
                return
            try:
                hook(self, flow)
            except Exception as exc:  # noqa: BLE001
                _fail(flow, stage, status, exc)

        return guarded  # type: ignore[return-value]

    return wrap
