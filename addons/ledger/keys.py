"""The Ed25519 key that signs checkpoints, and the checkpoint signature format.

The private key comes from a file or an environment variable and is never written into the ledger
or its folder: whoever can write the ledger must not also be able to re-sign a rewritten history.
Only the public key is published (audit_dir/keys/KEY_ID.pub) so `verify` can find it; an auditor
should pass the public key they hold (`--public-key`), since that copy sits next to the data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

CHECKPOINT_HEADER = b"phigate-checkpoint/v1\n"


class AuditKeyError(ValueError):
    """A key that is missing or cannot be read, said the way an operator can fix it."""


def _raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(pub: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(pub)).hexdigest()[:16]


def parse_private(text: bytes, where: str) -> Ed25519PrivateKey:
    """A PEM (PKCS#8) Ed25519 key, or a 32-byte seed as hex or base64."""
    data = text.strip()
    if data.startswith(b"-----BEGIN"):
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditKeyError(f"{where}: not an Ed25519 private key")
        return key
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            seed = decode(data.decode("ascii"))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            continue
        if len(seed) == 32:
            return Ed25519PrivateKey.from_private_bytes(seed)
    raise AuditKeyError(f"{where}: expected a PEM Ed25519 private key or a 32-byte seed in hex or base64")


def parse_public(text: bytes, where: str) -> Ed25519PublicKey:
    data = text.strip()
    if data.startswith(b"-----BEGIN PUBLIC"):
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise AuditKeyError(f"{where}: not an Ed25519 public key")
        return key
    if data.startswith(b"-----BEGIN"):
        return parse_private(data, where).public_key()
    try:
        raw = bytes.fromhex(data.decode("ascii"))
    except ValueError as exc:
        raise AuditKeyError(f"{where}: expected a PEM Ed25519 public key or 32 bytes in hex") from exc
    return Ed25519PublicKey.from_public_bytes(raw)


def load_private(key_file: str = "", key_env: str = "") -> Ed25519PrivateKey | None:
    """The signing key from `key_file`, else from the env var named `key_env`; None when neither is set."""
    if key_file:
        path = Path(key_file)
        try:
            return parse_private(path.read_bytes(), str(path))
        except OSError as exc:
            raise AuditKeyError(f"{path}: cannot read the audit signing key ({exc.strerror})") from exc
    if key_env and os.environ.get(key_env):
        return parse_private(os.environ[key_env].encode(), f"env {key_env}")
    return None


def generate_key_file(path: Path) -> str:
    """Write a new PEM Ed25519 private key (mode 0600); returns its key id."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key_id_of(key.public_key())


def public_pem(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head: the node's tree had `size` leaves with `root` at `ts`."""

    node_id: str
    origin: str
    size: int
    root: str  # hex
    ts: str  # ISO 8601 UTC, microseconds
    key_id: str
    signature: str  # base64

    def message(self) -> bytes:
        return signed_message(self.origin, self.size, self.root, self.ts)

    def as_row(self) -> dict[str, object]:
        return {
            "node_id": self.node_id, "origin": self.origin, "size": self.size, "root": self.root,
            "ts": self.ts, "key_id": self.key_id, "signature": self.signature,
        }


def signed_message(origin: str, size: int, root_hex: str, ts: str) -> bytes:
    return CHECKPOINT_HEADER + f"{origin}\n{size}\n{root_hex}\n{ts}\n".encode()


def sign_checkpoint(key: Ed25519PrivateKey, node_id: str, size: int, root: bytes, ts: str) -> Checkpoint:
    origin = f"phigate/{node_id}"
    sig = key.sign(signed_message(origin, size, root.hex(), ts))
    return Checkpoint(node_id, origin, size, root.hex(), ts, key_id_of(key.public_key()),
                      base64.b64encode(sig).decode())


def check_signature(pub: Ed25519PublicKey, cp: Checkpoint) -> bool:
    try:
        pub.verify(base64.b64decode(cp.signature), cp.message())
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
