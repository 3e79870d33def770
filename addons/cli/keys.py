"""`./run.sh keys --dir DIR`: make the secrets a gateway needs, one file each, mode 0600.

- token-keys: keys for consistent PHI tokens (masking `tokenize`, AES-SIV), `KID=BASE64` lines;
- recording.key: AES-256-GCM key for encrypted session recordings, `KID:BASE64`;
- audit-signing.pem: the Ed25519 key that signs audit checkpoints (its public half is published
  beside the ledger for `verify`; the private key must live away from the ledger);
- backend-credential: a placeholder credential for a backend without authentication (the demo).

Development and demo use only: production keys come from the organisation's secret store, and are
handed to the gateway by file or env var (`--set phigate_token_key_file=...` and friends).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
from pathlib import Path

from addons.ledger.keys import generate_key_file


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def make_keys(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("token-keys", "recording.key", "audit-signing.pem",
                                           "backend-credential")}
    kid = f"k{secrets.token_hex(3)}"
    _write(paths["token-keys"], f"*{kid}={base64.b64encode(secrets.token_bytes(64)).decode()}\n")
    _write(paths["recording.key"], f"r{secrets.token_hex(3)}:{base64.b64encode(secrets.token_bytes(32)).decode()}\n")
    paths["audit-signing.pem"].unlink(missing_ok=True)
    generate_key_file(paths["audit-signing.pem"])
    _write(paths["backend-credential"], secrets.token_urlsafe(24) + "\n")
    return paths


def gateway_options(paths: dict[str, Path]) -> dict[str, str]:
    """The options that point a gateway at these files."""
    return {
        "phigate_token_key_file": str(paths["token-keys"]),
        "phigate_recording_key_file": str(paths["recording.key"]),
        "phigate_audit_key_file": str(paths["audit-signing.pem"]),
        "phigate_backend_credential_file": str(paths["backend-credential"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run.sh keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=".phigate/keys", help="output folder (default .phigate/keys)")
    args = parser.parse_args(argv)
    paths = make_keys(Path(args.dir))
    for name, value in gateway_options(paths).items():
        print(f"--set {name}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
