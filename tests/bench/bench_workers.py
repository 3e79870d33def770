"""Requests/s of small requests through 1 and 2 gateway workers on this machine, with the scaling ratio.

    .phigate/venv/bin/python -m tests.bench.bench_workers [--runs 3] [--seconds 5] [--connections 32]

Targets (all the lean engine with the full chain, in front of the same real Chroma, same wrk load):
  (a) `--workers 1`: one process, no HAProxy (the default, embedded mode)
  (b) one worker behind HAProxy: the same path as (c) with one worker, so (c)/(b) is pure scaling
  (c) `--workers 2`: two workers behind HAProxy
The request is GET /api/v2/heartbeat with a token (identity, classify, policy, approvals, forward,
masking and audit all run; Chroma's heartbeat is the cheapest backend call, so the backend takes
as little of the shared CPU as possible). Target: (c) >= 1.6x (a).

Everything runs on one machine: wrk, HAProxy, Chroma, the OpenID provider and the workers share its
cores, so the ratio measures this machine, not the design: per-process CPU seconds over the runs
are printed to show where the cores went.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
from pathlib import Path

from tests.bench.bench_engine import BENCH_ENV
from tests.bench.bench_gateway import wrk_rps
from tests.bench.proc_cost import cpu_seconds
from tests.conftest import gateway_options
from tests.support.servers import ROOT, VENV_BIN, Chroma, Idp, Process, free_port, lean_options, wait_http

PATH = "/api/v2/heartbeat"

SUPERVISE_ONE = ("import sys; from addons.runtime.launch import parse, phigate_options; "
                 "from addons.runtime.workers import supervise; "
                 "a = parse(sys.argv[1:]); raise SystemExit(supervise(a, phigate_options(a)))")


def launcher(name: str, chroma: Chroma, idp: Idp, workdir: Path, workers: int,
             behind_haproxy: bool) -> tuple[Process, int]:
    port = free_port()
    opts = gateway_options(idp, workdir / name)
    opts.update({"phigate_admin_port": str(free_port()), "phigate_holds_db": str(workdir / name / "holds.sqlite"),
                 "phigate_node_id": f"bench-{name}"})
    flags = {"phigate_rules": "--rules", "phigate_profile": "--profile", "phigate_issuer": "--issuer",
             "phigate_audience": "--audience", "phigate_backend_credential_env": "--backend-credential-env"}
    args = ["--upstream", chroma.url, "--plain-http", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers)]
    for k, v in opts.items():
        if k in flags:
            args += [flags[k], v]
        elif k in lean_options() and k != "phigate_allow_plain_http":
            args += ["--set", f"{k}={v}"]
    if behind_haproxy and workers == 1:
        argv = [str(VENV_BIN / "python"), "-c", SUPERVISE_ONE, *args]
    else:
        argv = [str(VENV_BIN / "python"), "-m", "addons.runtime.launch", *args]
    return Process(name, argv, env=BENCH_ENV, cwd=ROOT), port


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process and its live descendants, by command name."""
    out: dict[str, float] = {}
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        out[comm] = out.get(comm, 0.0) + cpu_seconds(pid)
        kids = [int(x) for x in children.read_text().split()]
    except (OSError, ValueError):
        return out
    for kid in kids:
        for k, v in tree_cpu(kid).items():
            out[k] = out.get(k, 0.0) + v
    return out


def children_cpu() -> float:
    """CPU seconds of this script's finished children (the wrk runs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy so far (every process on the machine, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--client", default="admin-1", help="IdP client whose token the load uses")
    args = ap.parse_args()
    if not shutil.which("wrk") or not shutil.which("haproxy"):
        raise SystemExit("wrk and haproxy are needed (./run.sh setup installs both)")

    workdir = ROOT / ".phigate" / "bench-workers"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    with Idp() as idp, Chroma() as chroma:
        token = idp.token(args.client)
        setups = {"1 worker (no HAProxy)": (1, False), "1 worker + HAProxy": (1, True),
                  "2 workers + HAProxy": (2, True)}
        procs: dict[str, tuple[Process, int]] = {}
        rps: dict[str, list[float]] = {k: [] for k in setups}
        cpu: dict[str, dict[str, float]] = {k: {} for k in setups}
        try:
            for i, (name, (n, lb)) in enumerate(setups.items()):
                p, port = launcher(f"s{i}", chroma, idp, workdir, n, lb)
                p.start()
                procs[name] = (p, port)
            for p, port in procs.values():
                wait_http(f"http://127.0.0.1:{port}/-/readyz", 90, p.proc)
            for _ in range(args.runs):
                for name, (p, port) in procs.items():  # interleaved: noise hits all alike
                    assert p.proc is not None
                    before = tree_cpu(p.proc.pid)
                    busy_before = machine_busy_seconds()
                    wrk_before = children_cpu()
                    chroma_before = cpu_seconds(chroma.proc.proc.pid) if chroma.proc.proc else 0.0
                    rps[name].append(wrk_rps(f"http://127.0.0.1:{port}{PATH}", {"Authorization": f"Bearer {token}"},
                                             args.seconds, args.connections))
                    after = tree_cpu(p.proc.pid)
                    cpu[name]["wrk"] = cpu[name].get("wrk", 0.0) + children_cpu() - wrk_before
                    cpu[name]["(whole machine)"] = (cpu[name].get("(whole machine)", 0.0)
                                                    + machine_busy_seconds() - busy_before)
                    for k, v in after.items():
                        cpu[name][k] = cpu[name].get(k, 0.0) + v - before.get(k, 0.0)
                    if chroma.proc.proc:
                        used = cpu_seconds(chroma.proc.proc.pid) - chroma_before
                        cpu[name]["chroma"] = cpu[name].get("chroma", 0.0) + used
        finally:
            for p, _ in procs.values():
                p.stop(timeout=30)

    med = {k: statistics.median(v) for k, v in rps.items()}
    wall = args.runs * args.seconds
    print(f"small request: GET {PATH} with a token, full chain, {args.runs} runs x {args.seconds}s, "
          f"{args.connections} connections, wrk -t2; {os.cpu_count()} cores shared by everything")
    print(f"{'setup':<24}{'req/s (median)':>16}   runs            CPU cores used (avg over the runs)")
    for k in setups:
        cores = ", ".join(f"{n} {v / wall:.2f}" for n, v in sorted(cpu[k].items(), key=lambda x: -x[1]) if v > 0.05)
        print(f"{k:<24}{med[k]:>16.0f}   {', '.join(f'{x:.0f}' for x in rps[k]):<16}{cores}")
    base = med["1 worker (no HAProxy)"]
    print(f"2 workers + HAProxy / 1 worker (no HAProxy): {med['2 workers + HAProxy'] / base:.2f}x (target >= 1.6)")
    print(f"2 workers + HAProxy / 1 worker + HAProxy: {med['2 workers + HAProxy'] / med['1 worker + HAProxy']:.2f}x")
    print(f"1 worker + HAProxy / 1 worker (no HAProxy): {med['1 worker + HAProxy'] / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
