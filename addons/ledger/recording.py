"""Encrypted session recordings: each exchange's request and response, as delivered, under AES-GCM.

A recording line: {"request_id", "session_id", "seq", "ts", "key_id", "nonce", "ct"}. The plaintext
is the JSON exchange (method, path, headers without credentials, bodies base64); the ledger event
commits to SHA-256 of that plaintext, never to the plaintext, so deleting expired recording files
(one per UTC day) leaves every leaf verifiable. The AAD binds the ciphertext to its request id,
session and seq: a recording cannot be moved onto another event without failing to decrypt.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# Credentials never enter a recording: a replay must not hand anyone a working token.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                            "api-key", "x-chroma-token", "x-goog-api-key"})


class RecordingKeyError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RecordingKey:
    key_id: str
    key: bytes

    @classmethod
    def parse(cls, text: str, where: str) -> RecordingKey:
        """`KEY_ID:BASE64_KEY` or just BASE64/HEX key (id = hash prefix); 128, 192 or 256-bit."""
        text = text.strip()
        key_id, _, material = text.rpartition(":")
        raw: bytes | None = None
        for decode in (base64.b64decode, bytes.fromhex):
            try:
                raw = decode(material)
            except (ValueError, binascii.Error):
                continue
            if len(raw) in (16, 24, 32):
                break
            raw = None
        if raw is None:
            raise RecordingKeyError(f"{where}: expected [KEY_ID:]KEY with a 16/24/32-byte AES key in base64 or hex")
        return cls(key_id or hashlib.sha256(raw).hexdigest()[:12], raw)


def load_keys(key_file: str = "", key_env: str = "") -> dict[str, RecordingKey]:
    """Recording keys, one per line (`KEY_ID:KEY`); the first is used to encrypt, all to decrypt."""
    text = ""
    where = ""
    if key_file:
        try:
            text, where = Path(key_file).read_text(), key_file
        except OSError as exc:
            raise RecordingKeyError(f"{key_file}: cannot read the recording key ({exc.strerror})") from exc
    elif key_env and os.environ.get(key_env):
        text, where = os.environ[key_env], f"env {key_env}"
    keys: dict[str, RecordingKey] = {}
    for line in text.replace(",", "\n").splitlines():
        if line.strip():
            k = RecordingKey.parse(line, where)
            keys[k.key_id] = k
    return keys


def exchange_payload(
    method: str, url: str, req_headers: Mapping[str, str], req_body: bytes | None,
    status: int | None, resp_headers: Mapping[str, str] | None, resp_body: bytes | None,
) -> bytes:
    def clean(h: Mapping[str, str] | None) -> list[list[str]] | None:
        if h is None:
            return None
        return [[k, v] for k, v in h.items() if k.lower() not in SECRET_HEADERS]

    def b64(b: bytes | None) -> str | None:
        return None if b is None else base64.b64encode(b).decode()

    return orjson.dumps({
        "request": {"method": method, "url": url, "headers": clean(req_headers), "body": b64(req_body)},
        "response": None if status is None else {
            "status": status, "headers": clean(resp_headers), "body": b64(resp_body)},
    })


def aad(request_id: str, session_id: str | None, seq: int) -> bytes:
    return f"phigate-recording/v1|{request_id}|{session_id or ''}|{seq}".encode()


def seal_line(key: RecordingKey, request_id: str, session_id: str | None, seq: int, ts: str,
              payload: bytes) -> bytes:
    nonce = os.urandom(12)
    ct = AESGCM(key.key).encrypt(nonce, payload, aad(request_id, session_id, seq))
    return orjson.dumps({
        "request_id": request_id, "session_id": session_id, "seq": seq, "ts": ts, "key_id": key.key_id,
        "nonce": base64.b64encode(nonce).decode(), "ct": base64.b64encode(ct).decode(),
    }) + b"\n"


def open_line(keys: Mapping[str, RecordingKey], rec: Mapping[str, Any]) -> bytes:
    key = keys.get(rec["key_id"])
    if key is None:
        raise RecordingKeyError(f"recording of {rec['request_id']} is encrypted with key {rec['key_id']!r}, not given")
    try:
        return AESGCM(key.key).decrypt(
            base64.b64decode(rec["nonce"]), base64.b64decode(rec["ct"]),
            aad(rec["request_id"], rec["session_id"], int(rec["seq"])),
        )
    except InvalidTag as exc:
        raise RecordingKeyError(
            f"recording of {rec['request_id']} fails authentication (altered, or the wrong key)"
        ) from exc


def day_file(directory: Path, ts: float) -> Path:
    return directory / f"rec-{dt.datetime.fromtimestamp(ts, dt.UTC):%Y%m%d}.ndjson"


class RecordingCorrupt(ValueError):
    """A recordings file line that is not a sealed record (damaged, or not a recordings file)."""


def iter_records(directory: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(directory.glob("rec-*.ndjson")):
        data = path.read_bytes()
        for lineno, line in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), 1):
            try:
                rec = orjson.loads(line)
                int(rec["seq"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise RecordingCorrupt(f"{path} line {lineno}: not a recorded exchange ({type(exc).__name__})") from exc
            yield rec


def purge(directory: Path, retention_days: int, now: float) -> list[Path]:
    """Delete recording files whose whole day is older than the retention period."""
    cutoff = dt.datetime.fromtimestamp(now, dt.UTC).date() - dt.timedelta(days=retention_days)
    removed: list[Path] = []
    for path in sorted(directory.glob("rec-*.ndjson")):
        try:
            day = dt.datetime.strptime(path.stem[4:], "%Y%m%d").date()
        except ValueError:
            continue
        if day < cutoff:
            path.unlink()
            removed.append(path)
    return removed
