"""What a TLS certificate is, as evidence: subject, issuer, names, key, validity and fingerprint.

Read by the audit addon (the certificates the listener serves, recorded in the ledger at start and on
change) and by the reports (the packet's transmission-security section). Only the certificate is
read from a PEM file; a private key in the same file is never parsed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


@dataclass(frozen=True, slots=True)
class CertInfo:
    path: str
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    key: str
    sha256: str
    names: str


def read_certificate(path: Path) -> CertInfo:
    """The first certificate in a PEM file (server.pem holds the key too: it is never read here)."""
    data = path.read_bytes()
    start = data.find(b"-----BEGIN CERTIFICATE-----")
    if start < 0:
        raise ValueError(f"{path} holds no PEM certificate")
    cert = x509.load_pem_x509_certificate(data[start:])
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        key = f"RSA {pub.key_size}"
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        key = f"EC {pub.curve.name}"
    elif isinstance(pub, ed25519.Ed25519PublicKey):
        key = "Ed25519"
    else:
        key = type(pub).__name__
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = ", ".join(str(n.value) for n in san)
    except x509.ExtensionNotFound:
        names = ""
    return CertInfo(
        str(path), cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
        cert.not_valid_before_utc.replace(tzinfo=None), cert.not_valid_after_utc.replace(tzinfo=None), key,
        hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(), names,
    )


def as_record(c: CertInfo) -> dict[str, Any]:
    """The certificate as a ledger record's JSON content (timestamps as ISO UTC)."""
    doc = asdict(c)
    doc["not_before"] = c.not_before.isoformat() + "Z"
    doc["not_after"] = c.not_after.isoformat() + "Z"
    return doc
