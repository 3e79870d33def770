"""JSON answers the gateway gives by itself: refusals and its own endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from mitmproxy import http

from addons.core.context import Refusal, Stage, context

JSON_HEADERS = {"content-type": "application/json", "cache-control": "no-store"}


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> http.Response:
    return http.Response.make(status, orjson.dumps(body), {**JSON_HEADERS, **(headers or {})})


def refuse(
    flow: http.HTTPFlow,
    stage: Stage,
    status: int,
    error: str,
    detail: str,
    *,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer the client with `{"error", "detail", ...}` and record why in the flow context.

    `detail` is shown to the client and stored in the audit: it must never carry a token or PHI.
    """
    ctx = context(flow)
    ctx.refusal = Refusal(stage=stage, status=status, error=error, detail=detail)
    ctx.answered_by_gateway = True
    body: dict[str, Any] = {"error": error, "detail": detail, "request_id": ctx.request_id}
    if extra:
        body.update(extra)
    flow.response = json_response(status, body, headers)
