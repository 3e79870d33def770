"""`./run.sh verify`: recompute the audit ledger and report the first thing wrong with it.

    ./run.sh verify [--dir AUDIT_DIR] [--witness PATH] [--public-key FILE ...] [--allow-unsigned-tail] [--json]
    ./run.sh verify --event REQUEST_ID|NODE:SEQ      print an inclusion proof for one event

Exit status: 0 verified, 1 the ledger fails verification (a record no signed checkpoint covers
included, unless --allow-unsigned-tail), 2 bad usage (missing folder or key).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from addons.ledger import keys, layout, verify
from addons.ledger.read import LedgerReadError


def common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=os.environ.get("PHIGATE_AUDIT_DIR", ""),
                   help="the ledger folder (phigate_audit_dir; env PHIGATE_AUDIT_DIR)")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run.sh verify", description="Verify the tamper-evident audit ledger.")
    common_args(p)
    p.add_argument("--witness", default=os.environ.get("PHIGATE_WITNESS", ""),
                   help="the witness file or folder the gateway appends checkpoints to (env PHIGATE_WITNESS)")
    p.add_argument("--public-key", action="append", default=[], metavar="FILE",
                   help="a trusted Ed25519 public key (PEM or hex), repeatable; default: the signing key "
                        "from --key-file / PHIGATE_AUDIT_KEY_FILE / PHIGATE_AUDIT_KEY, else AUDIT_DIR/keys/")
    p.add_argument("--key-file", default=os.environ.get("PHIGATE_AUDIT_KEY_FILE", ""),
                   help="the signing key file (its public half is used)")
    p.add_argument("--allow-unsigned-tail", action="store_true",
                   help="do not fail on records after the last signed checkpoint (reading a ledger a gateway is "
                        "writing at this moment); the gateway signs every batch it acknowledges")
    p.add_argument("--event", metavar="ID", help="print an inclusion proof for this event (request id or NODE:SEQ)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p.parse_args(list(argv))


def trusted_keys(args: argparse.Namespace, audit_dir: Path) -> tuple[dict[str, Ed25519PublicKey], str]:
    if args.public_key:
        return verify.known_keys(Path(p) for p in args.public_key), "--public-key"
    private = keys.load_private(args.key_file, "PHIGATE_AUDIT_KEY")
    if private is not None:
        pub = private.public_key()
        return {keys.key_id_of(pub): pub}, "the signing key"
    found = sorted(layout.keys_dir(audit_dir).glob("*.pub"))
    where = layout.keys_dir(audit_dir)
    return verify.known_keys(found), f"{where} (next to the data: pass --public-key to verify independently)"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if not args.dir:
        print("error: no ledger folder: pass --dir AUDIT_DIR (the gateway's phigate_audit_dir) or set "
              "PHIGATE_AUDIT_DIR", file=sys.stderr)
        return 2
    audit_dir = Path(args.dir)
    if not audit_dir.is_dir():
        print(f"error: {audit_dir} is not a folder; expected the gateway's phigate_audit_dir", file=sys.stderr)
        return 2
    try:
        pubs, key_source = trusted_keys(args, audit_dir)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    witness = Path(args.witness) if args.witness else None
    if witness is not None and not witness.exists():
        # A witness that was given but is gone is a finding, not "nothing in the witness".
        print(f"FAILED: the witness {witness} does not exist (deleted, or the wrong path)")
        return 1
    if args.event:
        return _proof(audit_dir, args.event, pubs, witness)
    started = time.perf_counter()
    report = verify.verify(audit_dir, pubs, witness, allow_unsigned_tail=args.allow_unsigned_tail)
    took = time.perf_counter() - started
    if args.json:
        print(orjson.dumps({
            "ok": report.ok, "seconds": round(took, 3), "key_source": key_source, "notes": report.notes,
            "nodes": [{"node_id": n.node_id, "records": n.leaves, "events": n.events,
                       "signed_size": n.last_signed_size, "unsigned_tail": n.unsigned_tail,
                       "checkpoints": n.checkpoints, "witness_checkpoints": n.witness_checkpoints,
                       "outcome_unknown": n.outcome_unknown,
                       "latest_checkpoint": n.last_signed.as_row() if n.last_signed else None}
                      for n in report.nodes],
            "problems": [{"node_id": p.node_id, "seq": p.seq, "what": p.what} for p in report.problems],
            "first_bad": ({"node_id": report.problems[0].node_id, "seq": report.problems[0].seq}
                          if report.problems else None),
        }, option=orjson.OPT_INDENT_2).decode())
        return 0 if report.ok else 1
    print(f"keys: {key_source}")
    for note in report.notes:
        print(f"note: {note}")
    for n in report.nodes:
        tail = f", {n.unsigned_tail} after the last checkpoint (not yet signed)" if n.unsigned_tail else ""
        print(f"node {n.node_id}: {n.leaves} records ({n.events} events), signed through seq {n.last_signed_size}"
              f"{tail}; {n.checkpoints} checkpoints in the ledger, {n.witness_checkpoints} in the witness")
    if report.ok:
        print(f"OK: the ledger verifies ({sum(n.leaves for n in report.nodes)} records, {took:.2f} s)")
        return 0
    first = report.problems[0]
    print(f"FAILED: first bad record: node {first.node_id} seq {first.seq}")
    for line in verify.iter_problems(report):
        print(f"  {line}")
    return 1


def _proof(audit_dir: Path, ident: str, pubs: dict[str, Ed25519PublicKey], witness: Path | None) -> int:
    try:
        node_id, seq = verify.find_event(audit_dir, ident)
        proof = verify.inclusion_proof(audit_dir, node_id, seq, pubs, witness)
    except (LookupError, LedgerReadError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    print(orjson.dumps(proof, option=orjson.OPT_INDENT_2).decode())
    return 0 if proof["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
