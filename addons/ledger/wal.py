"""The write-ahead segment: one JSON line per record, appended and fsync'd in groups.

Line: {"k": kind, "s": seq, "h": leaf hash hex, "e": canonical entry as a JSON string}. Checkpoint
lines have no seq or leaf hash. The entry travels as a string so its exact hashed bytes survive
(a JSON object could be re-serialised differently by any reader on the way).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from addons.ledger import merkle


class WalCorrupt(ValueError):
    """A complete line in a write-ahead segment that does not parse or does not hash right."""


@dataclass(frozen=True, slots=True)
class WalRecord:
    kind: str
    seq: int | None
    leaf: bytes | None
    entry: bytes
    end: int = 0  # byte offset just past this record's line


# Every line the writer appends starts with these bytes (a partial last line too).
RECORD_PREFIX = b'{"k":"'


def encode_line(kind: str, seq: int | None, leaf: bytes | None, entry: bytes) -> bytes:
    head = b'{"k":"%s","s":%s,"h":%s,"e":' % (
        kind.encode(), b"null" if seq is None else str(seq).encode(),
        b"null" if leaf is None else b'"' + leaf.hex().encode() + b'"',
    )
    return head + orjson.dumps(entry.decode()) + b"}\n"


def complete_bytes(path: Path) -> tuple[bytes, int]:
    """The file's bytes up to its last newline, and the file's size (a crash can cut the last line)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    return data[:end], len(data)


def parse(data: bytes, where: str, check_hashes: bool = True) -> Iterator[WalRecord]:
    start, lineno = 0, 0
    while start < len(data):
        nl = data.find(b"\n", start)
        end = len(data) if nl < 0 else nl + 1
        line = data[start:end]
        start, lineno = end, lineno + 1
        try:
            obj = orjson.loads(line)
            kind, seq, h, e = obj["k"], obj["s"], obj["h"], obj["e"].encode()
            leaf = bytes.fromhex(h) if h is not None else None
            if not isinstance(kind, str) or not (seq is None or type(seq) is int):
                raise TypeError("kind must be a string and seq an integer")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise WalCorrupt(f"{where} line {lineno}: not a ledger record ({type(exc).__name__})") from exc
        if check_hashes and leaf is not None and merkle.leaf_hash(e) != leaf:
            raise WalCorrupt(f"{where} line {lineno}: seq {seq} does not hash to its leaf hash")
        yield WalRecord(kind, seq, leaf, e, end)


def fsync_dir(directory: Path) -> None:
    """Make a create/rename/unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AppendFile:
    """An append-only file written with os.write and made durable with fdatasync."""

    def __init__(self, path: Path) -> None:
        self.path = path
        existed = path.exists()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.size = os.fstat(self.fd).st_size
        if not existed:
            fsync_dir(path.parent)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        os.fsync(self.fd)
        self.size = size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
