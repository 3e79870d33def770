"""Recording a reviewer's sign-off of a packet in the audit ledger (164.308(a)(1)(ii)(D)).

The packet is verified first (every hash, and the signature when it has one): a review must name
exactly the evidence that was read. The review is appended as a `review` record through the
ledger's own writer (addons.ledger.writer), as its own node (`review-HOSTNAME` by default): the
ledger gives each writing process a node with its own sequence and Merkle tree, so this works while
the gateway runs and writes its node, without sharing a lock or pausing traffic. The record is
signed into a checkpoint with the audit key when one is configured.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass
from pathlib import Path

from addons.ledger import keys
from addons.ledger.writer import Ledger
from reports.manifest import Verified


@dataclass(frozen=True, slots=True)
class Recorded:
    node_id: str
    seq: int
    signed_checkpoint: bool


def default_node_id() -> str:
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())[:100]
    return f"review-{host or 'host'}"


def period_of(v: Verified) -> tuple[dt.datetime, dt.datetime]:
    period = v.statement["period"]
    return (dt.datetime.fromisoformat(period["from"].rstrip("Z")), dt.datetime.fromisoformat(period["to"].rstrip("Z")))


def record_review(
    audit_dir: Path, packet: Verified, reviewer: str, notes: str, node_id: str, key_file: str, key_env: str,
    witness: str | None,
) -> Recorded:
    signing_key = keys.load_private(key_file, key_env)
    start, end = period_of(packet)
    ledger = Ledger(audit_dir, node_id, signing_key=signing_key, witness=Path(witness) if witness else None)
    ledger.open()
    try:
        seq = ledger.append_now("review", {
            "packet_sha256": packet.packet_sha256,
            "reviewer": reviewer,
            "signed_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            "period_from": start,
            "period_to": end,
            "notes": notes,
        })
    finally:
        ledger.close()  # signs a final checkpoint (with a key) and seals the segment
    return Recorded(node_id, seq, signing_key is not None)
