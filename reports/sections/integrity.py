"""Log-integrity verification (164.312(c)(1), 164.312(b)): the result of the ledger's own `verify`,
run when the packet is made, with the latest signed checkpoint."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from reports.model import Fact, Section
from reports.tables import Collector


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    performed: bool
    ok: bool
    summary: str
    details: list[tuple[str, str]] = field(default_factory=list)
    caveats: bool = False  # verified, but with notes (no witness, no key): shown as attention


def run_verify(ledger: Path, public_keys: list[str], key_file: str, witness: str | None) -> VerifyOutcome:
    """Run the ledger's own verify (the code behind ./run.sh verify); any failure to verify is
    reported as such, never as a pass."""
    if not ledger.is_dir():
        return VerifyOutcome(False, False, f"{ledger} is a single-file copy, not a ledger folder: not verifiable")
    try:
        from addons.cli import verify as cli_verify
        from addons.ledger import verify
    except ImportError as exc:
        return VerifyOutcome(False, False, f"the ledger's verify module is not available ({exc})")
    try:
        keys_args = argparse.Namespace(public_key=public_keys, key_file=key_file)
        pubs, key_source = cli_verify.trusted_keys(keys_args, ledger)
        report = verify.verify(ledger, pubs, Path(witness) if witness else None)
    except Exception as exc:  # noqa: BLE001 - a verifier that crashes has not verified anything
        return VerifyOutcome(True, False, f"verification could not complete: {type(exc).__name__}: {exc}")
    details: list[tuple[str, str]] = [("Keys", key_source)]
    for n in report.nodes:
        cp = n.last_signed
        latest = f"size {cp.size}, root {cp.root[:16]}…, {cp.ts}, key {cp.key_id}" if cp else "none"
        details.append((
            f"Node {n.node_id}",
            f"{n.leaves:,} records ({n.events:,} events), signed through seq {n.last_signed_size:,}"
            f"{f', {n.unsigned_tail:,} not yet signed' if n.unsigned_tail else ''}; "
            f"{n.checkpoints:,} checkpoints in the ledger, {n.witness_checkpoints:,} in the witness; latest: {latest}"
            f"{f'; {len(n.outcome_unknown):,} forwarded requests with outcome unknown' if n.outcome_unknown else ''}",
        ))
    details += [("Note", note) for note in report.notes]
    records = sum(n.leaves for n in report.nodes)
    if report.ok:
        caveat = " (with notes)" if report.notes else ""
        return VerifyOutcome(True, True, f"verified: {records:,} records on {len(report.nodes)} node(s){caveat}",
                             details, caveats=bool(report.notes))
    first = report.problems[0]
    details += [("Problem", p.text()) for p in report.problems[:20]]
    return VerifyOutcome(
        True, False, f"FAILED: first bad record node {first.node_id} seq {first.seq}: {first.what}", details,
    )


def integrity(col: Collector, outcome: VerifyOutcome) -> Section:
    s = Section("integrity", 0, "Log-integrity verification")
    s.intro = (
        "The ledger is an RFC 6962 Merkle tree per gateway node over the canonical encoding of every record, "
        "with Ed25519-signed checkpoints also kept in a witness outside the ledger. Verification recomputes "
        "every leaf and root, checks each checkpoint's signature, and compares the ledger with the witness "
        "(detecting modified, deleted, inserted or reordered records, truncation and rollback)."
    )
    s.facts.append(Fact("Result", outcome.summary))
    s.facts += [Fact(k, v) for k, v in outcome.details]
    if not outcome.performed:
        s.status, s.status_text = "attention", "not verified"
    elif outcome.ok and outcome.caveats:
        s.status, s.status_text = "attention", "verified, with notes"
    elif outcome.ok:
        s.status, s.status_text = "ok", "verified"
    else:
        s.status, s.status_text = "attention", "verification failed"
    s.tables.append(col.table(
        "checkpoints", "Latest signed checkpoint per node",
        """SELECT * EXCLUDE (rn) FROM (
             SELECT coalesce(node_id, '') AS node_id, size, root, ts, key_id, signature,
                    row_number() OVER (PARTITION BY node_id ORDER BY size DESC, ts DESC) AS rn
             FROM checkpoints) WHERE rn = 1 ORDER BY node_id""",
        numeric=("size",),
        empty_text="No signed checkpoint is in the ledger.",
    ))
    return s
