"""`./run.sh report`: HIPAA evidence packets, reviewer sign-off and the accounting of disclosures.

    ./run.sh report --from DATE --to DATE --out DIR [--ledger DIR]     write a packet (HTML, PDF, data)
    ./run.sh report sign --packet FILE --public-key FILE [--notes TEXT]   record your review (token: PHIGATE_TOKEN)
    ./run.sh report disclosures --subject VALUE [--format text|json|csv]   accounting for one patient
    ./run.sh report verify --packet FILE --public-key FILE             check a packet's hashes and signatures
    ./run.sh report keygen --out FILE                                  make an Ed25519 packet-signing key

Exit status: 0 done, 1 a packet or ledger that does not verify, 2 bad usage or configuration.
Runs in its own process: rendering is CPU-bound and never runs on the gateway's event loop.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import duckdb
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from addons.cli import operator
from addons.ledger import keys
from addons.ledger.read import read_error_text
from reports import build, disclosures, generate, manifest, review
from reports.period import PeriodError, parse_period
from reports.source import LedgerError, open_ledger

ROOT = Path(__file__).resolve().parent.parent
PACKET_FILES = ("packet.html", "packet.pdf", "statement.json", "statement.json.sig", "manifest.json",
                "manifest.json.sig")


class UsageError(Exception):
    pass


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _ledger_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ledger", metavar="DIR", default=_env("PHIGATE_AUDIT_DIR"),
                   help="the audit ledger folder (the gateway's phigate_audit_dir; env PHIGATE_AUDIT_DIR), "
                        "or a DuckDB file holding the same tables")


def _packet_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.sh report", description="Write a HIPAA evidence packet for a period.",
        epilog="Other commands: sign (record a review), disclosures (accounting for one patient), verify (check a "
               "packet), keygen (packet-signing key); see ./run.sh report COMMAND --help.",
    )
    p.add_argument("--from", dest="date_from", metavar="DATE", required=True,
                   help="first day (YYYY-MM-DD, UTC) or an ISO time")
    p.add_argument("--to", dest="date_to", metavar="DATE", required=True,
                   help="last day, inclusive (YYYY-MM-DD), or an ISO time (exclusive)")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="folder to write the packet into (created; must be empty)")
    _ledger_arg(p)
    p.add_argument("--rules", default=_env("PHIGATE_RULES", str(ROOT / "rules")),
                   help="rules folder, for masking.yaml when the ledger holds no version of it (env PHIGATE_RULES)")
    p.add_argument("--signing-key", default=_env("PHIGATE_REPORT_KEY_FILE"),
                   help="Ed25519 key file that signs the packet (env PHIGATE_REPORT_KEY_FILE; or the key itself in "
                        "env PHIGATE_REPORT_KEY; default: the audit key PHIGATE_AUDIT_KEY_FILE / PHIGATE_AUDIT_KEY)")
    p.add_argument("--unsigned", action="store_true", help="write an unsigned packet (the cover says so)")
    p.add_argument("--no-verify", action="store_true", help="do not run the ledger verification (the packet says so)")
    p.add_argument("--public-key", action="append", default=[], metavar="FILE",
                   help="trusted checkpoint public key for the verification (repeatable; default as ./run.sh verify)")
    p.add_argument("--audit-key-file", default=_env("PHIGATE_AUDIT_KEY_FILE"),
                   help="the audit signing key file; its public half checks checkpoints (env PHIGATE_AUDIT_KEY_FILE)")
    p.add_argument("--witness", default=_env("PHIGATE_WITNESS"),
                   help="the checkpoint witness file or folder (env PHIGATE_WITNESS)")
    default_cert = _env("PHIGATE_TLS_CERT", str(ROOT / "certs" / "server.pem"))
    p.add_argument("--tls-cert", default=default_cert,
                   help="the listener's certificate (PEM) to report on (env PHIGATE_TLS_CERT, "
                        "default certs/server.pem)")
    p.add_argument("--html-rows", type=int, default=500, help="rows shown per table in the HTML (default 500)")
    p.add_argument("--pdf-rows", type=int, default=60, help="rows shown per table in the PDF (default 60)")
    p.add_argument("--no-pdf", action="store_true", help="write the HTML and data only")
    p.add_argument("--replace", action="store_true", help="replace a packet already in --out")
    return p


def _trusted_key_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--public-key", default=_env("PHIGATE_REPORT_PUBLIC_KEY_FILE"), metavar="FILE",
                   help="the packet-signing public key you trust, PEM or hex, as you were given it (env "
                        "PHIGATE_REPORT_PUBLIC_KEY_FILE); required for a signed packet")
    p.add_argument("--allow-unsigned", action="store_true", help="accept an unsigned packet")


def _sign_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.sh report sign", description="Record your sign-off of a packet in the audit ledger.",
        epilog="The ledger records the subject of your verified OIDC access token (the same token the approvals "
               "CLI uses), never a name typed on the command line.")
    p.add_argument("--packet", required=True, help="the packet folder or any file in it (manifest.json, packet.pdf)")
    p.add_argument("--notes", default="", help="review notes (findings, follow-ups)")
    _ledger_arg(p)
    _trusted_key_arg(p)
    operator.add_arguments(p, "approver")
    p.add_argument("--rules", default=_env("PHIGATE_RULES", str(ROOT / "rules")),
                   help="rules folder: policy.yaml's roles: section maps token groups to roles (env PHIGATE_RULES)")
    p.add_argument("--node-id", default=review.default_node_id(),
                   help="the ledger node this tool writes as (default review-HOSTNAME)")
    p.add_argument("--audit-key-file", default=_env("PHIGATE_AUDIT_KEY_FILE"),
                   help="the audit signing key, to sign a checkpoint over the review (env PHIGATE_AUDIT_KEY_FILE "
                        "or PHIGATE_AUDIT_KEY)")
    p.add_argument("--witness", default=_env("PHIGATE_WITNESS"), help="the checkpoint witness (env PHIGATE_WITNESS)")
    return p


def _disclosures_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.sh report disclosures",
                                description="Accounting of disclosures (45 CFR 164.528) for one patient.")
    p.add_argument("--subject", required=True,
                   help="the patient's identifier as it appears in the data (MRN, name); never stored or logged")
    _ledger_arg(p)
    p.add_argument("--as-of", help="end of the six-year window (YYYY-MM-DD or ISO time; default now)")
    p.add_argument("--token-key-file", default=_env("PHIGATE_TOKEN_KEY_FILE"),
                   help="the masking key file the gateway uses (phigate_token_key_file; env PHIGATE_TOKEN_KEY_FILE)")
    p.add_argument("--token-key-env", default="PHIGATE_TOKEN_KEYS",
                   help="env var holding the masking keys instead (default PHIGATE_TOKEN_KEYS)")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    p.add_argument("--out", help="write to this file instead of standard output")
    return p


def _verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.sh report verify", description="Check a packet's hashes and signatures.")
    p.add_argument("--packet", required=True, help="the packet folder or any file in it")
    _trusted_key_arg(p)
    return p


def _keygen_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.sh report keygen", description="Write a new Ed25519 packet-signing key.")
    p.add_argument("--out", required=True, help="key file to create (mode 0600; must not exist)")
    return p


def _signing_key(args: argparse.Namespace) -> Ed25519PrivateKey | None:
    if args.unsigned:
        return None
    key = keys.load_private(args.signing_key, "PHIGATE_REPORT_KEY") or keys.load_private(
        args.audit_key_file, "PHIGATE_AUDIT_KEY")
    if key is None:
        raise UsageError("no packet-signing key: pass --signing-key FILE (make one with ./run.sh report keygen), "
                         "set PHIGATE_REPORT_KEY_FILE, or pass --unsigned")
    return key


def _prepare_out(out: Path, replace: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not replace:
            raise UsageError(f"{out} is not empty; choose a new folder or pass --replace")
        if not (out / "manifest.json").exists() and not (out / "data").is_dir():
            raise UsageError(f"{out} does not hold a packet; refusing to replace its contents")
        for name in PACKET_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "data", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def cmd_packet(argv: Sequence[str]) -> int:
    args = _packet_parser().parse_args(list(argv))
    if not args.ledger:
        raise UsageError("no ledger: pass --ledger DIR (the gateway's phigate_audit_dir) or set PHIGATE_AUDIT_DIR")
    period = parse_period(args.date_from, args.date_to)
    key = _signing_key(args)
    out = Path(args.out)
    _prepare_out(out, args.replace)
    tls = Path(args.tls_cert) if args.tls_cert else None
    opts = build.BuildOptions(
        ledger=Path(args.ledger), period=period, out=out, rules=Path(args.rules), verify=not args.no_verify,
        public_keys=tuple(args.public_key), audit_key_file=args.audit_key_file, witness=args.witness or None,
        tls_cert=tls if tls and tls.exists() else None, row_limit=max(args.html_rows, args.pdf_rows),
    )
    w = generate.write_packet(opts, key, html_rows=args.html_rows, pdf_rows=args.pdf_rows, pdf=not args.no_pdf)
    print(f"packet: {w.folder}")
    print(f"  html: {w.html}")
    if w.pdf:
        print(f"  pdf:  {w.pdf}")
    print(f"  data: {w.folder / 'data'}")
    print(f"  manifest: {w.manifest}")
    print(f"  packet sha256: {w.packet_sha256}{'' if w.signed else ' (UNSIGNED)'}")
    print("  took: " + ", ".join(f"{k} {v:.2f} s" for k, v in w.timings.items()))
    return 0


def _verified(args: argparse.Namespace) -> manifest.Verified:
    """The packet, checked against the public key the user pinned (never the one inside the packet)."""
    pinned = None
    if args.public_key:
        try:
            pinned = keys.parse_public(Path(args.public_key).read_bytes(), args.public_key)
        except OSError as exc:
            raise UsageError(f"--public-key: cannot read {args.public_key}: {exc.strerror}") from None
    return manifest.verify_packet(Path(args.packet), pinned, not args.allow_unsigned)


def cmd_verify(argv: Sequence[str]) -> int:
    args = _verify_parser().parse_args(list(argv))
    try:
        v = _verified(args)
    except manifest.PacketError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    state = f"signed with the pinned key {v.key_id}" if v.signed else "UNSIGNED"
    print(f"OK: packet {v.folder} verifies ({state}); packet sha256 {v.packet_sha256}")
    return 0


def cmd_sign(argv: Sequence[str]) -> int:
    args = _sign_parser().parse_args(list(argv))
    if not args.ledger or not Path(args.ledger).is_dir():
        raise UsageError("--ledger must be the gateway's ledger folder (phigate_audit_dir; env PHIGATE_AUDIT_DIR)")
    try:
        who = operator.verify(args, Path(args.rules))
    except operator.OperatorError as exc:
        raise UsageError(f"no review recorded: {exc}") from None
    try:
        v = _verified(args)
    except manifest.PacketError as exc:
        print(f"error: the packet does not verify, so no review was recorded: {exc}", file=sys.stderr)
        return 1
    rec = review.record_review(
        Path(args.ledger), v, who.subject, args.notes, args.node_id, args.audit_key_file, "PHIGATE_AUDIT_KEY",
        args.witness or None,
    )
    signed = "with a signed checkpoint" if rec.signed_checkpoint else "unsigned: no audit key was given"
    name = f" ({who.name})" if who.name else ""
    print(f"review recorded: packet {v.packet_sha256} by {who.subject}{name}, verified by {who.issuer}, as ledger "
          f"record {rec.node_id}:{rec.seq} ({signed})")
    return 0


def cmd_disclosures(argv: Sequence[str]) -> int:
    from addons.phi.tokens import KeySetError, load_keyring

    args = _disclosures_parser().parse_args(list(argv))
    if not args.ledger:
        raise UsageError("no ledger: pass --ledger DIR or set PHIGATE_AUDIT_DIR")
    try:
        env_name = args.token_key_env if os.environ.get(args.token_key_env) else None
        ring = load_keyring(args.token_key_file or None, env_name, os.environ)
    except KeySetError as exc:
        raise UsageError(f"masking key: {exc}") from exc
    if ring is None:
        raise UsageError("no masking key: pass --token-key-file (the gateway's phigate_token_key_file) or set "
                         "PHIGATE_TOKEN_KEYS; subject references are keyed and cannot be computed without it")
    if args.as_of:
        as_of = parse_period(args.as_of, args.as_of).end if len(args.as_of) == 10 else parse_period(
            args.as_of, "9999-12-31").start
    else:
        as_of = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    con = open_ledger(args.ledger)
    try:
        items = disclosures.accounting(con, ring.subject_refs_all(args.subject), as_of)
    finally:
        con.close()
    text = {"text": lambda: disclosures.as_text(items, as_of), "json": lambda: disclosures.as_json(items),
            "csv": lambda: disclosures.as_csv(items)}[args.format]()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"{len(items)} disclosure(s) written to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_keygen(argv: Sequence[str]) -> int:
    args = _keygen_parser().parse_args(list(argv))
    try:
        kid = keys.generate_key_file(Path(args.out))
    except FileExistsError:
        raise UsageError(f"{args.out} exists; choose another file (a key is never overwritten)") from None
    print(f"wrote {args.out} (key id {kid}); keep it outside the ledger folder")
    return 0


COMMANDS = {"sign": cmd_sign, "disclosures": cmd_disclosures, "verify": cmd_verify, "keygen": cmd_keygen}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS.get(argv[0]) if argv else None
    try:
        if command is not None:
            return command(argv[1:])
        return cmd_packet(argv)
    except (UsageError, PeriodError, LedgerError, keys.AuditKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        # Damage found while querying (past opening): name the file that cannot be read.
        print(f"error: {_read_error(argv, exc)}", file=sys.stderr)
        return 1


def _read_error(argv: Sequence[str], exc: duckdb.Error) -> str:
    ledger = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ledger"), None)
    return read_error_text(ledger or _env("PHIGATE_AUDIT_DIR") or ".", exc)


if __name__ == "__main__":
    sys.exit(main())
