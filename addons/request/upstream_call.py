"""One HTTP/1.0 exchange with the backend, made by the gateway itself (not a client's flow).

Used where the gateway must ask the backend something outside a flow's own exchange: the name of a
collection id it never saw (name_lookup), the same request again once an approver released an
answer the gateway had withheld (approvals), a cheap health call for readiness (gateway).
HTTP/1.0: the answer is never chunked and ends when the backend closes, so no HTTP client library
is needed and nothing is pooled or reused between callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Upstream:
    scheme: str
    host: str
    port: int
    verify: bool = True
    cafile: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]  # as received, names lower-cased
    body: bytes


class AnswerTooLarge(ValueError):
    pass


def _tls(upstream: Upstream) -> ssl.SSLContext | None:
    if upstream.scheme != "https":
        return None
    context = ssl.create_default_context(cafile=upstream.cafile)
    if not upstream.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def call(upstream: Upstream, method: str, path: str, headers: Mapping[str, str],
               body: bytes = b"", max_bytes: int = 1 << 20) -> Answer:
    """Send one request; raise OSError, ssl.SSLError, ValueError (not HTTP, or over max_bytes)."""
    reader, writer = await asyncio.open_connection(upstream.host, upstream.port, ssl=_tls(upstream))
    try:
        host = upstream.host if ":" not in upstream.host else f"[{upstream.host}]"
        lines = [f"{method} {path} HTTP/1.0", f"Host: {host}:{upstream.port}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        data = b""
        while len(data) <= max_bytes:
            chunk = await reader.read(min(1 << 20, max_bytes + 1 - len(data)))
            if not chunk:
                break
            data += chunk
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    if len(data) > max_bytes:
        raise AnswerTooLarge(f"the answer is larger than {max_bytes} bytes")
    head, _, payload = data.partition(b"\r\n\r\n")
    first, *fields = head.split(b"\r\n")
    status_line = first.split()
    if len(status_line) < 2 or not status_line[1].isdigit() or not first.startswith(b"HTTP/"):
        raise ValueError("not an HTTP answer")
    parsed = []
    for field in fields:
        name, sep, value = field.partition(b":")
        if sep:
            parsed.append((name.strip().decode("latin-1").lower(), value.strip().decode("latin-1")))
    if any(k == "transfer-encoding" and v.lower() != "identity" for k, v in parsed):
        # HTTP/1.0 answers are never chunked; one that is cannot be trusted to be read right.
        raise ValueError("a transfer-encoded answer to an HTTP/1.0 request")
    return Answer(int(status_line[1]), tuple(parsed), payload)
