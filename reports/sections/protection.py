"""Transmission and storage protection in force (164.312(a)(2)(iv), 164.312(e)(1)): the listener's TLS
certificate and the encryption of session recordings, as found on this host when the packet is made."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from reports.model import Fact, Section


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


def recording_keys(ledger: Path) -> tuple[int, dict[str, int]]:
    """(recording files, {key id: files}) from each file's first line; the ciphertext is never read."""
    files = sorted(ledger.glob("nodes/*/recordings/*.ndjson")) if ledger.is_dir() else []
    keys: dict[str, int] = {}
    for f in files:
        with f.open("rb") as fh:
            first = fh.readline()
        try:
            kid = str(orjson.loads(first).get("key_id", "?"))
        except orjson.JSONDecodeError:
            kid = "(unreadable)"
        keys[kid] = keys.get(kid, 0) + 1
    return len(files), keys


def protection(tls_cert: Path | None, ledger: Path, generated_at: dt.datetime) -> Section:
    s = Section("protection", 0, "Transmission and storage protection")
    s.intro = (
        "Clients reach the gateway over TLS only (the launcher refuses plain HTTP except for loopback tests); "
        "callers' tokens are stripped before forwarding and the backend's own credential is injected; PHI "
        "in responses is masked per role before it leaves the gateway. Session recordings are encrypted "
        "at rest with AES-GCM under a key held outside the ledger. Below: what this host shows now."
    )
    problems: list[str] = []
    if tls_cert is None:
        s.facts.append(Fact("Listener TLS certificate", "not given (--tls-cert)"))
        problems.append("TLS certificate not examined")
    else:
        try:
            c = read_certificate(tls_cert)
        except (OSError, ValueError) as exc:
            s.facts.append(Fact("Listener TLS certificate", f"cannot read {tls_cert}: {exc}"))
            problems.append("TLS certificate unreadable")
        else:
            s.facts += [
                Fact("Listener TLS certificate", c.path), Fact("Subject", c.subject), Fact("Issuer", c.issuer),
                Fact("Names", c.names or "—"), Fact("Key", c.key),
                Fact("Valid", f"{c.not_before:%Y-%m-%d} to {c.not_after:%Y-%m-%d}"),
                Fact("SHA-256 fingerprint", c.sha256),
            ]
            if c.not_after < generated_at:
                problems.append("the TLS certificate has expired")
    n, keys = recording_keys(ledger)
    s.facts.append(Fact("Encrypted session recording files", n))
    if keys:
        used = ", ".join(f"{k} ({v} files)" for k, v in sorted(keys.items()))
        s.facts.append(Fact("Recording key ids (AES-GCM)", used))
    if problems:
        s.status, s.status_text = "attention", "; ".join(problems)
    else:
        s.status, s.status_text = "ok", "TLS certificate valid"
    return s
