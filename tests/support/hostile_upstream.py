"""A loopback backend that answers with canned bytes: whatever a misbehaving or compromised backend
could send (unlisted keys, wrong shapes, PHI in headers and error bodies, bytes that are not HTTP,
trailers, a 101), for tests of what the gateway lets through.

Raw sockets rather than http.server: most of these answers are not valid HTTP, or are HTTP that a
well-behaved server library would refuse to produce. Each connection gets one answer (then the
connection is closed), chosen by the request path: `answers[path]` is either raw bytes or an
`Answer` turned into bytes here. Every request path is kept in `seen`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP/1.1 response, assembled as given (headers are not checked or completed, except a
    Content-Length when `length` is True and the body is not chunked)."""

    status: int = 200
    body: bytes | Any = b""  # bytes as they are; anything else as JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    trailers: Mapping[str, str] = field(default_factory=dict)  # sends the body chunked
    length: bool = True

    def raw(self) -> bytes:
        body = self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)
        head = [f"HTTP/1.1 {self.status} X"]
        headers = dict(self.headers)
        if "content-type" not in {k.lower() for k in headers} and not isinstance(self.body, bytes):
            headers["Content-Type"] = "application/json"
        if self.trailers:
            headers["Transfer-Encoding"] = "chunked"
        elif self.length:
            headers["Content-Length"] = str(len(body))
        head += [f"{k}: {v}" for k, v in headers.items()]
        out = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if self.trailers:
            tail = "".join(f"{k}: {v}\r\n" for k, v in self.trailers.items()).encode("latin-1")
            return out + b"%x\r\n%s\r\n0\r\n%s\r\n" % (len(body), body, tail)
        return out + body


class HostileUpstream:
    def __init__(self, answers: Mapping[str, bytes | Answer] | None = None,
                 default: bytes | Answer = Answer(404, {"error": "NotFoundError", "message": "no route"})) -> None:
        self.answers: dict[str, bytes | Answer] = dict(answers or {})
        self.default = default
        self.seen: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop = False

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next((int(v) for k, _, v in (ln.partition(":") for ln in lines[1:])
                               if k.strip().lower() == "content-length"), 0)
                while len(rest) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
                path = lines[0].split(" ")[1].split("?", 1)[0]
                self.seen.append(path)
                answer = self.answers.get(path, self.default)
                conn.sendall(answer.raw() if isinstance(answer, Answer) else answer)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                return

    def __enter__(self) -> HostileUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._sock.close()
