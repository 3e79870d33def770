"""The packet's hash and signature, defined so the cover can show them.

A document cannot contain its own hash, so the packet is sealed in two steps:

1. `statement.json` lists the period, generation time, software version and the SHA-256 of every data
   file (data/*.csv, data/*.json: the evidence behind every table and figure). The **packet SHA-256**
   is SHA-256 of the exact bytes of statement.json (`sha256sum statement.json`), and the **signature**
   is Ed25519 over those bytes (statement.json.sig, base64). Both are printed on the cover.
2. After rendering, `manifest.json` lists the SHA-256 of every file in the packet (statement, data,
   packet.html, packet.pdf) and `manifest.json.sig` signs it, so the renderings are sealed too.

The signing key comes from a file or env var (PEM PKCS#8 Ed25519, or a 32-byte seed in hex/base64,
the same formats as the ledger's checkpoint key); it is never written into the packet. Its public key
is, for reading, but verification never trusts it: a signed packet verifies only against a public key
the verifier was given separately (--public-key or PHIGATE_REPORT_PUBLIC_KEY_FILE).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from addons.ledger.keys import key_id_of, public_pem

FORMAT = "phigate-evidence-packet/1"
STATEMENT = "statement.json"
MANIFEST = "manifest.json"


class PacketError(Exception):
    """A packet that does not verify, said with the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class Seal:
    packet_sha256: str
    signature: str  # base64, "" when unsigned
    key_id: str
    public_key: str  # PEM, "" when unsigned


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dump(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def _sign(key: Ed25519PrivateKey | None, data: bytes) -> str:
    return base64.b64encode(key.sign(data)).decode() if key else ""


def seal_statement(out: Path, files: Iterable[Path], meta: dict[str, Any], key: Ed25519PrivateKey | None) -> Seal:
    listed = {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(files)}
    doc = {"format": FORMAT, **meta, "files": listed}
    data = _dump(doc)
    (out / STATEMENT).write_bytes(data)
    sig = _sign(key, data)
    if sig:
        (out / f"{STATEMENT}.sig").write_text(sig + "\n", encoding="ascii")
    pub = key.public_key() if key else None
    return Seal(
        hashlib.sha256(data).hexdigest(), sig, key_id_of(pub) if pub else "",
        public_pem(pub).decode() if pub else "",
    )


def seal_manifest(out: Path, seal: Seal, renderings: Iterable[Path], key: Ed25519PrivateKey | None) -> Path:
    files = [out / STATEMENT, *sorted((out / "data").iterdir()), *renderings]
    if (out / f"{STATEMENT}.sig").exists():
        files.append(out / f"{STATEMENT}.sig")
    doc = {
        "format": FORMAT,
        "packet_sha256": seal.packet_sha256,
        "signature": seal.signature,
        "key_id": seal.key_id,
        "public_key": seal.public_key,
        "files": {p.relative_to(out).as_posix(): sha256_file(p) for p in files},
    }
    data = _dump(doc)
    (out / MANIFEST).write_bytes(data)
    sig = _sign(key, data)
    if sig:
        (out / f"{MANIFEST}.sig").write_text(sig + "\n", encoding="ascii")
    return out / MANIFEST


@dataclass(frozen=True, slots=True)
class Verified:
    folder: Path
    packet_sha256: str
    signed: bool
    key_id: str
    statement: dict[str, Any]


def packet_folder(path: Path) -> Path:
    """A packet is named by its folder or any file in it (packet.pdf, manifest.json, ...)."""
    folder = path if path.is_dir() else path.parent
    if not (folder / MANIFEST).is_file():
        raise PacketError(f"{path}: no {MANIFEST} next to it; expected a packet folder written by ./run.sh report")
    return folder


def _check_sig(pub: Ed25519PublicKey, data: bytes, sig_file: Path) -> None:
    try:
        pub.verify(base64.b64decode(sig_file.read_text(encoding="ascii").strip()), data)
    except (InvalidSignature, ValueError, binascii.Error, OSError):
        raise PacketError(f"{sig_file}: signature does not verify") from None


def verify_packet(path: Path, public_key: Ed25519PublicKey | None = None, require_signature: bool = True) -> Verified:
    """Check every hash and signature of a packet; raise PacketError at the first problem."""
    folder = packet_folder(path)
    manifest_bytes = (folder / MANIFEST).read_bytes()
    manifest = json.loads(manifest_bytes)
    for name, digest in manifest["files"].items():
        f = folder / name
        if not f.is_file():
            raise PacketError(f"{f}: listed in {MANIFEST} but missing")
        if sha256_file(f) != digest:
            raise PacketError(f"{f}: SHA-256 differs from {MANIFEST} (the file was changed)")
    statement_bytes = (folder / STATEMENT).read_bytes()
    packet_sha = hashlib.sha256(statement_bytes).hexdigest()
    if packet_sha != manifest["packet_sha256"]:
        raise PacketError(
            f"{folder / STATEMENT}: SHA-256 {packet_sha} is not the packet SHA-256 {manifest['packet_sha256']}"
        )
    statement = json.loads(statement_bytes)
    for name, digest in statement["files"].items():
        if manifest["files"].get(name) != digest:
            raise PacketError(f"{folder / name}: hash in {STATEMENT} differs from {MANIFEST}")
    signed = bool(manifest["signature"])
    if signed:
        if public_key is None:
            # Threat: whoever edits the data can re-sign it with a new key and put that key in the
            # manifest; only a key the verifier obtained separately proves who signed.
            raise PacketError(
                f"{folder}: the packet is signed with key {manifest['key_id']}, but no trusted public key was given: "
                "pass --public-key FILE (the packet-signing public key you were given by its issuer) or set "
                "PHIGATE_REPORT_PUBLIC_KEY_FILE; the key inside the packet proves nothing, since whoever edits "
                "the data can re-sign it with a key of their own"
            )
        pub = public_key
        if key_id_of(public_key) != manifest["key_id"]:
            raise PacketError(
                f"packet signed with key {manifest['key_id']}, not with the given public key {key_id_of(public_key)}"
            )
        _check_sig(pub, statement_bytes, folder / f"{STATEMENT}.sig")
        _check_sig(pub, manifest_bytes, folder / f"{MANIFEST}.sig")
    elif require_signature:
        raise PacketError(f"{folder}: the packet is unsigned; expected an Ed25519 signature")
    return Verified(folder, packet_sha, signed, manifest["key_id"], statement)


def short(sig: str, width: int = 44) -> str:
    return sig if len(sig) <= width else sig[:width] + "…"
