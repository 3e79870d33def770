"""`./run.sh certs`: a local development CA and a server certificate for the gateway's listener.

Production deployments use their organisation's certificate; this exists so the listener speaks
TLS from the first run (plain HTTP is opt-in only). Private keys are written 0600 and git-ignored.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def make_certs(out: Path, hosts: list[str], days: int = 365) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phigate local development CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Key identifiers: Python >= 3.13 verifies strictly (VERIFY_X509_STRICT) and refuses a chain
        # without them ("Missing Authority Key Identifier").
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = {name: out / name for name in ("ca.key", "ca.crt", "server.key", "server.crt", "server.pem")}
    _write(paths["ca.key"], _key_pem(ca_key), private=True)
    _write(paths["ca.crt"], ca.public_bytes(pem), private=False)
    _write(paths["server.key"], _key_pem(key), private=True)
    _write(paths["server.crt"], cert.public_bytes(pem) + ca.public_bytes(pem), private=False)
    # mitmproxy's --certs takes key and chain in one PEM file.
    _write(paths["server.pem"], _key_pem(key) + cert.public_bytes(pem) + ca.public_bytes(pem), private=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run.sh certs", description=__doc__)
    parser.add_argument("--dir", default="certs", help="output folder (default: certs/)")
    parser.add_argument("--host", action="append", default=None,
                        help="name or IP the certificate covers (repeatable; default 127.0.0.1, localhost)")
    parser.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    args = parser.parse_args(argv)
    paths = make_certs(Path(args.dir), args.host or ["127.0.0.1", "localhost"], args.days)
    print(f"wrote {paths['server.pem']} (key + chain for the listener) and {paths['ca.crt']} "
          f"(give this CA to clients, e.g. REQUESTS_CA_BUNDLE={paths['ca.crt']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
