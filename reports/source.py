"""Opening the audit ledger for reading, while the gateway may be running and writing.

The ledger (addons/ledger/) is a directory of sealed DuckDB segment files plus the live
segment the gateway holds; `addons.ledger.read.open_ledger(dir)` gives a connection whose views
(events, approvals, ...) combine them. A single DuckDB file holding the same tables (an exported
copy, test data) is opened read-only directly.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import duckdb

# Tables (or views) a packet reads; a ledger without one of them cannot back a complete packet, and
# silently showing "0 authentication failures" for a missing table would be false evidence.
REQUIRED = ("events", "approvals", "auth_failures", "rule_versions", "checkpoints", "reviews", "incidents")


class LedgerError(Exception):
    pass


def default_ledger() -> str:
    return os.environ.get("PHIGATE_LEDGER", "ledger")


def _ledger_module(name: str) -> Any:
    try:
        return importlib.import_module(f"addons.ledger.{name}")
    except ImportError:
        return None


def open_ledger(path: str | Path) -> duckdb.DuckDBPyConnection:
    p = Path(path)
    if p.is_file():
        try:
            con = duckdb.connect(str(p), read_only=True)
        except duckdb.Error as exc:
            raise LedgerError(f"cannot open the ledger file {p}: {exc}") from exc
    elif p.is_dir():
        read = _ledger_module("read")
        if read is None or not hasattr(read, "open_ledger"):
            raise LedgerError(f"{p} is a ledger folder but addons.ledger.read.open_ledger is not available")
        try:
            con = read.open_ledger(p, warn=read.warn_stderr)
        except (RuntimeError, duckdb.Error) as exc:  # read.LedgerReadError names the file and seq range
            raise LedgerError(str(exc)) from exc
    else:
        raise LedgerError(
            f"no ledger at {p}: pass --ledger with the gateway's ledger folder (or set PHIGATE_LEDGER)"
        )
    con.execute("SET enable_progress_bar = false")
    present = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables UNION SELECT view_name FROM duckdb_views()"
        ).fetchall()
    }
    missing = [t for t in REQUIRED if t not in present]
    if missing:
        con.close()
        raise LedgerError(f"the ledger at {p} has no {', '.join(missing)} table(s); expected the phigate audit schema")
    if "configuration" not in present:
        # A copy made before configuration records existed: none were kept, and the packet says so.
        from addons.ledger.schema import columns

        cols = ", ".join(f'"{c}" {t}' for c, t in columns("configuration"))
        con.execute(f"CREATE TEMP TABLE configuration ({cols})")
    return con
