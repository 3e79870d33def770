"""Audit ledger benchmarks, in one run (medians over --runs):

1. sustained events/s into the ledger with durable group commit (many concurrent flows, each
   awaiting its own fsync'd and signed commit: one Ed25519 checkpoint per batch), with and without
   session recording, and per request as the gateway writes it: a write-ahead intent, then the
   outcome event (two durable records, one after the other);
2. added p50/p99 latency per request through stock mitmdump at low concurrency: Gateway only versus
   Gateway + Audit (intent before forwarding, event before the response), with a direct
   connection to the upstream as the floor;
3. `./run.sh verify` over a ledger of --verify-events events (default 1,000,000), as a subprocess.

Targets: >= 5,000 events/s; auditing adds < 2 ms p50; verify 1M events < 30 s.

    .phigate/venv/bin/python -m tests.bench.bench_audit [--runs 3] [--verify-events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from addons.ledger import keys, layout, recording
from addons.ledger.writer import Ledger, Settings
from tests.support.servers import ROOT, VENV_BIN, Process, free_port, wait_http


def event_row(i: int) -> dict[str, Any]:
    """A realistic event: the fields the audit addon fills for a masked Chroma query."""
    return {
        "request_id": f"{i:032x}", "session_id": f"s{i % 50:031x}", "subject": f"user-{i % 40}",
        "name": "Dr. Example", "email": "clin@example.org", "client_id": "agent-7",
        "roles": ["clinician"], "client_addr": "127.0.0.1", "user_agent": "chroma-client/1.5",
        "backend": "chroma", "operation": "search", "collection": "patients", "method": "POST",
        "path": "/api/v2/tenants/t/databases/d/collections/c/query",
        "request_summary": {"n_results": 5, "where": {"ward": "[masked]"}}, "status": 200, "decision": "allow",
        "rule_ids": ["clinician-search"], "stage": None,
        "masking": {"by_rule": {"mask-names": 3, "mask-mrn": 2}, "by_type": {"PERSON": 3, "MRN": 2}},
        "fields_disclosed": ["documents", "metadata.ward"], "subject_refs": ["ref-a1", "ref-b2"],
        "purpose": "treatment", "hold_id": None, "break_glass": False, "bytes_in": 180, "bytes_out": 2400,
        "latency_ms": 3.217, "error": None,
    }


# ---------------------------------------------------------------- 1. events/s

def intent_row(i: int) -> dict[str, Any]:
    row = event_row(i)
    return {k: row[k] for k in ("request_id", "session_id", "subject", "client_id", "roles", "client_addr",
                                "user_agent", "backend", "operation", "collection", "method", "path",
                                "request_summary", "decision", "rule_ids", "hold_id", "break_glass", "purpose")}


async def _sustained(directory: Path, seconds: float, concurrency: int, record: bool,
                     intents: bool = False) -> tuple[float, float]:
    key = keys.parse_private(os.urandom(32).hex().encode(), "bench")
    rk = recording.RecordingKey("bench", os.urandom(32)) if record else None
    led = Ledger(directory, "bench", signing_key=key,
                 witness=layout.witness_location(f"{directory.parent}/{directory.name}-witness/"),
                 recording_key=rk, settings=Settings())
    led.open()
    led.start()
    payload = b'{"request":{"method":"POST","body":"' + b"x" * 600 + b'"},"response":{"status":200}}'
    done = 0
    stop_at = time.perf_counter() + seconds

    async def flow(worker: int) -> None:
        nonlocal done
        i = worker
        while time.perf_counter() < stop_at:
            if intents:
                # As the gateway: the intent is durable before the request leaves, the outcome after.
                seq = await led.append("intent", intent_row(i))
                await led.append("event", {**event_row(i), "intent_seq": seq}, payload if record else None)
                done += 2
            else:
                await led.append("event", event_row(i), payload if record else None)
                done += 1
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(flow(w) for w in range(concurrency)))
    took = time.perf_counter() - started
    per_fsync = done / max(led.batches, 1)
    led.close()
    return done / took, per_fsync


def bench_events(runs: int, seconds: float, concurrency: int) -> dict[str, float]:
    out: dict[str, float] = {}
    modes = {"events only": (False, False), "with recording": (True, False),
             "intent + outcome per request": (False, True)}
    for label, (record, intents) in modes.items():
        rates = []
        grouping = []
        for _ in range(runs):
            tmp = Path(tempfile.mkdtemp(prefix="phigate-bench-audit-", dir=ROOT / ".phigate"))
            try:
                rate, per_fsync = asyncio.run(_sustained(tmp / "audit", seconds, concurrency, record, intents))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            rates.append(rate)
            grouping.append(per_fsync)
        out[label] = statistics.median(rates)
        extra = f" = {out[label] / 2:,.0f} requests/s" if intents else ""
        print(f"  durable signed records/s, group commit, {concurrency} concurrent flows, {label}: "
              f"median {out[label]:,.0f}{extra}  (runs: {', '.join(f'{r:,.0f}' for r in rates)}; "
              f"{statistics.median(grouping):.0f} records per fsync + signature)")
    return out


async def _commit_latencies(directory: Path, n: int) -> list[float]:
    """One flow alone: each append waits for its own fsync'd, signed commit (what a request's intent,
    and then its outcome, each cost in latency)."""
    key = keys.parse_private(os.urandom(32).hex().encode(), "bench")
    led = Ledger(directory, "bench", signing_key=key,
                 witness=layout.witness_location(f"{directory.parent}/{directory.name}-witness/"))
    led.open()
    led.start()
    out = []
    for i in range(n + 20):
        t = time.perf_counter()
        await led.append("intent", intent_row(i))
        if i >= 20:
            out.append((time.perf_counter() - t) * 1000.0)
    led.close()
    return out


def bench_commit(runs: int, n: int = 300) -> float:
    p50s = []
    for _ in range(runs):
        tmp = Path(tempfile.mkdtemp(prefix="phigate-bench-audit-", dir=ROOT / ".phigate"))
        try:
            lat = asyncio.run(_commit_latencies(tmp / "audit", n))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        p50s.append(pct(lat, 50))
    med = statistics.median(p50s)
    print(f"  one durable signed commit, one flow alone: p50 {med:.2f} ms (runs: "
          f"{', '.join(f'{x:.2f}' for x in p50s)}): the write-ahead intent adds this to a forwarded request")
    return med


# ---------------------------------------------------------------- 2. added latency

class FastUpstream:
    """A minimal keep-alive HTTP/1.1 JSON server that answers in one write with TCP_NODELAY.

    http.server writes headers and body separately, which with delayed ACKs costs ~40 ms per
    keep-alive request and would drown the figure being measured.
    """

    BODY = b'{"ids": [["p1", "p2", "p3"]], "distances": [[0.1, 0.2, 0.3]]}'

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        resp = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(self.BODY)).encode() + b"\r\n\r\n" + self.BODY)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    if length:
                        await reader.readexactly(length)
                    writer.write(resp)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        async def serve() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            self._ready.set()
            async with server:
                await server.serve_forever()

        try:
            loop.run_until_complete(serve())
        except (asyncio.CancelledError, RuntimeError):
            pass  # stopped by __exit__

    def __enter__(self) -> FastUpstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            for task in asyncio.all_tasks(self._loop):
                self._loop.call_soon_threadsafe(task.cancel)


SCRIPT = """import sys
sys.path.insert(0, {root!r})
from addons.gateway import Gateway
{extra}
addons = [Gateway(){more}]
"""


@contextmanager
def gateway(upstream: str, tmp: Path, audit: bool) -> Iterator[str]:
    script = tmp / f"chain_{'audit' if audit else 'bare'}.py"
    script.write_text(SCRIPT.format(root=str(ROOT), extra="from addons.audit import Audit" if audit else "",
                                    more=", Audit()" if audit else ""))
    port = free_port()
    key = tmp / "sign.pem"
    if not key.exists():
        keys.generate_key_file(key)
    argv = [str(VENV_BIN / "mitmdump"), "--mode", f"reverse:{upstream}@127.0.0.1:{port}", "-s", str(script),
            "--set", f"confdir={tmp / 'conf'}", "--set", "flow_detail=0", "--set", f"phigate_rules={ROOT / 'rules'}",
            "--set", "phigate_profile=chroma", "--set", f"phigate_audit_dir={tmp / 'audit'}",
            "--set", f"phigate_witness={tmp / 'witness'}/", "--set", f"phigate_audit_key_file={key}"]
    proc = Process("bench-gw", argv, cwd=ROOT)
    proc.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/-/healthz", 30, proc.proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


def latencies(hostport: str, n: int) -> list[float]:
    host, port = hostport.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = b'{"query_embeddings": [[0.1, 0.2, 0.3]], "n_results": 3}'
    out = []
    for i in range(n + 50):
        t = time.perf_counter()
        conn.request("POST", "/api/v2/collections/c/query", body=body, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if i >= 50:  # warm-up
            out.append((time.perf_counter() - t) * 1000.0)
    conn.close()
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def bench_latency(runs: int, n: int) -> dict[str, tuple[float, float]]:
    res: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": [], "gateway+audit": []}
    with FastUpstream() as up:
        up_hostport = up.url.removeprefix("http://")
        for _ in range(runs):
            tmp = Path(tempfile.mkdtemp(prefix="phigate-bench-audit-", dir=ROOT / ".phigate"))
            try:
                d = latencies(up_hostport, n)
                res["direct"].append((pct(d, 50), pct(d, 99)))
                for audit in (False, True):
                    with gateway(up.url, tmp, audit) as hp:
                        lat = latencies(hp, n)
                    res["gateway+audit" if audit else "gateway"].append((pct(lat, 50), pct(lat, 99)))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    med = {k: (statistics.median(p[0] for p in v), statistics.median(p[1] for p in v)) for k, v in res.items()}
    for k, (p50, p99) in med.items():
        print(f"  {k:14s} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   ({n} sequential requests x {runs} runs)")
    added50 = med["gateway+audit"][0] - med["gateway"][0]
    added99 = med["gateway+audit"][1] - med["gateway"][1]
    print(f"  auditing adds p50 {added50:+.2f} ms, p99 {added99:+.2f} ms "
          f"(gateway+audit / gateway p50 ratio {med['gateway+audit'][0] / med['gateway'][0]:.2f}x; "
          f"gateway / direct {med['gateway'][0] / med['direct'][0]:.1f}x)")
    return med


# ---------------------------------------------------------------- 3. verify 1M

def build_ledger(directory: Path, n: int, key_file: Path) -> None:
    key = keys.load_private(str(key_file))
    witness = layout.witness_location(f"{directory}/witness/")
    led = Ledger(directory / "audit", "bench", signing_key=key, witness=witness,
                 settings=Settings(seal_events=50_000))
    led.open()
    t = time.perf_counter()
    for i in range(n):
        led.stage("event", event_row(i))
        if (i + 1) % 100 == 0:
            # One signed batch of 100 (the gateway's batches under load are about that size).
            led.checkpoint_now()
            if led._wal_leaves >= led.settings.seal_events:
                led._rotate()
                led.seal_pending()
    led.checkpoint_now()
    led.close()
    print(f"  built a ledger of {n:,} events in {time.perf_counter() - t:.1f} s "
          f"({len(list((directory / 'audit' / 'nodes' / 'bench').glob('seg-*')))} sealed segments)")


def bench_verify(n: int, runs: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="phigate-bench-verify-", dir=ROOT / ".phigate"))
    try:
        key_file = tmp / "sign.pem"
        keys.generate_key_file(key_file)
        build_ledger(tmp, n, key_file)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "addons.cli.verify", "--dir", str(tmp / "audit"), "--witness",
                 str(tmp / "witness") + "/", "--key-file", str(key_file)],
                capture_output=True, text=True, cwd=ROOT,
            )
            times.append(time.perf_counter() - t)
            if proc.returncode != 0:
                raise RuntimeError(f"verify failed:\n{proc.stdout}\n{proc.stderr}")
        med = statistics.median(times)
        print(f"  verify {n:,} events: median {med:.1f} s (runs: {', '.join(f'{x:.1f}' for x in times)}); "
              f"{n / med:,.0f} events/s")
        print("  " + proc.stdout.strip().splitlines()[-1])
        return med
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0, help="duration of each events/s run")
    p.add_argument("--concurrency", type=int, default=128, help="concurrent flows for events/s")
    p.add_argument("--requests", type=int, default=400, help="sequential requests per latency run")
    p.add_argument("--verify-events", type=int, default=1_000_000)
    p.add_argument("--skip", action="append", default=[], choices=("events", "latency", "verify"))
    args = p.parse_args()
    print(f"phigate audit benchmark ({os.cpu_count()} cores)")
    ok = True
    if "events" not in args.skip:
        print("1. ledger throughput")
        rates = bench_events(args.runs, args.seconds, args.concurrency)
        ok &= min(rates.values()) >= 5000
        bench_commit(args.runs)
    if "latency" not in args.skip:
        print("2. latency added by auditing (low concurrency: one client, keep-alive)")
        med = bench_latency(args.runs, args.requests)
        ok &= med["gateway+audit"][0] - med["gateway"][0] < 2.0
    if "verify" not in args.skip:
        print("3. verification")
        ok &= bench_verify(args.verify_events, max(1, min(args.runs, 2))) < 30
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
