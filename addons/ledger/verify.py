"""Recompute a ledger and say exactly what, if anything, is wrong with it.

Per node: every leaf's entry is re-hashed and compared with its stored leaf hash (an edited entry);
every typed column is compared with its entry, in SQL over whole tables (an edited column, a
swapped sequence number); sequence numbers must run 1..N without gaps or repeats (a deleted or
inserted record); the Merkle root is recomputed at every signed checkpoint's size and compared
(a consistently rewritten record); every checkpoint's Ed25519 signature is checked; every record
must be covered by a valid checkpoint (the writer signs each batch it acknowledges, so an uncovered
record was never acknowledged, or was appended without the key); and the witness, kept outside the
ledger, must hold this node's checkpoints when it is given, every one of them must still be in the
ledger (deleted checkpoints), and it must not know of a larger tree than the ledger holds (a cut
tail, or the whole ledger replaced by an older copy). A file that cannot be read (a damaged or
foreign segment, a malformed write-ahead line) is a problem naming the file and the seq range,
never an exception.
"""

# SQL here is built from table and column names of our own schema; values are bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from addons.core import progress
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
    ledger_signed: int = 0  # validly signed checkpoints in the ledger itself
    max_signed_size: int = 0  # the largest tree size a validly signed checkpoint claims (root match aside)
    # Intents (request forwarded) with no outcome record: in flight, or the gateway stopped.
    outcome_unknown: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


@dataclass(slots=True)
class NodeData:
    """One node's leaves in seq order: sequence numbers, recomputed leaf hashes, and the seqs whose
    stored leaf hash differs from the recomputed one."""

    seqs: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    leaf_mismatch: list[int] = field(default_factory=list)
    checkpoints: list[keys.Checkpoint] = field(default_factory=list)
    events: int = 0
    # (seq, request_id) of each intent, and the request ids events recorded an outcome for: a
    # request sent twice (an approved answer re-fetched) has two intents and one outcome.
    intents: list[tuple[int, str]] = field(default_factory=list)
    outcomes: set[str] = field(default_factory=set)

    def add(self, seqs: list[int], entries: list[bytes], stored_hex: list[str | None]) -> None:
        sha = hashlib.sha256
        hashes = [sha(b"\x00" + e).digest() for e in entries]
        stored = [_unhex(h) for h in stored_hex]
        self.leaf_mismatch.extend(s for s, a, b in zip(seqs, hashes, stored, strict=True) if a != b)
        self.seqs.extend(seqs)
        self.hashes.extend(hashes)


def _unhex(h: str | None) -> bytes:
    try:
        return bytes.fromhex(h or "")
    except ValueError:
        return b""


def _table_kind() -> dict[str, str]:
    return {t: k for k, t in schema.LEAF_TABLES.items()}


def _json_expr(column: str, ctype: str) -> str:
    if ctype == "TIMESTAMP":
        return f"strftime(\"{column}\", '%Y-%m-%dT%H:%M:%S.%f')"
    return f'"{column}"'


def _segment_query(con: duckdb.DuckDBPyConnection) -> str:
    """One vectorised pass over a sealed segment, all in DuckDB (parallel, no Python per row):

    - every leaf hash recomputed as SHA-256(0x00 || entry), returned concatenated in seq order;
    - the seqs whose stored leaf hash differs (an edited entry);
    - the seqs whose typed columns no longer say what their entry says (an edited column, a swapped
      seq): first by re-serialising the columns, which reproduces the canonical entry byte for byte;
      only rows where that differs (unusual float or unicode spellings) are parsed and compared field
      by field.
    """
    existing = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    parts = []
    for kind, table in schema.LEAF_TABLES.items():
        if table not in existing:
            continue
        present = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        cols = [(c, t) for c, t in schema.entry_columns(table) if c in present]
        types = dict(cols)
        st = seal.structure(cols).replace("'", "''")
        packed = ", ".join(f'"{c}" := "{c}"' for c, _ in cols)
        ordered = sorted([*types, "record"])
        canonical = ", ".join(
            f'"{c}" := ' + ("'" + kind + "'" if c == "record" else _json_expr(c, types[c])) for c in ordered
        )
        parts.append(
            f"SELECT seq, sha256(chr(0) || entry) AS h, leaf_hash AS stored, "
            f"CASE WHEN to_json(struct_pack({canonical}))::VARCHAR = entry THEN false ELSE "
            f"(struct_pack({packed}) IS DISTINCT FROM json_transform(entry, '{st}') "
            f"OR json_extract_string(entry, '$.record') IS DISTINCT FROM '{kind}') END AS bad, "
            f"'{table}' AS t FROM {table}"
        )
    union = " UNION ALL ".join(parts)
    return (
        f"WITH u AS ({union}) SELECT string_agg(h, '' ORDER BY seq), list(seq ORDER BY seq), "
        f"list(seq ORDER BY seq) FILTER (WHERE h IS DISTINCT FROM stored), "
        f"list(struct_pack(seq := seq, t := t) ORDER BY seq) FILTER (WHERE bad) FROM u"
    )


def _which_columns(con: duckdb.DuckDBPyConnection, table: str, seq: int, entry: str) -> str:
    """Name the columns of one row that no longer say what its entry says, parsing the entry the
    same way sealing does (json_transform into the column types)."""
    cols = dict(schema.entry_columns(table))
    present = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall() if r[0] in cols]
    st = seal.structure([(c, cols[c]) for c in present]).replace("'", "''")
    try:
        # Every row at this seq against its own entry (an inserted duplicate carries a copied entry).
        checks = ", ".join(f'bool_or("{c}" IS DISTINCT FROM json_transform(entry, \'{st}\')."{c}")' for c in present)
        row = con.execute(f"SELECT {checks} FROM {table} WHERE seq = ?", [seq]).fetchone()
    except duckdb.Error:
        row = None
    bad = [c for c, differs in zip(present, row or [], strict=False) if differs]
    try:
        if orjson.loads(entry).get("record") != _table_kind()[table]:
            bad.append("record kind")
    except (orjson.JSONDecodeError, AttributeError):
        bad.append("entry (not a JSON object)")
    return ", ".join(bad) or "its column values"


@dataclass(slots=True)
class _SegmentRows:
    seqs: list[int]
    hashes: list[bytes]
    leaf_mismatch: list[int]
    problems: list[Problem]
    events: int
    checkpoints: list[keys.Checkpoint]
    intents: list[tuple[int, str]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)


def _fetch_segment(path: Path, node_id: str) -> _SegmentRows:
    """Everything for one sealed segment (runs in a worker thread: DuckDB releases the GIL)."""
    problems: list[Problem] = []
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute(_segment_query(con)).fetchone()
        hex_hashes, seqs, leaf_bad, col_bad = row if row else ("", [], [], [])
        for item in (col_bad or [])[:MAX_PROBLEMS]:
            seq, table = int(item["seq"]), str(item["t"])
            entry = con.execute(f"SELECT entry FROM {table} WHERE seq = ? LIMIT 1", [seq]).fetchone()
            diff = _which_columns(con, table, seq, entry[0] if entry else "")
            problems.append(Problem(seq, node_id, f"{table} row in {path.name} differs from its hashed entry "
                                    f"in {diff}"))
        counted = con.execute("SELECT count(*) FROM events").fetchone()
        intents, outcomes = _intent_seqs(con)
        cps = [
            _cp_from(dict(zip(("node_id", "origin", "size", "root", "ts", "key_id", "signature"), r, strict=True)))
            for r in con.execute(
                "SELECT node_id, origin, size, root, strftime(ts, '%Y-%m-%dT%H:%M:%S.%f'), key_id, signature "
                "FROM checkpoints"
            ).fetchall()
        ]
    finally:
        con.close()
    raw = bytes.fromhex(hex_hashes or "")
    hashes = [raw[i : i + 32] for i in range(0, len(raw), 32)]
    return _SegmentRows(list(seqs or []), hashes, list(leaf_bad or []), problems,
                        int(counted[0]) if counted else 0, cps, intents, outcomes)


def _intent_seqs(con: duckdb.DuckDBPyConnection) -> tuple[list[tuple[int, str]], list[str]]:
    """Intents, and the request ids of outcomes (segments older than intents have neither)."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "intents" not in tables:
        return [], []
    intents = [(int(r[0]), str(r[1])) for r in con.execute("SELECT seq, request_id FROM intents").fetchall()]
    outcomes = [str(r[0]) for r in con.execute(
        "SELECT DISTINCT request_id FROM events WHERE intent_seq IS NOT NULL").fetchall()]
    return intents, outcomes


def _add_segment(got: _SegmentRows, data: NodeData, problems: list[Problem]) -> None:
    problems.extend(got.problems)
    data.events += got.events
    data.checkpoints.extend(got.checkpoints)
    data.seqs.extend(got.seqs)
    data.hashes.extend(got.hashes)
    data.leaf_mismatch.extend(got.leaf_mismatch)
    data.intents.extend(got.intents)
    data.outcomes.update(got.outcomes)


def _cp_from(row: dict[str, Any]) -> keys.Checkpoint:
    return keys.Checkpoint(
        str(row["node_id"]), str(row["origin"]), int(row["size"]), str(row["root"]), str(row["ts"]),
        str(row["key_id"]), str(row["signature"]),
    )


def _settled_bytes(path: Path, tries: int = 3) -> tuple[bytes, int]:
    """The file's complete lines, read again (briefly) while they end in records without their
    batch's checkpoint: a writer's commit may be half-way through its single write right now."""
    raw, size = wal.complete_bytes(path)
    for _ in range(tries):
        last = raw[raw.rfind(b"\n", 0, len(raw) - 1) + 1:]
        if not last or last.startswith(b'{"k":"checkpoint"'):
            break
        time.sleep(0.02)
        raw, size = wal.complete_bytes(path)
    return raw, size


def _read_wal(w: layout.Wal, node_id: str, data: NodeData, res: NodeResult, last: bool = False) -> None:
    path = w.path
    try:
        raw, size = _settled_bytes(path) if last else wal.complete_bytes(path)
    except OSError as exc:
        res.problems.append(Problem(w.first, node_id, f"{path.name} cannot be read ({exc.strerror})"))
        return
    seqs: list[int] = []
    entries: list[bytes] = []
    stored: list[str | None] = []
    try:
        for rec in wal.parse(raw, path.name, check_hashes=False):
            if rec.kind == "checkpoint":
                data.checkpoints.append(_cp_from(orjson.loads(rec.entry)))
            elif rec.seq is not None:
                seqs.append(int(rec.seq))
                entries.append(rec.entry)
                stored.append(rec.leaf.hex() if rec.leaf else None)
                data.events += rec.kind == "event"
                if rec.kind == "intent":
                    data.intents.append((int(rec.seq), str(orjson.loads(rec.entry).get("request_id"))))
                elif rec.kind == "event" and b'"intent_seq":null' not in rec.entry:
                    data.outcomes.add(str(orjson.loads(rec.entry).get("request_id")))
    except (wal.WalCorrupt, KeyError, TypeError, ValueError, AttributeError) as exc:
        at = seqs[-1] + 1 if seqs else w.first
        res.problems.append(Problem(at, node_id, f"unreadable write-ahead record after seq {at - 1} "
                                    f"in {path.name}: {exc}"))
    tail = size - len(raw)
    if tail:
        with open(path, "rb") as fh:
            fh.seek(len(raw))
            head = fh.read(8)
        if wal.RECORD_PREFIX.startswith(head) or head.startswith(wal.RECORD_PREFIX):
            res.notes.append(f"node {node_id}: {tail} bytes at the end of {path.name} are a record still being "
                             "written (or cut by a crash; the writer drops it at its next start)")
        else:
            res.problems.append(Problem(seqs[-1] + 1 if seqs else w.first, node_id,
                                        f"{path.name}: its last {tail} bytes are not ledger records (damaged, "
                                        "or not a write-ahead file)"))
    data.add(seqs, entries, stored)


def read_witness(witness: Path, node_id: str) -> list[keys.Checkpoint]:
    path = layout.witness_file(witness, node_id)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return []
    out = []
    for line in data.splitlines():
        try:
            row = orjson.loads(line)
            if isinstance(row, dict) and row.get("node_id") == node_id:
                out.append(_cp_from(row))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line cut by a crash; a forged or damaged one fails its signature check instead
    return out


def node_data(node: layout.NodeFiles, res: NodeResult) -> NodeData:
    data = NodeData()
    # Pipeline: DuckDB reads segment i+1 in a worker thread while this thread hashes segment i.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(_fetch_segment, seg.path, node.node_id) for seg in node.sealed[:1]]
        for i, seg in enumerate(node.sealed):
            fut = pending.pop(0)
            if i + 1 < len(node.sealed):
                pending.append(pool.submit(_fetch_segment, node.sealed[i + 1].path, node.node_id))
            try:
                got = fut.result()
            except (duckdb.Error, OSError, ValueError) as exc:
                res.problems.append(Problem(seg.first, node.node_id, f"sealed segment {seg.path.name} (seq "
                                            f"{seg.first}..{seg.last}) cannot be read: {_first_line(exc)}"))
                progress.advance()
                continue
            _add_segment(got, data, res.problems)
            progress.advance()
    for i, w in enumerate(node.wals):
        _read_wal(w, node.node_id, data, res, last=i == len(node.wals) - 1)
        progress.advance()
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _span(lo: int, hi: int) -> str:
    return f"seq {lo}" if lo == hi else f"seq {lo}..{hi}"


def _sequence_problems(node_id: str, seqs: list[int]) -> list[Problem]:
    if seqs == list(range(1, len(seqs) + 1)):
        return []
    out: list[Problem] = []
    expected = 1
    for seq in seqs:
        if seq != expected:
            if seq < expected:
                out.append(Problem(seq, node_id, f"seq {seq} appears again after seq {expected - 1} "
                                   "(an inserted or duplicated record)"))
                continue
            out.append(Problem(expected, node_id, f"seq {expected}..{seq - 1} missing (deleted records)"))
            expected = seq
        expected += 1
        if len(out) >= MAX_PROBLEMS:
            break
    return out


def verify_node(
    audit_dir: Path, node: layout.NodeFiles, public_keys: dict[str, Ed25519PublicKey], witness: Path | None,
    leaf_hashes_out: list[bytes] | None = None, allow_unsigned_tail: bool = False,
) -> NodeResult:
    res = NodeResult(node.node_id)
    problems = res.problems
    data = node_data(node, res)
    res.events = data.events
    witness_cps = read_witness(witness, node.node_id) if witness else []
    res.witness_checkpoints = len(witness_cps)
    res.checkpoints = len(data.checkpoints)
    res.outcome_unknown = sorted(seq for seq, request_id in data.intents if request_id not in data.outcomes)

    # The tree from the recomputed leaves, checked at every signed size.
    levels = merkle.Levels(data.hashes)
    n = levels.size

    # Checkpoints: each must carry a valid signature from a key we trust. Every batch is signed, so
    # there is about one per request at low traffic: from the largest down, a checkpoint whose root
    # matches a tree that a larger, checked checkpoint already authenticates proves nothing more, and
    # its signature is not checked (one Ed25519 check costs as much as hashing ~300 leaves).
    by_size: dict[int, list[tuple[str, keys.Checkpoint]]] = {}
    checked: dict[keys.Checkpoint, bool] = {}  # the witness repeats the ledger's: check each once
    authenticated = 0
    everything = [("ledger", cp) for cp in data.checkpoints] + [("witness", cp) for cp in witness_cps]
    for source, cp in sorted(everything, key=lambda sc: -sc[1].size):
        pub = public_keys.get(cp.key_id)
        if pub is None:
            problems.append(Problem(0, node.node_id, f"{source} checkpoint of size {cp.size} is signed by "
                                    f"unknown key {cp.key_id}"))
            continue
        ours = cp.node_id == node.node_id and cp.origin == f"phigate/{node.node_id}"
        consistent = ours and cp.size <= n and cp.root == levels.root(cp.size).hex()
        if cp not in checked:
            checked[cp] = (consistent and cp.size <= authenticated) or keys.check_signature(pub, cp)
        if not ours or not checked[cp]:
            problems.append(Problem(0, node.node_id, f"{source} checkpoint of size {cp.size} has a bad signature"))
            continue
        if consistent:
            authenticated = max(authenticated, cp.size)
        by_size.setdefault(cp.size, []).append((source, cp))
        res.ledger_signed += source == "ledger"

    problems.extend(_sequence_problems(node.node_id, data.seqs))
    problems.extend(Problem(seq, node.node_id, "entry does not hash to its stored leaf hash (the record was "
                            "modified)") for seq in data.leaf_mismatch[:MAX_PROBLEMS])

    res.max_signed_size = min(max(by_size, default=0), n)
    prev_good_cp = 0
    for size in sorted(by_size):
        if size > n:
            sources = sorted({s for s, _ in by_size[size]})
            problems.append(Problem(n + 1, node.node_id,
                                    f"the {' and '.join(sources)} holds a checkpoint of size {size} but the ledger "
                                    f"has only {n} records: the tail was cut, or the ledger was replaced by an "
                                    "older copy"))
            break
        root = levels.root(size).hex()
        for source, cp in by_size[size]:
            if cp.root != root:
                lo = prev_good_cp + 1
                if not any(lo <= p.seq <= size for p in problems):
                    problems.append(Problem(lo, node.node_id,
                                            f"tree root at size {size} does not match the {source} checkpoint "
                                            f"signed {cp.ts}: a record in {_span(lo, size)} was changed"))
                break
        else:
            prev_good_cp = size
            res.last_signed = by_size[size][-1][1]
    if leaf_hashes_out is not None:
        leaf_hashes_out.extend(data.hashes)
    res.leaves = n
    res.last_signed_size = prev_good_cp
    res.unsigned_tail = n - prev_good_cp
    problems.extend(_coverage_problems(res, data, witness, witness_cps, allow_unsigned_tail))
    problems.sort()
    del problems[MAX_PROBLEMS:]
    return res


def _coverage_problems(
    res: NodeResult, data: NodeData, witness: Path | None, witness_cps: list[keys.Checkpoint],
    allow_unsigned_tail: bool,
) -> list[Problem]:
    """Checkpoints that vanished, and records no checkpoint covers."""
    out: list[Problem] = []
    node_id, n = res.node_id, res.leaves
    if witness is not None and n and not witness_cps:
        path = layout.witness_file(witness, node_id)
        state = "is missing" if not path.exists() else "holds no checkpoint of this node"
        out.append(Problem(1, node_id, f"the witness {path} {state}, but the node has {n} records: a witness "
                           "that was deleted or emptied cannot vouch for the ledger"))
    in_ledger = {(cp.size, cp.root, cp.signature) for cp in data.checkpoints}
    gone = sorted({cp.size for cp in witness_cps if (cp.size, cp.root, cp.signature) not in in_ledger
                   and cp.size <= n})
    if gone:
        out.append(Problem(gone[0], node_id, f"{len(gone)} checkpoints the witness holds are gone from the ledger "
                           f"(sizes {gone[0]}..{gone[-1]}): checkpoints were deleted"))
    if n and not res.ledger_signed:
        out.append(Problem(1, node_id, f"the node has {n} records but no valid checkpoint signed by a trusted key "
                           "in the ledger"))
    if res.max_signed_size and n > res.max_signed_size and not allow_unsigned_tail:
        # (A checkpoint whose root no longer matches is its own problem, reported above.)
        lo = res.max_signed_size + 1
        out.append(Problem(lo, node_id, f"{_span(lo, n)} ({n - lo + 1} records) covered by no signed checkpoint: "
                           "never acknowledged, or appended without the signing key (--allow-unsigned-tail reads a "
                           "ledger while a writer may be mid-batch)"))
    return out


def verify(audit_dir: Path, public_keys: dict[str, Ed25519PublicKey], witness: Path | None,
           allow_unsigned_tail: bool = False) -> Report:
    notes: list[str] = []
    nodes = layout.list_nodes(audit_dir)
    if not nodes:
        notes.append(f"{audit_dir}: no ledger nodes found (nothing recorded yet)")
    results = []
    progress.phase("verifying segments", total=sum(len(n.sealed) + len(n.wals) for n in nodes))
    for node in nodes:
        res = verify_node(audit_dir, node, public_keys, witness, allow_unsigned_tail=allow_unsigned_tail)
        results.append(res)
        notes.extend(res.notes)
        if res.outcome_unknown:
            shown = ", ".join(str(s) for s in res.outcome_unknown[:10])
            notes.append(f"node {res.node_id}: {len(res.outcome_unknown)} forwarded requests with outcome unknown "
                         f"(intent seq {shown}{', ...' if len(res.outcome_unknown) > 10 else ''}): no outcome "
                         "was recorded (still in flight, or the gateway stopped before the answer)")
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
    res = verify_node(audit_dir, node, public_keys, witness, leaf_hashes_out=hashes, allow_unsigned_tail=True)
    ledger_cps = node_data(node, NodeResult(node_id)).checkpoints
    cps = ledger_cps + (read_witness(witness, node_id) if witness else [])
    good = sorted(
        (cp for cp in cps if seq <= cp.size <= len(hashes) and cp.key_id in public_keys
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
    from addons.ledger.read import open_ledger

    con = open_ledger(audit_dir)
    try:
        row = con.execute("SELECT entry FROM events WHERE node_id = ? AND seq = ?", [node_id, seq]).fetchone()
    finally:
        con.close()
    return {
        "node_id": node_id, "seq": seq, "leaf_index": seq - 1, "entry": orjson.loads(row[0]) if row else None,
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
