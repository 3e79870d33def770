"""Run one packet query: write all its rows to CSV and JSON with DuckDB's COPY, keep only the first
few in Python for display. A million-row ledger never becomes a million Python objects."""

# SQL here is built from this package's own fragments, table names and timestamps formatted from
# datetimes; no ledger value or user-supplied text is ever inlined.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from reports.model import Table


def sql_str(text: str) -> str:
    """A SQL string literal (for names and texts of our own, written into VALUES lists and COPY paths)."""
    return "'" + str(text).replace("'", "''") + "'"


class Collector:
    def __init__(self, con: duckdb.DuckDBPyConnection, data_dir: Path, row_limit: int) -> None:
        self.con = con
        self.data_dir = data_dir
        self.row_limit = row_limit
        self.files: list[Path] = []
        data_dir.mkdir(parents=True, exist_ok=True)

    def scalar(self, sql: str) -> Any:
        row = self.con.execute(sql).fetchone()
        return row[0] if row else None

    def row(self, sql: str) -> tuple[Any, ...]:
        row = self.con.execute(sql).fetchone()
        if row is None:
            raise ValueError("aggregate query returned no row")
        return tuple(row)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.con.execute(sql).fetchall()]

    def table(
        self,
        id: str,
        title: str,
        sql: str,
        numeric: Iterable[str] = (),
        note: str | None = None,
        empty_text: str = "None in this period.",
        data_sql: str | None = None,
        complete: bool = False,
    ) -> Table:
        """`sql` gives the displayed columns; `data_sql` (default: the same) the data files' columns.
        `complete`: keep every row for display (a register reviewed entry by entry), not the limit."""
        csv_path = self.data_dir / f"{id}.csv"
        json_path = self.data_dir / f"{id}.json"
        # Run the query once into a temporary table; the two data files and the displayed rows read it.
        # (A temporary table keeps the query's row order: DuckDB preserves insertion order.)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE _packet_table AS {data_sql or sql}")
        try:
            self.con.execute(f"COPY _packet_table TO {sql_str(str(csv_path))} (FORMAT CSV, HEADER)")
            self.con.execute(f"COPY _packet_table TO {sql_str(str(json_path))} (FORMAT JSON, ARRAY true)")
            shown_sql = f"SELECT * FROM ({sql})" if data_sql else "SELECT * FROM _packet_table"
            cur = self.con.execute(shown_sql if complete else f"{shown_sql} LIMIT {int(self.row_limit)}")
            columns = tuple(d[0] for d in cur.description or ())
            shown = tuple(tuple(r) for r in cur.fetchall())
            total = int(self.scalar("SELECT count(*) FROM _packet_table"))
        finally:
            self.con.execute("DROP TABLE IF EXISTS _packet_table")
        self.files += [csv_path, json_path]
        numeric_idx = frozenset(columns.index(c) for c in numeric)
        return Table(
            id=id, title=title, columns=columns, rows=shown, total=total,
            data_file=f"data/{csv_path.name}", json_file=f"data/{json_path.name}",
            numeric=numeric_idx, empty_text=empty_text, note=note, complete=complete,
        )
