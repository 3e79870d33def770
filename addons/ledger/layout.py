"""Where a ledger's files live, and how readers list them consistently.

    AUDIT_DIR/
      nodes/NODE_ID/                     one writer process per node (a worker, a CLI tool)
        writer.lock                      flock held by the node's writer
        wal-000000000101.ndjson          write-ahead segment, leaves from seq 101 (fsync'd, group commit)
        seg-000000000001-000000000100.duckdb   sealed segment: immutable DuckDB file, seq 1..100
        recordings/rec-YYYYMMDD.ndjson   encrypted session recordings (AES-GCM), purged by retention
        quarantine/wal-FIRST-LAST-T.ndjson   records no signed checkpoint covered at start (never signed)
      keys/KEY_ID.pub                    public halves of the checkpoint signing keys
    WITNESS (a file, or a folder with NODE_ID.ndjson per node) outside AUDIT_DIR: signed checkpoints

Each node has its own sequence numbers, Merkle tree and checkpoints; readers combine every node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SEQ_WIDTH = 12
QUARANTINE_DIR = "quarantine"
_WAL = re.compile(r"^wal-(\d+)\.ndjson$")
_SEG = re.compile(r"^seg-(\d+)-(\d+)\.duckdb$")
_NODE_OK = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def nodes_dir(audit_dir: Path) -> Path:
    return audit_dir / "nodes"


def node_dir(audit_dir: Path, node_id: str) -> Path:
    if not _NODE_OK.match(node_id) or node_id in (".", ".."):
        raise ValueError(f"node id {node_id!r}: expected 1-128 letters, digits, '.', '_' or '-'")
    return nodes_dir(audit_dir) / node_id


def keys_dir(audit_dir: Path) -> Path:
    return audit_dir / "keys"


def wal_name(first_seq: int) -> str:
    return f"wal-{first_seq:0{SEQ_WIDTH}d}.ndjson"


def seg_name(first_seq: int, last_seq: int) -> str:
    return f"seg-{first_seq:0{SEQ_WIDTH}d}-{last_seq:0{SEQ_WIDTH}d}.duckdb"


@dataclass(frozen=True, slots=True)
class Segment:
    path: Path
    first: int
    last: int  # first - 1 for a segment without leaves


@dataclass(frozen=True, slots=True)
class Wal:
    path: Path
    first: int


@dataclass(frozen=True, slots=True)
class NodeFiles:
    node_id: str
    sealed: list[Segment]
    wals: list[Wal]  # only those not yet covered by a sealed segment, in order


def list_node(directory: Path) -> NodeFiles:
    sealed: list[Segment] = []
    wals: list[Wal] = []
    for p in directory.iterdir() if directory.is_dir() else ():
        if m := _SEG.match(p.name):
            sealed.append(Segment(p, int(m.group(1)), int(m.group(2))))
        elif m := _WAL.match(p.name):
            wals.append(Wal(p, int(m.group(1))))
    sealed.sort(key=lambda s: s.first)
    # A WAL whose leaves are already in a sealed segment is a leftover of a seal interrupted between
    # the segment's rename and the WAL's removal: the segment is the record.
    high = max((s.last for s in sealed), default=0)
    wals = sorted((w for w in wals if w.first > high), key=lambda w: w.first)
    return NodeFiles(directory.name, sealed, wals)


def list_nodes(audit_dir: Path) -> list[NodeFiles]:
    root = nodes_dir(audit_dir)
    if not root.is_dir():
        return []
    return [list_node(d) for d in sorted(root.iterdir()) if d.is_dir() and _NODE_OK.match(d.name)]


def witness_location(text: str) -> Path:
    """The witness option as given: a trailing '/' (or an existing folder) means a folder, created here."""
    path = Path(text)
    if text.endswith("/") and not path.is_file():
        path.mkdir(parents=True, exist_ok=True)
    return path


def witness_file(witness: Path, node_id: str) -> Path:
    """A witness folder holds one file per node; a witness file holds every node's checkpoints."""
    if witness.is_dir() or str(witness).endswith("/"):
        return witness / f"{node_id}.ndjson"
    return witness
