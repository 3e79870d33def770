"""Benchmark: the cost masking adds to a ~1 MB Chroma query response, and to small responses.

    .phigate/venv/bin/python -m tests.bench.bench_masking [runs] [--in-process-only] [--no-callgrind]

1. In process, through the Masking addon's real hooks (taddons/tflow): a Chroma /query response of
   100 hits with 1536-d vectors and ~1 KB clinical notes, masked for an agent (tokenize mrn and name,
   generalize dob, detect on documents), against the same flow with no masking, in the same run.
   "cold": every run carries notes the detector has never seen; "warm": the same records again
   (the detector remembers results per note text, as a vector store returns the same records).
2. Through real mitmdump processes on loopback: bare mitmdump (reverse proxy) against mitmdump with
   the masking addon, same upstream, same run; per-request latency for the 1 MB body and a small one.
3. The small response's cost inside those processes: CPU time per request (blocks in shuffled
   order) and instructions per request counted by callgrind (deterministic; see proc_cost.py). A
   small addon's share moves latency less than this machine's noise does; these two do not.
Medians over several runs; wall time and, in process, CPU time (the machine is shared).
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from http.client import HTTPConnection
from pathlib import Path

import orjson
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from addons.core.context import Caller, Operation, OpKind, context
from addons.gateway import Gateway
from addons.masking import Masking
from tests.bench import proc_cost
from tests.support.masking_fixtures import TEST_KEY, chroma_profile
from tests.support.phi_corpus import Generator
from tests.support.servers import ROOT, free_port, wait_http

PATH = "/api/v2/tenants/t/databases/d/collections/c0ffee00-0000-0000-0000-000000000000/query"
HITS, DIM = 100, 1536


def _notes(gen: Generator, n: int) -> list[str]:
    out = []
    for _ in range(n):
        text = ""
        while len(text) < 1000:
            text += gen.note().text + " "
        out.append(text[:1100])
    return out


def _vectors(seed: int = 7) -> bytes:
    rnd = random.Random(seed)
    # float32 values written the way Chroma's server writes them (shortest repr of the f32)
    return orjson.dumps([[[float(f"{rnd.uniform(-1, 1):.7g}") for _ in range(DIM)] for _ in range(HITS)]])


def query_body(docs: list[str], gen: Generator, vectors: bytes) -> bytes:
    body = {
        "ids": [[f"rec-{i}" for i in range(len(docs))]],
        "embeddings": orjson.Fragment(vectors),
        "documents": [docs],
        "uris": None,
        "metadatas": [[{"mrn": str(1000000 + i), "patient_name": gen.name(), "dob": "1961-03-05",
                        "ward": "cardio"} for i in range(len(docs))]],
        "distances": [[0.01 * i for i in range(len(docs))]],
        "include": ["documents", "metadatas", "distances", "embeddings"],
    }
    return orjson.dumps(body)


SMALL = orjson.dumps({"ids": [["p1"]], "embeddings": None, "documents": [["Follow-up visit, stable on metformin."]],
                      "uris": None, "metadatas": [[{"mrn": "1234567", "ward": "cardio"}]],
                      "distances": [[0.12]], "include": ["documents", "metadatas", "distances"]})


def flow_for(body: bytes, role: str) -> http.HTTPFlow:
    f = tflow.tflow(resp=True)
    f.request.method, f.request.path = "POST", PATH
    f.response = http.Response.make(200, body, {"content-type": "application/json"})
    c = context(f)
    c.identity = Caller("bench", "iss", frozenset({role}), "jti", 0)
    c.operation = Operation("chroma", OpKind.SEARCH, "chroma.query", "POST", PATH)
    return f


def measure(fn: Callable[[int], None], runs: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of fn(i) for i in range(runs)."""
    wall, cpu = [], []
    for i in range(runs):
        w, c = time.perf_counter(), time.process_time()
        fn(i)
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def in_process(runs: int) -> None:
    gen = Generator(11)
    vectors = _vectors()
    cold_bodies = [query_body(_notes(gen, HITS), gen, vectors) for _ in range(runs + 1)]
    warm_body = cold_bodies[0]
    m = Masking(chroma_profile())
    with taddons.context(Gateway(), m) as tctx:
        tctx.configure(m, phigate_rules=str(ROOT / "rules"), phigate_profile="chroma")

        def hooks(bodies: list[bytes], role: str) -> Callable[[int], None]:
            def run(i: int) -> None:
                f = flow_for(bodies[i % len(bodies)], role)
                m.responseheaders(f)
                m.response(f)
                assert f.response is not None and f.response.status_code == 200, f.response
            return run

        def bare(bodies: list[bytes]) -> Callable[[int], None]:
            def run(i: int) -> None:
                flow_for(bodies[i % len(bodies)], "agent")
            return run

        print(f"In process: Chroma query response {len(warm_body) / 1e6:.2f} MB ({HITS} hits x {DIM}-d vectors, "
              f"~1 KB notes), {runs} runs, median wall / CPU ms")
        hooks([warm_body], "agent")(0)  # warm the detector cache with this body's notes
        base = measure(bare(cold_bodies[1:]), runs)
        rows = [
            ("no masking (flow only)", base),
            ("clinician: accounting only", measure(hooks(cold_bodies[1:], "clinician"), runs)),
            ("agent, warm (notes seen)", measure(hooks([warm_body], "agent"), runs)),
            ("agent, cold (new notes)", measure(hooks(cold_bodies[1:], "agent"), runs)),
        ]
        for name, (w, c) in rows:
            print(f"  {name:30} {w:8.2f} / {c:8.2f}   adds {w - base[0]:8.2f} ms wall")
        print("  target: masking adds < 15 ms p50")
        small = measure(hooks([SMALL], "agent"), runs * 50)
        small_base = measure(bare([SMALL]), runs * 50)
        print(f"  small response: masking adds {(small[0] - small_base[0]) * 1000:.0f} us wall, "
              f"{(small[1] - small_base[1]) * 1000:.0f} us CPU per request")
        return None


class Upstream:
    """Loopback HTTP server answering every POST with a fixed body (one thread per connection)."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        import http.server
        import threading

        outer = bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms to every small answer

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                data = outer[self.path.split("?")[0].rsplit("/", 1)[-1]]
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _mitmdump(upstream: int, script: str | None, env: dict[str, str],
              prefix: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    venv = ROOT / ".phigate" / "venv" / "bin"
    # Under a prefix (valgrind) the interpreter is named: valgrind does not follow a script's #!.
    argv = [*prefix, *([str(venv / "python")] if prefix else []), str(venv / "mitmdump"), "-q", "--mode",
            f"reverse:http://127.0.0.1:{upstream}@127.0.0.1:{port}"]
    if script:
        argv += ["-s", script, "--set", f"phigate_rules={ROOT / 'rules'}", "--set", "phigate_profile=chroma",
                 "--set", "phigate_allow_plain_http=true"]  # loopback bench only
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_http(f"http://127.0.0.1:{port}/", proc=proc, timeout=600 if prefix else 30)
    return proc, port


def _connect(port: int) -> HTTPConnection:
    conn = HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _once(conn: HTTPConnection, name: str, role: str) -> float:
    t = time.perf_counter()
    conn.request("POST", f"/api/{name}", body=b"{}", headers={"x-bench-role": role,
                                                               "content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    elapsed = (time.perf_counter() - t) * 1000
    assert resp.status == 200 and data, (resp.status, data[:200])
    return elapsed


def _paired(targets: dict[str, tuple[int, str, str]], n: int) -> dict[str, list[float]]:
    """Round-robin over the targets, one request each per round, so that load from other processes
    on this shared machine falls on all of them alike."""
    conns = {k: _connect(port) for k, (port, _, _) in targets.items()}
    out: dict[str, list[float]] = {k: [] for k in targets}
    for i in range(n + 3):
        for k, (_, name, role) in targets.items():
            x = _once(conns[k], name, role)
            if i >= 3:  # warm-up rounds
                out[k].append(x)
    for c in conns.values():
        c.close()
    return out


def _med_diff(a: list[float], b: list[float]) -> float:
    return statistics.median(x - y for x, y in zip(a, b, strict=True))


def through_mitmdump(runs: int) -> None:
    gen = Generator(23)
    big = query_body(_notes(gen, HITS), gen, _vectors())
    up = Upstream({"big": big, "small": SMALL})
    env = {**os.environ, "PHIGATE_TOKEN_KEYS": f"k1={TEST_KEY}"}
    procs = _targets(up, env)
    bare_port, base_port, masked_port = (procs[k][1] for k in ("bare", "base", "masked"))
    try:
        n = runs * 20
        print(f"Through mitmdump (loopback, keep-alive, round-robin, {n} rounds; medians of per-round differences):")
        r = _paired({"direct": (up.port, "small", "agent"), "bare": (bare_port, "small", "agent"),
                     "base": (base_port, "small", "agent"), "masked": (masked_port, "small", "agent")}, n)
        per_req = _med_diff(r["bare"], r["direct"])
        add = _med_diff(r["masked"], r["base"])
        print(f"  small response: direct {statistics.median(r['direct']):.3f} ms, bare mitmdump "
              f"{statistics.median(r['bare']):.3f} ms, same script without masking "
              f"{statistics.median(r['base']):.3f} ms, with masking {statistics.median(r['masked']):.3f} ms")
        print(f"  bare mitmdump's per-request cost {per_req:.3f} ms; the masking addon adds {add:.3f} ms "
              f"= {100 * add / per_req:.1f}% of it (target < 10%)")
        r = _paired({"bare": (bare_port, "big", "agent"), "base": (base_port, "big", "agent"),
                     "clinician": (masked_port, "big", "clinician"), "agent": (masked_port, "big", "agent")}, runs)
        print(f"  1 MB response: bare mitmdump {statistics.median(r['bare']):.2f} ms; the masking addon adds "
              f"{_med_diff(r['clinician'], r['base']):.2f} ms (clinician, accounting only), "
              f"{_med_diff(r['agent'], r['base']):.2f} ms (agent, warm: the same notes each time)")
    finally:
        _stop(procs)


def _targets(up: Upstream, env: dict[str, str], prefix: Callable[[str], Sequence[str]] = lambda _: ()
             ) -> dict[str, tuple[subprocess.Popen[bytes], int]]:
    """Bare mitmdump; the bench script without the masking addon; the same with it."""
    script = str(Path(__file__).with_name("bench_masking_script.py"))
    return {
        "bare": _mitmdump(up.port, None, env, prefix("bare")),
        "base": _mitmdump(up.port, script, {**env, "PHIGATE_BENCH_NO_MASKING": "1"}, prefix("base")),
        "masked": _mitmdump(up.port, script, env, prefix("masked")),
    }


def _stop(procs: dict[str, tuple[subprocess.Popen[bytes], int]]) -> None:
    for p, _ in procs.values():
        p.terminate()
        p.wait(timeout=60)


def small_cost(runs: int, callgrind: bool) -> None:
    """The small response's cost inside the proxy process: CPU time and instructions per request,
    the masking addon's share against bare mitmdump's whole cost (target < 10%)."""
    up = Upstream({"small": SMALL})
    env = {**os.environ, "PHIGATE_TOKEN_KEYS": f"k1={TEST_KEY}"}
    procs = _targets(up, env)
    blocks, per_block = runs * 2, 150
    try:
        conns = {k: _connect(port) for k, (_, port) in procs.items()}
        for k in procs:
            for _ in range(50):
                _once(conns[k], "small", "agent")
        cpu: dict[str, list[float]] = {k: [] for k in procs}
        rnd = random.Random(5)
        for _ in range(blocks):
            order = list(procs)
            rnd.shuffle(order)  # no process always runs right after another
            for k in order:
                pid = procs[k][0].pid
                before = proc_cost.cpu_ns(pid)
                for _ in range(per_block):
                    _once(conns[k], "small", "agent")
                cpu[k].append((proc_cost.cpu_ns(pid) - before) / per_block / 1e6)
    finally:
        _stop(procs)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    add = _med_diff(cpu["masked"], cpu["base"])
    print(f"Small response, CPU time in the proxy process ({blocks} blocks of {per_block} requests, shuffled order):")
    print(f"  bare mitmdump {med['bare']:.3f} ms/request, script without masking {med['base']:.3f}, with masking "
          f"{med['masked']:.3f}; masking adds {add:.3f} ms = {100 * add / med['bare']:.1f}% of bare (target < 10%)")
    if not callgrind:
        return
    if not proc_cost.have_callgrind():
        print("  instructions: valgrind is not installed; skipped")
        return
    n = 300
    with tempfile.TemporaryDirectory() as tmp:
        out = {k: Path(tmp) / f"{k}.callgrind" for k in ("bare", "base", "masked")}
        procs = _targets(up, env, lambda k: proc_cost.callgrind_argv(out[k]))
        try:
            instr: dict[str, float] = {}
            for k, (p, port) in procs.items():
                conn = _connect(port)
                for _ in range(30):
                    _once(conn, "small", "agent")

                def work(conn: HTTPConnection = conn) -> None:
                    for _ in range(n):
                        _once(conn, "small", "agent")

                instr[k] = proc_cost.counted(p.pid, out[k], work) / n / 1e6
                conn.close()
        finally:
            _stop(procs)
    add_i = instr["masked"] - instr["base"]
    print(f"Small response, instructions in the proxy process (callgrind, {n} requests each; deterministic):")
    print(f"  bare mitmdump {instr['bare']:.2f} M/request, script without masking {instr['base']:.2f} M, with masking "
          f"{instr['masked']:.2f} M; masking adds {add_i:.2f} M = {100 * add_i / instr['bare']:.1f}% of bare "
          f"(target < 10%)")


def main() -> None:
    os.environ["PHIGATE_TOKEN_KEYS"] = "k1=" + TEST_KEY
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    runs = int(args[0]) if args else 15
    in_process(runs)
    if "--in-process-only" not in sys.argv:
        through_mitmdump(runs)
        small_cost(runs, callgrind="--no-callgrind" not in sys.argv)


if __name__ == "__main__":
    main()
