"""Two changes to mitmproxy's HTTP layer that an addon hook cannot make.

1. The answer to a failed exchange. mitmproxy answers the client itself, after the `error` hook,
   with an HTML page (`Server: mitmproxy`) that quotes its error message, and that message can quote
   the upstream's bytes (a backend that answers with something other than HTTP). Threat: PHI in
   those bytes reaching the client. An `error` hook that set `flow.response` and marked the flow with
   GATEWAY_ANSWER has that response sent instead of the page.
2. HTTP/1 trailers. mitmproxy raises NotImplementedError on a chunked body with trailers, which
   kills the connection with no `error` or `response` hook (so no audit event). They become an
   HTTP/1 protocol error instead, which takes the ordinary failed-exchange path (1.).

`install()` is idempotent and checks that the mitmproxy internals it replaces are still there: a
mitmproxy upgrade that moved them stops the gateway at load rather than silently restoring the page.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from addons.core.upstream_errors import TRAILERS_REFUSED

GATEWAY_ANSWER = "phigate.gateway_answer"
_installed = False


class WireError(RuntimeError):
    """mitmproxy's HTTP layer is not the one these changes were written for."""


def install() -> None:
    global _installed
    if _installed:
        return
    try:
        import h11
        from mitmproxy.proxy.layers import http as layers_http
        from mitmproxy.proxy.layers.http import _http1
        from mitmproxy.proxy.layers.http._events import (
            ResponseData,
            ResponseEndOfMessage,
            ResponseHeaders,
            ResponseProtocolError,
        )
        from mitmproxy.proxy.layers.http._http1 import Http1Server

        original = layers_http.HttpLayer.event_to_child
        base_reader: Any = getattr(_http1, "ChunkedReader")  # noqa: B009 - not re-exported; checked here
    except (ImportError, AttributeError) as exc:
        raise WireError(f"mitmproxy's HTTP layer changed ({exc}); phigate cannot replace its error page") from exc

    def event_to_child(self: Any, child: Any, event: Any) -> Generator[Any, Any, None]:
        if isinstance(event, ResponseProtocolError) and self.connections.get(self.context.client) is child:
            stream = self.streams.get(event.stream_id)
            flow = getattr(stream, "flow", None)
            answer = flow.response if flow is not None else None
            if flow is not None and answer is not None and flow.metadata.get(GATEWAY_ANSWER) and not answer.stream:
                if isinstance(child, Http1Server):
                    # The upstream connection is gone mid-exchange: end this client connection too.
                    answer.headers["connection"] = "close"
                yield from original(self, child, ResponseHeaders(event.stream_id, answer, False))
                yield from original(self, child, ResponseData(event.stream_id, answer.raw_content or b""))
                yield from original(self, child, ResponseEndOfMessage(event.stream_id))
                return
        yield from original(self, child, event)

    class NoTrailersReader(base_reader):  # type: ignore[misc]
        def __call__(self, buf: Any) -> Any:
            event = super().__call__(buf)
            if isinstance(event, h11.EndOfMessage) and event.headers:
                raise h11.RemoteProtocolError(TRAILERS_REFUSED)
            return event

    layers_http.HttpLayer.event_to_child = event_to_child  # type: ignore[method-assign]
    setattr(_http1, "ChunkedReader", NoTrailersReader)  # noqa: B010 - see base_reader
    _installed = True
