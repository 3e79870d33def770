"""A loopback HTTP server that plays one backend's recorded responses and records what it received.

For the backends with no server installable here (Qdrant, Pinecone, Weaviate, OpenSearch, mem0) the
real Python clients are pointed at this server, directly or through the gateway. It answers each
route of the backend with a response built from that backend's published API documents
(tests/fixtures/backends/<backend>/responses.json), and keeps every request it got, so a test can
check what the real client sent and that nothing the gateway refused ever reached the backend.

Fixture format (one file per backend):

    {"backend": "qdrant", "source": "...", "routes": [
        {"id": "qdrant.query", "method": "POST", "path": "/collections/{collection}/points/query",
         "status": 200, "json": {...}},                  # or "text": "...", or "base64": "..."
        ...]}

`method` may list alternatives ("GET|POST"); `{name}` in `path` matches one path segment,
`{name+}` one or more; `when_query` makes a route answer only when that query parameter is present.
The first matching route answers; anything else gets a 404 like a backend's.

    python -m tests.support.recorded_upstream qdrant --port 6333    # serve one backend by hand
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "backends"
BACKENDS = ("qdrant", "pinecone", "weaviate", "milvus", "opensearch", "mem0")


@dataclass(frozen=True, slots=True)
class Recorded:
    """One canned answer."""

    id: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str]
    when_query: str | None  # answer only when this query parameter is present (OpenSearch ?scroll=)


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the upstream saw it (after the gateway, when there is one)."""

    method: str
    path: str  # path with query string, as sent
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    route_id: str | None  # the recorded route that answered, None for a 404

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def bare_path(self) -> str:
        return self.path.split("?", 1)[0]


def _compile_path(template: str) -> re.Pattern[str]:
    out = ""
    for part in re.split(r"(\{[a-zA-Z_]+\+?\})", template):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            out += f"(?P<{name[:-1]}>.+)" if name.endswith("+") else f"(?P<{name}>[^/]+)"
        else:
            out += re.escape(part)
    return re.compile(f"^{out}/?$")


def load_fixture(backend: str, fixtures: Path = FIXTURES) -> list[Recorded]:
    doc = json.loads((fixtures / backend / "responses.json").read_text())
    routes = []
    for r in doc["routes"]:
        if "json" in r:
            body, ctype = json.dumps(r["json"]).encode(), "application/json"
        elif "base64" in r:
            body, ctype = base64.b64decode(r["base64"]), "application/octet-stream"
        else:
            body, ctype = str(r.get("text", "")).encode(), "text/plain; charset=utf-8"
        routes.append(Recorded(
            id=r["id"],
            methods=frozenset(m.upper() for m in r["method"].split("|")),
            pattern=_compile_path(r["path"]),
            status=int(r.get("status", 200)),
            body=body,
            content_type=r.get("content_type", ctype),
            headers=r.get("headers", {}),
            when_query=r.get("when_query"),
        ))
    return routes


def recorded_json(backend: str, route_id: str) -> Any:
    """The recorded JSON body of one route (for tests that work on responses without a server)."""
    doc = json.loads((FIXTURES / backend / "responses.json").read_text())
    for r in doc["routes"]:
        if r["id"] == route_id:
            return r["json"]
    raise KeyError(f"{backend}: no recorded route {route_id!r}")


@dataclass
class RecordedUpstream:
    """Serve one backend's recorded responses on 127.0.0.1 (a free port unless given)."""

    backend: str
    port: int = 0
    fixtures: Path = FIXTURES
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.routes = load_fixture(self.backend, self.fixtures)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def match(self, method: str, path: str) -> Recorded | None:
        bare, _, query = path.partition("?")
        params = {p.split("=", 1)[0] for p in query.split("&") if p}
        for route in self.routes:
            if route.when_query is not None and route.when_query not in params:
                continue
            if method in route.methods and route.pattern.match(bare):
                return route
        return None

    def requests(self, route_id: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if route_id is None or r.route_id == route_id]

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    def start(self) -> RecordedUpstream:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = self._read_chunked()
                else:
                    body = self.rfile.read(length) if length else b""
                route = upstream.match(self.command, self.path)
                headers: dict[str, str] = {}
                for name, value in self.headers.items():
                    key = name.lower()
                    headers[key] = f"{headers[key]}, {value}" if key in headers else value
                with upstream._lock:
                    upstream.received.append(
                        Received(self.command, self.path, headers, body, route.id if route else None)
                    )
                if route is None:
                    status, ctype, extra = 404, "application/json", {}
                    payload = json.dumps({"error": "not found", "path": self.path.split("?", 1)[0]}).encode()
                else:
                    status, ctype, payload, extra = route.status, route.content_type, route.body, route.headers
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for k, v in extra.items():
                    self.send_header(k, v)
                no_body = self.command == "HEAD" or status in (204, 304)
                self.send_header("Content-Length", "0" if no_body and status != 200 else str(len(payload)))
                self.end_headers()
                if not no_body:
                    self.wfile.write(payload)

            def _read_chunked(self) -> bytes:
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"upstream-{self.backend}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> RecordedUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - manual use
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("backend", choices=BACKENDS)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    up = RecordedUpstream(args.backend, args.port).start()
    print(f"{args.backend} recorded upstream on {up.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        up.stop()


if __name__ == "__main__":
    main()
