"""Seal a write-ahead segment into an immutable DuckDB segment file.

Columnar: DuckDB reads the NDJSON itself (`read_json`) and unpacks each entry with `json_transform`
into the typed columns, with no Python per row. The file is written under a temporary name,
fsync'd and renamed, so a reader only ever sees complete segments.
"""

# SQL here is built from table and column names of our own schema; values are bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

import duckdb

from addons.ledger import layout, schema
from addons.ledger.wal import fsync_dir

CHECKPOINT_COLUMNS = (
    ("node_id", "VARCHAR"), ("origin", "VARCHAR"), ("size", "BIGINT"), ("root", "VARCHAR"),
    ("ts", "TIMESTAMP"), ("key_id", "VARCHAR"), ("signature", "VARCHAR"),
)


def structure(cols: Sequence[tuple[str, str]]) -> str:
    """A json_transform structure literal for (name, type) columns."""
    return "{" + ", ".join(f'"{name}": "{ctype}"' for name, ctype in cols) + "}"


def load_wal(con: duckdb.DuckDBPyConnection, source: str, ignore_errors: bool = False) -> None:
    """Copy records from an NDJSON write-ahead file into the connection's tables."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _wal AS SELECT * FROM read_json(?, format='newline_delimited', "
        "columns={k: 'VARCHAR', s: 'BIGINT', h: 'VARCHAR', e: 'VARCHAR'}, "
        f"maximum_object_size=268435456, ignore_errors={'true' if ignore_errors else 'false'})",
        [source],
    )
    for kind, table in schema.LEAF_TABLES.items():
        st = structure(schema.entry_columns(table)).replace("'", "''")
        con.execute(
            f"INSERT INTO {table} BY NAME SELECT unnest(json_transform(e, '{st}')), e AS entry, h AS leaf_hash "
            "FROM _wal WHERE k = ? ORDER BY s",
            [kind],
        )
    st = structure(CHECKPOINT_COLUMNS)
    con.execute(
        f"INSERT INTO checkpoints BY NAME SELECT unnest(json_transform(e, '{st}')) FROM _wal WHERE k = 'checkpoint'"
    )
    con.execute("DROP TABLE _wal")


def seal(wal_path: Path, node_id: str, first: int, last: int, frontier: Sequence[bytes]) -> Path:
    """Write seg-FIRST-LAST.duckdb from `wal_path` (complete lines only), then remove the WAL."""
    directory = wal_path.parent
    final = directory / layout.seg_name(first, last)
    tmp = directory / (final.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        schema.apply_migrations(con)
        load_wal(con, str(wal_path))
        got = con.execute(
            " UNION ALL ".join(f"SELECT min(seq), max(seq), count(*) FROM {t}" for t in schema.LEAF_TABLES.values())
        ).fetchall()
        count = sum(int(r[2]) for r in got)
        if count != last - first + 1:
            raise ValueError(f"{wal_path}: sealed {count} leaves, expected {last - first + 1} (seq {first}..{last})")
        con.execute(
            "INSERT INTO segment_meta VALUES (?, ?, ?, ?, ?)",
            [node_id, first, last, [p.hex() for p in frontier], dt.datetime.now(dt.UTC).replace(tzinfo=None)],
        )
        con.execute("CHECKPOINT")
    finally:
        con.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(directory)
    wal_path.unlink()
    fsync_dir(directory)
    return final


def read_meta(segment: Path) -> tuple[int, int, list[bytes]]:
    """(first_seq, last_seq, frontier peaks) recorded in a sealed segment."""
    con = duckdb.connect(str(segment), read_only=True)
    try:
        row = con.execute("SELECT first_seq, last_seq, frontier FROM segment_meta").fetchone()
    finally:
        con.close()
    if row is None:
        raise ValueError(f"{segment}: no segment_meta row")
    return int(row[0]), int(row[1]), [bytes.fromhex(h) for h in row[2]]
