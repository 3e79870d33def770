"""Recompute a ledger and say exactly what, if anything, is wrong with it.

Per node: every leaf's entry is re-hashed and compared with its stored leaf hash (an edited entry);
every typed column is compared with its entry, in SQL over whole tables (an edited column, a
swapped sequence number); sequence numbers must run 1..N without gaps or repeats (a deleted or
inserted record); the Merkle root is recomputed at every signed checkpoint's size and compared
(a consistently rewritten record); every checkpoint's Ed25519 signature is checked; and the
witness, kept outside the ledger, must not know of a larger tree than the ledger holds (a cut
tail, or the whole ledger replaced by an older copy).
"""

# SQL here is built from table and column names of our own schema; values are bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from addons.ledger import keys, layout, merkle, schema, seal, wal

MAX_PROBLEMS = 50


@dataclass(order=True, frozen=True, slots=True)
class Problem:
    seq: int  # the first bad sequence number this problem implicates (0: the node as a whole)
    node_id: str
    what: str

    def text(self) -> str:
        at = f"seq {self.seq}" if self.seq else "ledger"
        return f"node {self.node_id} {at}: {self.what}"


@dataclass(slots=True)
class NodeResult:
    node_id: str
    leaves: int = 0
    events: int = 0
    checkpoints: int = 0
    witness_checkpoints: int = 0
    last_signed_size: int = 0
    last_signed: keys.Checkpoint | None = None
    unsigned_tail: int = 0
    problems: list[Problem] = field(default_factory=list)


@dataclass(slots=True)
class Report:
    nodes: list[NodeResult]
    notes: list[str]

    @property
    def problems(self) -> list[Problem]:
        return sorted(p for n in self.nodes for p in n.problems)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class Leaf:
    seq: int
    entry: bytes
    stored_leaf: bytes


def _table_kind() -> dict[str, str]:
    return {t: k for k, t in schema.LEAF_TABLES.items()}


def _column_problems(con: duckdb.DuckDBPyConnection, node_id: str, where: str) -> list[Problem]:
    """Typed columns that no longer say what their entry says (vectorised, one query per table)."""
    out: list[Problem] = []
    existing = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    for kind, table in schema.LEAF_TABLES.items():
        if table not in existing:
            continue
        cols = [(c, t) for c, t in schema.entry_columns(table)
                if c in {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}]
        names = [c for c, _ in cols]
        st = seal.structure(cols).replace("'", "''")
        packed = ", ".join(f'"{c}" := "{c}"' for c in names)
        rows = con.execute(
            f"SELECT seq, entry FROM {table} WHERE struct_pack({packed}) IS DISTINCT FROM "
            f"json_transform(entry, '{st}') OR json_extract_string(entry, '$.record') IS DISTINCT FROM ? "
            f"ORDER BY seq LIMIT {MAX_PROBLEMS}",
            [kind],
        ).fetchall()
        for seq, entry in rows:
            diff = _which_columns(con, table, names, int(seq), entry)
            out.append(Problem(int(seq), node_id, f"{table} row in {where} differs from its hashed entry in {diff}"))
    return out


def _which_columns(con: duckdb.DuckDBPyConnection, table: str, names: list[str], seq: int, entry: str) -> str:
    cols = dict(schema.entry_columns(table))
    bad: list[str] = []
    for c in names:
        same = con.execute(
            f'SELECT bool_and(NOT ("{c}" IS DISTINCT FROM TRY_CAST(json_extract(?, \'$.{c}\') AS {cols[c]}) '
            f'OR (json_extract(?, \'$.{c}\') IS NULL AND "{c}" IS NOT NULL))) FROM {table} WHERE seq = ?',
            [entry, entry, seq],
        ).fetchone()
        if same is None or same[0] is not True:
            bad.append(c)
    try:
        if orjson.loads(entry).get("record") != _table_kind()[table]:
            bad.append("record kind")
    except orjson.JSONDecodeError:
        bad.append("entry (not JSON)")
    return ", ".join(bad) or "its column values"


def _segment_leaves(path: Path, node_id: str, problems: list[Problem]) -> tuple[list[Leaf], list[keys.Checkpoint]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        problems.extend(_column_problems(con, node_id, path.name))
        existing = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        union = " UNION ALL ".join(
            f"SELECT seq, entry, leaf_hash FROM {t}" for t in schema.LEAF_TABLES.values() if t in existing
        )
        rows = con.execute(f"SELECT seq, entry, leaf_hash FROM ({union}) ORDER BY seq").fetchall()
        cps = [
            _cp_from(dict(zip(("node_id", "origin", "size", "root", "ts", "key_id", "signature"), r, strict=True)))
            for r in con.execute(
                "SELECT node_id, origin, size, root, strftime(ts, '%Y-%m-%dT%H:%M:%S.%f'), key_id, signature "
                "FROM checkpoints"
            ).fetchall()
        ]
    finally:
        con.close()
    leaves = []
    for seq, entry, leaf_hex in rows:
        try:
            stored = bytes.fromhex(leaf_hex)
        except (TypeError, ValueError):
            stored = b""
        leaves.append(Leaf(int(seq), entry.encode(), stored))
    return leaves, cps


def _cp_from(row: dict[str, Any]) -> keys.Checkpoint:
    return keys.Checkpoint(
        str(row["node_id"]), str(row["origin"]), int(row["size"]), str(row["root"]), str(row["ts"]),
        str(row["key_id"]), str(row["signature"]),
    )


def _wal_leaves(path: Path, node_id: str, problems: list[Problem]) -> tuple[list[Leaf], list[keys.Checkpoint]]:
    data, _ = wal.complete_bytes(path)
    leaves: list[Leaf] = []
    cps: list[keys.Checkpoint] = []
    try:
        for rec in wal.parse(data, path.name, check_hashes=False):
            if rec.kind == "checkpoint":
                cps.append(_cp_from(orjson.loads(rec.entry)))
            elif rec.seq is not None:
                leaves.append(Leaf(int(rec.seq), rec.entry, rec.leaf or b""))
    except (wal.WalCorrupt, KeyError, TypeError, ValueError) as exc:
        problems.append(Problem(leaves[-1].seq + 1 if leaves else 0, node_id, f"unreadable write-ahead record: {exc}"))
    return leaves, cps


def read_witness(witness: Path, node_id: str) -> list[keys.Checkpoint]:
    path = layout.witness_file(witness, node_id)
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if row.get("node_id") == node_id:
            out.append(_cp_from(row))
    return out


def node_leaves(node: layout.NodeFiles, problems: list[Problem]) -> tuple[list[Leaf], list[keys.Checkpoint]]:
    leaves: list[Leaf] = []
    cps: list[keys.Checkpoint] = []
    for seg in node.sealed:
        got, c = _segment_leaves(seg.path, node.node_id, problems)
        leaves.extend(got)
        cps.extend(c)
    for w in node.wals:
        got, c = _wal_leaves(w.path, node.node_id, problems)
        leaves.extend(got)
        cps.extend(c)
    return leaves, cps


def verify_node(
    audit_dir: Path, node: layout.NodeFiles, public_keys: dict[str, Ed25519PublicKey], witness: Path | None,
    leaf_hashes_out: list[bytes] | None = None,
) -> NodeResult:
    res = NodeResult(node.node_id)
    problems = res.problems
    leaves, ledger_cps = node_leaves(node, problems)
    witness_cps = read_witness(witness, node.node_id) if witness else []
    res.witness_checkpoints = len(witness_cps)
    res.checkpoints = len(ledger_cps)

    # Checkpoints: each must carry a valid signature from a key we trust.
    by_size: dict[int, list[tuple[str, keys.Checkpoint]]] = {}
    for source, cps in (("ledger", ledger_cps), ("witness", witness_cps)):
        for cp in cps:
            pub = public_keys.get(cp.key_id)
            if pub is None:
                problems.append(Problem(0, node.node_id, f"{source} checkpoint of size {cp.size} is signed by "
                                        f"unknown key {cp.key_id}"))
                continue
            ours = cp.node_id == node.node_id and cp.origin == f"phigate/{node.node_id}"
            if not ours or not keys.check_signature(pub, cp):
                problems.append(Problem(0, node.node_id, f"{source} checkpoint of size {cp.size} has a bad signature"))
                continue
            by_size.setdefault(cp.size, []).append((source, cp))

    # Leaves: one pass, hashing each entry once and folding it into the tree.
    sha = hashlib.sha256
    frontier = merkle.Frontier()
    expected = 1
    prev_good_cp = 0
    sizes = sorted(by_size)
    next_cp_i = 0
    keep = leaf_hashes_out
    for lf in leaves:
        if lf.seq != expected:
            if lf.seq < expected:
                problems.append(Problem(lf.seq, node.node_id, f"seq {lf.seq} appears again after seq {expected - 1} "
                                        "(an inserted or duplicated record)"))
                continue
            problems.append(Problem(expected, node.node_id, f"seq {expected}..{lf.seq - 1} missing "
                                    "(deleted records)"))
            # Keep hashing so later checkpoints still pinpoint; the roots will not match anyway.
            expected = lf.seq
        h = sha(b"\x00" + lf.entry).digest()
        if h != lf.stored_leaf:
            problems.append(Problem(lf.seq, node.node_id, "entry does not hash to its stored leaf hash (the record "
                                    "was modified)"))
        frontier.append(h)
        if keep is not None:
            keep.append(h)
        expected += 1
        while next_cp_i < len(sizes) and sizes[next_cp_i] == frontier.size:
            size = sizes[next_cp_i]
            root = frontier.root().hex()
            for source, cp in by_size[size]:
                if cp.root != root:
                    lo = prev_good_cp + 1
                    if any(lo <= p.seq <= size for p in problems):
                        break  # already pinpointed: the root fails because of that record
                    problems.append(Problem(lo, node.node_id,
                                            f"tree root at size {size} does not match the {source} checkpoint signed "
                                            f"{cp.ts}: a record in seq {prev_good_cp + 1}..{size} was changed"))
                    break
            else:
                prev_good_cp = size
                res.last_signed = by_size[size][-1][1]
            next_cp_i += 1
    res.leaves = frontier.size
    res.last_signed_size = prev_good_cp
    res.unsigned_tail = frontier.size - prev_good_cp
    for size in sizes[next_cp_i:]:
        sources = sorted({s for s, _ in by_size[size]})
        problems.append(Problem(frontier.size + 1, node.node_id,
                                f"the {' and '.join(sources)} holds a checkpoint of size {size} but the ledger has "
                                f"only {frontier.size} records: the tail was cut, or the ledger was replaced by an "
                                "older copy"))
    problems.sort()
    del problems[MAX_PROBLEMS:]
    return res


def count_events(node: layout.NodeFiles) -> int:
    n = 0
    for seg in node.sealed:
        con = duckdb.connect(str(seg.path), read_only=True)
        try:
            row = con.execute("SELECT count(*) FROM events").fetchone()
            n += int(row[0]) if row else 0
        finally:
            con.close()
    for w in node.wals:
        data, _ = wal.complete_bytes(w.path)
        n += data.count(b'{"k":"event"')
    return n


def verify(audit_dir: Path, public_keys: dict[str, Ed25519PublicKey], witness: Path | None) -> Report:
    notes: list[str] = []
    nodes = layout.list_nodes(audit_dir)
    if not nodes:
        notes.append(f"{audit_dir}: no ledger nodes found (nothing recorded yet)")
    results = []
    for node in nodes:
        r = verify_node(audit_dir, node, public_keys, witness)
        r.events = count_events(node)
        results.append(r)
    if witness is None:
        notes.append("no witness given: truncation or rollback of the whole ledger cannot be detected")
    if not public_keys:
        notes.append("no public key given: checkpoints cannot be checked")
    return Report(results, notes)


def find_event(audit_dir: Path, ident: str) -> tuple[str, int]:
    """(node_id, seq) of an event given as a request id, `NODE:SEQ`, or a bare seq (one node)."""
    from addons.ledger.read import open_ledger

    con = open_ledger(audit_dir)
    try:
        node, _, seq_text = ident.rpartition(":")
        if seq_text.isdigit():
            q = "SELECT node_id, seq FROM events WHERE seq = ?" + (" AND node_id = ?" if node else "")
            rows = con.execute(q, [int(seq_text), node] if node else [int(seq_text)]).fetchall()
        else:
            rows = con.execute("SELECT node_id, seq FROM events WHERE request_id = ?", [ident]).fetchall()
    finally:
        con.close()
    if not rows:
        raise LookupError(f"no event {ident!r} in {audit_dir} (give a request id, NODE:SEQ, or SEQ)")
    if len(rows) > 1:
        raise LookupError(f"{ident!r} matches events on several nodes: give NODE:SEQ "
                          f"({', '.join(f'{n}:{s}' for n, s in rows)})")
    return str(rows[0][0]), int(rows[0][1])


def inclusion_proof(
    audit_dir: Path, node_id: str, seq: int, public_keys: dict[str, Ed25519PublicKey], witness: Path | None,
) -> dict[str, Any]:
    """An RFC 6962 inclusion proof of leaf `seq` against the first signed checkpoint that covers it."""
    node = next((n for n in layout.list_nodes(audit_dir) if n.node_id == node_id), None)
    if node is None:
        raise LookupError(f"no node {node_id!r} in {audit_dir}")
    hashes: list[bytes] = []
    res = verify_node(audit_dir, node, public_keys, witness, leaf_hashes_out=hashes)
    leaves, ledger_cps = node_leaves(node, [])
    cps = ledger_cps + (read_witness(witness, node_id) if witness else [])
    good = sorted(
        (cp for cp in cps if cp.size >= seq and cp.size <= len(hashes) and cp.key_id in public_keys
         and keys.check_signature(public_keys[cp.key_id], cp)),
        key=lambda c: c.size,
    )
    if not good:
        raise LookupError(f"no signed checkpoint covers {node_id}:{seq} yet (the latest covers "
                          f"{res.last_signed_size}); checkpoints are written every few seconds")
    cp = good[0]
    tree = hashes[: cp.size]
    path = merkle.inclusion_path(seq - 1, tree)
    ok = merkle.verify_inclusion(seq - 1, cp.size, tree[seq - 1], path, bytes.fromhex(cp.root))
    entry = next(lf.entry for lf in leaves if lf.seq == seq)
    return {
        "node_id": node_id, "seq": seq, "leaf_index": seq - 1, "entry": orjson.loads(entry),
        "leaf_hash": tree[seq - 1].hex(), "checkpoint": cp.as_row(), "audit_path": [p.hex() for p in path],
        "verified": ok,
    }


def iter_problems(report: Report) -> Iterator[str]:
    for p in report.problems:
        yield p.text()


def known_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    out: dict[str, Ed25519PublicKey] = {}
    for p in paths:
        pub = keys.parse_public(p.read_bytes(), str(p))
        out[keys.key_id_of(pub)] = pub
    return out
