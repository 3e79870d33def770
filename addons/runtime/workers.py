"""`./run.sh gateway --workers N`: N gateway processes behind HAProxy, one listen address for clients.

    client --TLS--> HAProxy (TCP mode, host:port) --TLS--> worker 1 (127.0.0.1:p1, node NODE-w1)
                                                  \\--TLS--> worker 2 (127.0.0.1:p2, node NODE-w2) ...

Why TCP mode (TLS passed through to the workers) rather than TLS terminated at HAProxy:
- TLS ends in the process that verifies the caller's token and enforces policy: no clear-text hop
  carrying bearer tokens and PHI, even on loopback, and no second TLS configuration to keep in step.
- The gateway's own TLS check (`tls_established`, addons/gateway.py) keeps its meaning; with TLS
  ended at HAProxy every request would arrive in clear and need a trusted forwarded-proto header.
- HAProxy stays a dumb, fast connection spreader (it never sees a token); one worker's CPU is the
  bottleneck, not the balancer's.
Cost: workers see HAProxy's loopback address as the client address (mitmproxy has no PROXY protocol
listener); the audit's client_addr is then 127.0.0.1. See the README's workers section.

The supervisor (this module, in the launcher's process):
- starts each worker with its own node id (NODE-wI: its own audit ledger segment, tree and
  checkpoints under the shared audit dir) and the shared approvals store (SQLite, WAL); all workers
  share the admin listener port with SO_REUSEPORT, and any of them serves every worker's holds;
- writes the HAProxy config and runs HAProxy in the foreground; HAProxy health-checks each
  worker's /-/readyz every second and stops sending it connections while it fails; a worker
  whose process exits is marked DOWN at once through HAProxy's admin socket, so its replacement
  gets connections only once its own check passes (not while it starts or fetches keys);
- restarts a worker that exits (back-off 0.5 s doubling to 30 s, reset after a minute of uptime);
  the dead worker's pending holds are ended as denied and recorded by the approvals store's reaper
  (a dead local pid) in the surviving or restarted workers;
- stops everything on SIGTERM/SIGINT, HAProxy first; if HAProxy itself dies, the gateway stops
  (fail closed: no listener is better than an unmanaged one).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from addons.runtime.commands import engine_argv, engine_env

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
HEALTHY_UPTIME_S = 60.0
POLL_S = 0.2
CHECK_INTERVAL_MS = 1000
STARTUP_WAIT_S = 60.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    host: str
    port: int


def haproxy_config(listen_host: str, listen_port: int, backends: Sequence[Backend], *, tls: bool,
                   check_path: str = "/-/readyz", stats_socket: Path | None = None) -> str:
    """HAProxy configuration: TCP pass-through to the workers, readiness checks over HTTP(S)."""
    if not backends:
        raise ValueError("no workers to balance")
    # verify none: the check runs over loopback to a worker this supervisor started, and only reads
    # the readiness status; client traffic is never decrypted by HAProxy.
    check_tls = " check-ssl verify none" if tls else ""
    bind_host = f"[{listen_host}]" if ":" in listen_host else listen_host
    lines = [
        "# written by addons/runtime/workers.py for `run.sh gateway --workers N`; regenerated at every start",
        "global",
        # No `log` lines: in the foreground (-db) HAProxy already prints server state changes
        # (a worker DOWN or UP, and why) on stderr, which is all the supervisor's output needs.
        "    maxconn 4096",
        # One thread: on a small machine HAProxy must not compete with the workers for cores.
        "    nbthread 1",
    ]
    if stats_socket is not None:
        lines.append(f"    stats socket {stats_socket} mode 600 level admin")
    lines += [
        "",
        "defaults",
        "    mode tcp",
        "    timeout connect 5s",
        # Long: a request held for a human's approval keeps its connection open for minutes.
        "    timeout client 30m",
        "    timeout server 30m",
        "    timeout check 2s",
        "",
        "frontend phigate",
        f"    bind {bind_host}:{listen_port}",
        "    default_backend workers",
        "",
        "backend workers",
        # leastconn: held requests pin connections for minutes; round robin would pile new ones
        # onto a worker already busy with long waits.
        "    balance leastconn",
        "    option httpchk",
        f"    http-check send meth GET uri {check_path} ver HTTP/1.1 hdr Host localhost",
        "    http-check expect status 200",
        # A worker that goes down: its connections are cut at once rather than left hanging.
        "    option redispatch",
        "    retries 2",
    ]
    for b in backends:
        lines.append(f"    server {b.name} {b.host}:{b.port} check inter {CHECK_INTERVAL_MS} fall 2 rise 1"
                     f"{check_tls} on-marked-down shutdown-sessions")
    return "\n".join(lines) + "\n"


def haproxy_command(sock: Path, command: str, timeout: float = 2.0) -> str:
    """One command on HAProxy's admin socket; its answer, stripped (empty when it just complied)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):  # HAProxy closes the connection after one command
            data += chunk
    return data.decode(errors="replace").strip()


@dataclass(slots=True)
class Worker:
    index: int
    node_id: str
    port: int
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = RESTART_MIN_S
    next_start: float = 0.0
    log_path: Path = field(default_factory=lambda: Path(os.devnull))

    @property
    def name(self) -> str:
        return f"w{self.index}"


class Supervisor:
    """Runs the workers and HAProxy; restarts workers that die. `run()` blocks until stopped."""

    def __init__(self, worker_argvs: Sequence[tuple[str, int, list[str]]], listen_host: str, listen_port: int,
                 *, tls: bool, state_dir: Path, env: dict[str, str] | None = None,
                 haproxy: str | None = None, out: object = None) -> None:
        self.workers = [Worker(i + 1, node, port, argv) for i, (node, port, argv) in enumerate(worker_argvs)]
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.tls = tls
        self.state_dir = state_dir
        self.env = dict(os.environ if env is None else env)
        self.haproxy_bin = haproxy or shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.haproxy: subprocess.Popen[bytes] | None = None
        self._stopping = False

    # -- processes

    def say(self, message: str) -> None:
        print(f"[phigate] workers: {message}", file=sys.stderr, flush=True)

    def start_worker(self, w: Worker) -> None:
        # Each worker's output goes to the supervisor's stderr, prefixed by nothing: the engine's own
        # log lines already carry timestamps; the node id is in every audit record.
        w.proc = subprocess.Popen(w.argv, env=self.env, stdin=subprocess.DEVNULL)  # noqa: S603 - our own argv
        w.started_at = time.monotonic()
        self.say(f"started {w.name} (node {w.node_id}, pid {w.proc.pid}, 127.0.0.1:{w.port})")

    def write_config(self) -> Path:
        cfg = self.state_dir / "haproxy.cfg"
        backends = [Backend(w.name, "127.0.0.1", w.port) for w in self.workers]
        cfg.write_text(haproxy_config(self.listen_host, self.listen_port, backends, tls=self.tls,
                                      stats_socket=self.stats_socket))
        return cfg

    def start_haproxy(self) -> None:
        cfg = self.write_config()
        check = subprocess.run([self.haproxy_bin, "-c", "-f", str(cfg)],  # noqa: S603 - our own argv
                               capture_output=True, text=True)
        if check.returncode != 0 and not self._stopping:
            raise RuntimeError(f"HAProxy rejected {cfg}:\n{check.stdout}{check.stderr}")
        # -db: stay in the foreground so the supervisor owns (and notices the death of) HAProxy.
        self.haproxy = subprocess.Popen([self.haproxy_bin, "-db", "-f", str(cfg)], env=self.env,  # noqa: S603
                                        stdin=subprocess.DEVNULL)
        self.say(f"HAProxy (pid {self.haproxy.pid}) on {self.listen_host}:{self.listen_port} -> "
                 + ", ".join(f"{w.name}=127.0.0.1:{w.port}" for w in self.workers)
                 + f"; stats socket {self.stats_socket}")

    def reap_and_restart(self, now: float) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is not None:
                code = w.proc.returncode
                uptime = now - w.started_at
                if uptime >= HEALTHY_UPTIME_S:
                    w.backoff = RESTART_MIN_S
                self.say(f"{w.name} (node {w.node_id}, pid {w.proc.pid}) exited with {code} after {uptime:.1f}s; "
                         f"restarting in {w.backoff:.1f}s")
                self.mark_down(w)
                w.proc = None
                w.next_start = now + w.backoff
                w.backoff = min(RESTART_MAX_S, w.backoff * 2)
                w.restarts += 1
            if w.proc is None and not self._stopping and now >= w.next_start:
                self.start_worker(w)

    @property
    def stats_socket(self) -> Path:
        return self.state_dir / "haproxy.sock"

    def mark_down(self, w: Worker) -> None:
        """Tell HAProxy at once that a worker's process is gone; its readiness check brings it back.

        Why not leave it to the checks: they need two failures (up to two intervals), and a worker
        restarted within that time is never marked DOWN at all. HAProxy then keeps sending it
        connections while the new process starts (redispatched), and while it listens but is not
        ready yet; the check that then answers 503 marks it DOWN and `shutdown-sessions` cuts the
        requests it had just been given. Forced DOWN here, it gets no connection until a check
        passes, i.e. until the new process answers ready.
        """
        if self.haproxy is None or self.haproxy.poll() is not None:
            return  # HAProxy not started yet (it starts with fresh checks) or already gone
        try:
            answer = haproxy_command(self.stats_socket, f"set server workers/{w.name} health down")
        except OSError as exc:
            # Not fatal: the checks still take the worker out, only later.
            self.say(f"could not mark {w.name} DOWN through {self.stats_socket} ({type(exc).__name__}: {exc})")
            return
        if answer:
            self.say(f"HAProxy refused to mark {w.name} DOWN: {answer}")

    def wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(self.workers)
        while waiting and time.monotonic() < deadline and not self._stopping:
            for w in list(waiting):
                if w.proc is not None and w.proc.poll() is not None:
                    waiting.remove(w)  # died at start: reap_and_restart will deal with it
                    continue
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", w.port), timeout=0.5):
                    waiting.remove(w)
            time.sleep(POLL_S)
        if waiting:
            self.say("not listening yet: " + ", ".join(w.name for w in waiting) + "; HAProxy starts anyway")

    def stop(self, *_: object) -> None:
        self._stopping = True

    def shutdown(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()  # first: no new connections while workers drain
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.haproxy.wait(10)
            if self.haproxy.poll() is None:
                self.haproxy.kill()
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.terminate()
        deadline = time.monotonic() + 15
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(5)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        try:
            for w in self.workers:
                self.start_worker(w)
            # Open the client listener once the workers listen, so that the first clients are not
            # refused while HAProxy's first checks fail.
            self.wait_listening(STARTUP_WAIT_S)
            if self._stopping:
                return 0
            self.start_haproxy()
            assert self.haproxy is not None
            while not self._stopping:
                if self.haproxy.poll() is not None:
                    self.say(f"HAProxy exited with {self.haproxy.returncode}; stopping the gateway")
                    return 1
                self.reap_and_restart(time.monotonic())
                time.sleep(POLL_S)
            return 0
        finally:
            self.shutdown()


def worker_options(opts: dict[str, str], node_id: str) -> dict[str, str]:
    """One worker's options: its own node id (its own ledger segment), shared everything else."""
    out = dict(opts)
    out["phigate_node_id"] = node_id
    # Every worker serves the admin API and console on the same port (the kernel spreads
    # connections); any of them sees all holds through the shared store.
    out.setdefault("phigate_admin_reuse_port", "true")
    return out


def supervise(args: argparse.Namespace, opts: dict[str, str]) -> int:
    """Entry point from addons/runtime/launch.py for --workers N (N > 1)."""
    if not shutil.which("haproxy") and not Path("/usr/sbin/haproxy").exists():
        print("[phigate] --workers needs HAProxy: apt-get install haproxy (./run.sh setup installs it)",
              file=sys.stderr)
        return 2
    base = opts.get("phigate_node_id") or socket.gethostname()
    specs: list[tuple[str, int, list[str]]] = []
    for i in range(1, args.workers + 1):
        node = f"{base}-w{i}"
        port = free_port()
        specs.append((node, port, engine_argv(args, worker_options(opts, node), host="127.0.0.1", port=port)))
    state = Path(tempfile.mkdtemp(prefix="phigate-workers-"))
    sup = Supervisor(specs, args.host, args.port, tls=not args.plain_http, state_dir=state, env=engine_env())
    try:
        return sup.run()
    finally:
        shutil.rmtree(state, ignore_errors=True)
