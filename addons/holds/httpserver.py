"""A small HTTP/1.1 server on asyncio streams and h11 (installed with mitmproxy), for the admin API.

It runs on mitmproxy's event loop but on its own listener, so approvers never share a port (or a
TLS certificate, or a log) with the traffic they review. Bodies are capped and idle connections
closed, because the listener faces people with browsers, not only trusted tools.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import h11
import orjson

from addons.core.startup import runtime_error

log = logging.getLogger("phigate")

MAX_BODY = 64 * 1024
IDLE_TIMEOUT_S = 30.0

# Every answer: no caching of hold data by browsers or proxies, no framing (clickjacking an approve
# button), no MIME sniffing, and a CSP that allows only this listener's own script (a requester
# controls the text of their request summary: no inline script may ever run).
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    peer: str


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def json_answer(status: int, body: object, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, orjson.dumps(body), "application/json", headers or {})


Handler = Callable[[Request], Awaitable[Response]]


async def _read_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT_S)
        conn.receive_data(data)


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, response: Response) -> None:
    headers = [(k, v) for k, v in {**SECURITY_HEADERS, **response.headers}.items()]
    headers += [("content-type", response.content_type), ("content-length", str(len(response.body)))]
    writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)) or b"")
    writer.write(conn.send(h11.Data(data=response.body)) or b"")
    writer.write(conn.send(h11.EndOfMessage()) or b"")
    await writer.drain()


async def _serve_connection(handler: Handler, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    conn = h11.Connection(h11.SERVER)
    peer = str(writer.get_extra_info("peername"))
    try:
        while True:
            event = await _read_event(conn, reader)
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            target = event.target.decode("ascii", "replace")
            path, _, qs = target.partition("?")
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            body = bytearray()
            too_big = False
            while True:
                part = await _read_event(conn, reader)
                if isinstance(part, h11.Data):
                    body += part.data
                    if len(body) > MAX_BODY:
                        too_big = True
                        break
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return
            if too_big:
                await _send(conn, writer, json_answer(413, {"error": "too_large",
                                                            "detail": f"bodies are limited to {MAX_BODY} bytes"}))
                return
            request = Request(event.method.decode().upper(), urllib.parse.unquote(path),
                              dict(urllib.parse.parse_qsl(qs)), headers, bytes(body), peer)
            try:
                response = await handler(request)
            except Exception as exc:  # noqa: BLE001 - a handler bug answers 500, never kills the listener
                runtime_error(log, "phigate admin API: %s %s failed (%s)", request.method, path, type(exc).__name__)
                response = json_answer(500, {"error": "internal_error", "detail": "the admin API failed"})
            await _send(conn, writer, response)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, h11.LocalProtocolError):
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                await _send(conn, writer, json_answer(400, {"error": "bad_request", "detail": "malformed HTTP"}))
            except (h11.LocalProtocolError, OSError):
                pass
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, handler: Handler, *, tls: ssl.SSLContext | None = None,
                reuse_port: bool = False) -> asyncio.Server:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(handler, reader, writer)

    return await asyncio.start_server(on_connect, host, port, ssl=tls, reuse_port=reuse_port or None,
                                      limit=MAX_BODY * 2)
