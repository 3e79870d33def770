"""Read the whole ledger (every node's segments) while gateways keep writing it.

    con = open_ledger("/var/lib/phigate/audit")
    con.sql("SELECT decision, count(*) FROM events GROUP BY ALL")

Returns an in-memory DuckDB connection with one view per table (`events`, `approvals`,
`auth_failures`, `rule_versions`, `checkpoints`, `reviews`, `incidents`, `configuration`) over all nodes. Sealed
segments are attached read-only (the writer never opens them again, so there is no lock to
conflict with); the records still in each node's write-ahead segment are copied in at open time.
The connection is a snapshot: open a new one to see newer records.
"""

# SQL here is built from table and column names of our own schema; values are bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from addons.ledger import layout, schema, seal

TABLES = ("events", "approvals", "auth_failures", "rule_versions", "checkpoints", "reviews", "incidents",
          "configuration")


def _wal_tables(con: duckdb.DuckDBPyConnection, alias: str) -> None:
    con.execute(f"ATTACH ':memory:' AS {alias}")
    con.execute(f"USE {alias}")
    schema.apply_migrations(con)
    con.execute("USE memory")


def open_ledger(audit_dir: str | Path, attempts: int = 5) -> duckdb.DuckDBPyConnection:
    """A read-only snapshot of every node's records, as views named after the ledger's tables."""
    last: Exception | None = None
    for _ in range(attempts):
        con = duckdb.connect(":memory:")
        try:
            _open_into(con, Path(audit_dir))
            return con
        except (FileNotFoundError, duckdb.IOException) as exc:
            # A writer sealed a segment between our listing and our read: list again.
            con.close()
            last = exc
            time.sleep(0.05)
    raise RuntimeError(f"could not read the ledger at {audit_dir}: it kept changing under the reader ({last})")


def _open_into(con: duckdb.DuckDBPyConnection, audit_dir: Path) -> None:
    if not audit_dir.is_dir():
        raise FileNotFoundError(f"{audit_dir}: no audit ledger here (expected the phigate_audit_dir folder)")
    sources: list[str] = []
    n = 0
    for node in layout.list_nodes(audit_dir):
        for seg in node.sealed:
            alias = f"s{n}"
            n += 1
            con.execute(f"ATTACH '{_q(str(seg.path))}' AS {alias} (READ_ONLY)")
            sources.append(alias)
        for wal in node.wals:
            alias = f"w{n}"
            n += 1
            _wal_tables(con, alias)
            con.execute(f"USE {alias}")
            try:
                # A crash (or a write in progress) can leave a partial last line: skip it.
                seal.load_wal(con, str(wal.path), ignore_errors=True)
            finally:
                con.execute("USE memory")
            sources.append(alias)
    if not sources:
        _wal_tables(con, "empty")
        sources.append("empty")
    present = {(r[0], r[1]) for r in con.execute("SELECT database_name, table_name FROM duckdb_tables()").fetchall()}
    for table in TABLES:
        # A segment sealed before a migration added a table has no such table: it holds none of them.
        having = [s for s in sources if (s, table) in present] or [_empty(con)]
        union = " UNION ALL BY NAME ".join(f"SELECT * FROM {s}.{table}" for s in having)
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


def _empty(con: duckdb.DuckDBPyConnection) -> str:
    """An attached database with every table at the newest schema and no rows."""
    if not con.execute("SELECT 1 FROM duckdb_databases() WHERE database_name = 'empty'").fetchall():
        _wal_tables(con, "empty")
    return "empty"


def _q(text: str) -> str:
    return text.replace("'", "''")
