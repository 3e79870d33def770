"""`./run.sh export`: audit records for a period, for SIEMs and auditors.

    ./run.sh export --dir AUDIT_DIR --from 2026-11-01 --to 2026-11-30 --format json|csv|parquet [--out FILE]

JSON is JSON lines, one record per line. `--to` is inclusive when it is a date (the whole day), exclusive
when it is a date and time. Reads a snapshot of every node's segments; safe while gateways run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import duckdb

from addons.ledger.read import TABLES, LedgerReadError, open_ledger, read_error_text, warn_stderr

TIME_COLUMN = {"events": "ts", "approvals": "ts", "auth_failures": "ts", "rule_versions": "effective_from",
               "checkpoints": "ts", "reviews": "ts", "incidents": "ts", "configuration": "ts"}
ORDER = {"checkpoints": "node_id, size"}


def parse_when(text: str, end: bool) -> dt.datetime:
    """A date or ISO date-time, as naive UTC. A bare date as an end bound means the end of that day."""
    try:
        if len(text) == 10:
            day = dt.datetime.fromisoformat(text)
            return day + dt.timedelta(days=1) if end else day
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a date (2026-11-30) or ISO date-time") from exc
    return when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run.sh export", description="Export audit records for a period.")
    p.add_argument("--dir", default=os.environ.get("PHIGATE_AUDIT_DIR", ""),
                   help="the ledger folder (phigate_audit_dir; env PHIGATE_AUDIT_DIR)")
    p.add_argument("--from", dest="start", default="1970-01-01", help="start date or date-time, UTC (inclusive)")
    p.add_argument("--to", dest="end", default="9999-12-30", help="end date (inclusive) or date-time (exclusive), UTC")
    p.add_argument("--format", choices=("json", "csv", "parquet"), default="json", help="json (lines), csv or parquet")
    p.add_argument("--table", choices=TABLES, default="events", help="which records (default events)")
    p.add_argument("--out", default="-", help="output file (default stdout; parquet needs a file)")
    p.add_argument("--with-entry", action="store_true", help="include each record's canonical hashed entry")
    return p.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if not args.dir or not Path(args.dir).is_dir():
        print(f"error: {args.dir or '(none)'} is not a ledger folder: pass --dir AUDIT_DIR (the gateway's "
              "phigate_audit_dir) or set PHIGATE_AUDIT_DIR", file=sys.stderr)
        return 2
    try:
        start, end = parse_when(args.start, False), parse_when(args.end, True)
    except argparse.ArgumentTypeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "parquet" and args.out == "-":
        print("error: parquet is binary: pass --out FILE.parquet", file=sys.stderr)
        return 2
    try:
        return _export(args, start, end)
    except (LedgerReadError, duckdb.Error) as exc:
        print(f"error: {read_error_text(args.dir, exc)}", file=sys.stderr)
        return 1


def _export(args: argparse.Namespace, start: dt.datetime, end: dt.datetime) -> int:
    con = open_ledger(args.dir, warn=warn_stderr)
    try:
        col = TIME_COLUMN[args.table]
        exclude = "" if args.with_entry or args.table == "checkpoints" else " EXCLUDE (entry)"
        order = ORDER.get(args.table, "node_id, seq")
        # Literals from datetime objects (views take no parameters): never text from the command line.
        query = (f"SELECT *{exclude} FROM {args.table} WHERE {col} >= TIMESTAMP '{start.isoformat()}' "  # noqa: S608
                 f"AND {col} < TIMESTAMP '{end.isoformat()}' ORDER BY {order}")
        con.execute(f"CREATE TEMP VIEW export AS {query}")
        fmt = {"json": "FORMAT json", "csv": "FORMAT csv, HEADER", "parquet": "FORMAT parquet"}[args.format]
        if args.out != "-":
            con.execute(f"COPY export TO '{args.out.replace(chr(39), chr(39) * 2)}' ({fmt})")
            n = con.execute("SELECT count(*) FROM export").fetchone()
            print(f"exported {n[0] if n else 0} {args.table} records to {args.out}", file=sys.stderr)
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"export.{args.format}"
            con.execute(f"COPY export TO '{str(out).replace(chr(39), chr(39) * 2)}' ({fmt})")
            sys.stdout.write(out.read_text())
            sys.stdout.flush()
    finally:
        con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
