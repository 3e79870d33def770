"""Benchmark: a million-event ledger to an evidence packet (targets: HTML < 30 s, PDF < 90 s).

    .phigate/venv/bin/python -m tests.bench.bench_report [--events 1000000] [--runs 3]

Each run is the real command (`python -m reports.cli`, a fresh process, imports included) on a
synthetic ledger with the ledger's schema (tests/support/ledger_synth.py), placed as one sealed
segment of a ledger folder (nodes/NODE/seg-....duckdb) so the report reads it through the ledger's
own read path (addons.ledger.read.open_ledger: attached segments behind views). "html" runs write the
data files and the HTML (--no-pdf); "pdf" runs write the whole packet. Prints the median and the
spread of wall time and of the child's CPU time (the machine is shared: CPU time is the steadier
figure), the ratio to the target, and the baseline of one full scan of the events table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from addons.ledger.layout import seg_name
from tests.support import ledger_synth as synth

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {"html": 30.0, "pdf": 90.0}


def run_once(ledger: Path, out: Path, pdf: bool) -> tuple[float, float]:
    argv = [sys.executable, "-m", "reports.cli", "--from", "2026-01-01", "--to", "2026-01-31", "--out", str(out),
            "--ledger", str(ledger), "--unsigned", "--no-verify"]
    if not pdf:
        argv.append("--no-pdf")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"report failed:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        ledger = Path(tmp) / "audit"
        segment = ledger / "nodes" / "synth" / seg_name(1, args.events)
        segment.parent.mkdir(parents=True)
        t0 = time.perf_counter()
        synth.generate(segment, args.events, dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1))
        gen = time.perf_counter() - t0
        con = duckdb.connect(str(segment), read_only=True)
        t0 = time.perf_counter()
        con.execute("SELECT decision, count(*), sum(bytes_out) FROM events GROUP BY ALL").fetchall()
        scan = time.perf_counter() - t0
        con.close()
        print(f"ledger: {args.events:,} events generated in {gen:.1f} s; "
              f"one grouped scan of events: {scan * 1000:.0f} ms")
        print(f"load: {os.getloadavg()[0]:.1f} (1-min average on {os.cpu_count()} cores)")
        for kind in ("html", "pdf"):
            walls, cpus = [], []
            for i in range(args.runs):
                wall, cpu = run_once(ledger, Path(tmp) / f"{kind}-{i}", pdf=kind == "pdf")
                walls.append(wall)
                cpus.append(cpu)
            med = statistics.median(walls)
            print(f"{kind:>4}: wall median {med:6.2f} s (min {min(walls):.2f}, max {max(walls):.2f}); "
                  f"cpu median {statistics.median(cpus):6.2f} s; target < {TARGETS[kind]:.0f} s "
                  f"-> {med / TARGETS[kind]:.2f} of target; {args.events / med:,.0f} events/s; "
                  f"{med / scan:,.0f}x one scan")
        pdf = Path(tmp) / "pdf-0" / "packet.pdf"
        print(f"packet: {sum(f.stat().st_size for f in (Path(tmp) / 'pdf-0').rglob('*') if f.is_file()) / 1e6:.1f} MB "
              f"in total, PDF {pdf.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
