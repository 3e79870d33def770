"""Read the whole ledger (every node's segments) while gateways keep writing it.

    con = open_ledger("/var/lib/phigate/audit")
    con.sql("SELECT decision, count(*) FROM events GROUP BY ALL")

Returns an in-memory DuckDB connection with one view per table (`events`, `approvals`,
`auth_failures`, `rule_versions`, `checkpoints`, `reviews`, `incidents`, `configuration`) over all nodes. Sealed
segments are attached read-only (the writer never opens them again, so there is no lock to
conflict with); the records still in each node's write-ahead segment are copied in at open time.
The connection is a snapshot: open a new one to see newer records.

A file that cannot be read (a damaged or foreign sealed segment, a malformed write-ahead line)
raises LedgerReadError naming the file, the seq range it should hold and what is wrong; a partial
last line (a write in progress) is skipped; trailing bytes that are no record are a warning.
"""

# SQL here is built from table and column names of our own schema; values are bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from addons.ledger import layout, schema, seal, wal

log = logging.getLogger("phigate")

TABLES = ("events", "approvals", "auth_failures", "rule_versions", "checkpoints", "reviews", "incidents",
          "intents", "configuration")


# DuckDB's file starts with three 4 KiB headers, then the data blocks.
DUCKDB_HEADER_BYTES = 3 * 4096


class LedgerReadError(RuntimeError):
    """A ledger file that cannot be read, said as file, seq range and what is wrong."""


class _Changed(Exception):
    """A writer sealed (or removed) a file between our listing and our read."""


def _wal_tables(con: duckdb.DuckDBPyConnection, alias: str) -> None:
    con.execute(f"ATTACH ':memory:' AS {alias}")
    con.execute(f"USE {alias}")
    schema.apply_migrations(con)
    con.execute("USE memory")


def open_ledger(audit_dir: str | Path, attempts: int = 5,
                warn: Callable[[str], None] | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only snapshot of every node's records, as views named after the ledger's tables.
    `warn` receives what was left out (default: the log); CLIs print it."""
    if not Path(audit_dir).is_dir():
        raise LedgerReadError(f"{audit_dir}: no audit ledger here (expected the phigate_audit_dir folder)")
    last: Exception | None = None
    for _ in range(attempts):
        con = duckdb.connect(":memory:")
        try:
            _open_into(con, Path(audit_dir), warn or (lambda text: log.warning("phigate ledger: %s", text)))
            return con
        except _Changed as exc:
            # A writer sealed a segment between our listing and our read: list again.
            con.close()
            last = exc
            time.sleep(0.05)
        except BaseException:
            con.close()
            raise
    raise LedgerReadError(f"could not read the ledger at {audit_dir}: it kept changing under the reader ({last})")


def _open_into(con: duckdb.DuckDBPyConnection, audit_dir: Path, warn: Callable[[str], None]) -> None:
    sources: list[str] = []
    n = 0
    for node in layout.list_nodes(audit_dir):
        for seg in node.sealed:
            alias = f"s{n}"
            n += 1
            _attach_segment(con, seg, alias)
            sources.append(alias)
        for w in node.wals:
            alias = f"w{n}"
            n += 1
            _wal_tables(con, alias)
            _load_wal(con, w, alias, warn)
            sources.append(alias)
    if not sources:
        _wal_tables(con, "empty")
        sources.append("empty")
    for table in TABLES:
        have = [s for s in sources if _has_table(con, s, table)]
        if not have:
            # A table newer than every segment: empty, with its columns.
            if "newest" not in sources:
                _wal_tables(con, "newest")
                sources.append("newest")
            have = ["newest"]
        union = " UNION ALL BY NAME ".join(f"SELECT * FROM {s}.{table}" for s in have)
        if table == "rule_versions":
            # A version is in force until the next version of the same file.
            union = (
                "SELECT * EXCLUDE (effective_to), lead(effective_from) OVER "
                f"(PARTITION BY path ORDER BY effective_from, seq) AS effective_to FROM ({union})"
            )
        elif table == "approvals":
            # The same decision may arrive from the admin API and from the held flow: keep the first.
            union = (
                f"SELECT * FROM ({union}) QUALIFY hold_id IS NULL OR "
                "row_number() OVER (PARTITION BY hold_id, outcome ORDER BY seq) = 1"
            )
        con.execute(f"CREATE VIEW {table} AS {union}")


def _q(text: str) -> str:
    return text.replace("'", "''")


def _has_table(con: duckdb.DuckDBPyConnection, alias: str, table: str) -> bool:
    row = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                      [alias, table]).fetchone()
    return bool(row and row[0])


def _attach_segment(con: duckdb.DuckDBPyConnection, seg: layout.Segment, alias: str) -> None:
    try:
        con.execute(f"ATTACH '{_q(str(seg.path))}' AS {alias} (READ_ONLY)")
        # A cut file can attach (its header is intact) and answer counts from metadata: compare
        # its size with the blocks its header says it has.
        row = con.execute("SELECT block_size, total_blocks FROM pragma_database_size() WHERE database_name = ?",
                          [alias]).fetchone()
        size = seg.path.stat().st_size
        if row is not None and size < DUCKDB_HEADER_BYTES + int(row[0]) * int(row[1]):
            raise LedgerReadError(_unreadable(seg, ValueError(
                f"the file has {size} bytes, its header promises {int(row[1])} blocks of {int(row[0])} (cut short)")))
    except (duckdb.Error, FileNotFoundError) as exc:
        if not seg.path.exists():
            raise _Changed(str(exc)) from exc
        raise LedgerReadError(_unreadable(seg, exc)) from exc


def _unreadable(seg: layout.Segment, exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (f"{seg.path}: sealed segment for seq {seg.first}..{seg.last} cannot be read (damaged, or not a "
            f"ledger segment): {type(exc).__name__}: {text[0] if text else ''}")


def _load_wal(con: duckdb.DuckDBPyConnection, w: layout.Wal, alias: str, warn: Callable[[str], None]) -> None:
    """Load a write-ahead file's complete lines; a line that is not a record is an error naming it."""
    try:
        data, size = wal.complete_bytes(w.path)
    except FileNotFoundError as exc:
        raise _Changed(str(exc)) from exc
    # Check every complete line in Python first (orjson: ~1 s per million lines): DuckDB's reader
    # would skip or misread a malformed line without saying which.
    last_seq = w.first - 1
    try:
        for rec in wal.parse(data, str(w.path), check_hashes=False):
            if rec.seq is not None:
                last_seq = rec.seq
    except wal.WalCorrupt as exc:
        raise LedgerReadError(f"{exc} (the record after seq {last_seq}); `./run.sh verify` names every bad "
                              "record") from exc
    tail = size - len(data)
    if tail:
        with open(w.path, "rb") as fh:
            fh.seek(len(data))
            head = fh.read(8)
        if not (wal.RECORD_PREFIX.startswith(head) or head.startswith(wal.RECORD_PREFIX)):
            warn(f"{w.path}: its last {tail} bytes (after seq {last_seq}) are not ledger records (damaged, or not "
                 "a write-ahead file); they are left out")
    if not data:
        return
    con.execute(f"USE {alias}")
    try:
        # Complete lines were checked above; the reader skips only a partial last line.
        seal.load_wal(con, str(w.path), ignore_errors=True)
    except duckdb.Error as exc:
        raise LedgerReadError(f"{w.path}: records seq {w.first}..{last_seq} cannot be read: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    finally:
        con.execute("USE memory")


def read_error_text(audit_dir: str | Path, exc: BaseException) -> str:
    """One line for a CLI: which file and seq range cannot be read, and why."""
    if isinstance(exc, LedgerReadError):
        return str(exc)
    found = diagnose(Path(audit_dir))
    return found or f"reading the ledger at {audit_dir} failed: {type(exc).__name__}: {_first(exc)}"


def diagnose(audit_dir: Path) -> str | None:
    """Read every file of the ledger in full, one at a time; the first that fails, said as file,
    seq range and error (a query over the combined views only says that something failed)."""
    for node in layout.list_nodes(audit_dir):
        for seg in node.sealed:
            try:
                con = duckdb.connect(str(seg.path), read_only=True)
                try:
                    for table in schema.LEAF_TABLES.values():
                        if _has_table(con, _db_name(con), table):
                            con.execute(f"SELECT * FROM {table}").fetchall()
                finally:
                    con.close()
            except duckdb.Error as exc:
                return _unreadable(seg, exc)
        for w in node.wals:
            try:
                data, _ = wal.complete_bytes(w.path)
                for _rec in wal.parse(data, str(w.path), check_hashes=False):
                    pass
            except (OSError, wal.WalCorrupt) as exc:
                return f"{exc} (write-ahead file for seq {w.first}..)"
    return None


def _db_name(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute("SELECT current_database()").fetchone()
    return str(row[0]) if row else "main"


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def warn_stderr(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)
