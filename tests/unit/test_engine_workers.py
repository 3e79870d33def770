"""The worker supervisor (addons/runtime/workers.py): HAProxy configuration, per-worker options, restarts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from addons.runtime import launch, workers
from addons.runtime.workers import Backend, Supervisor, haproxy_config, worker_options
from tests.support.servers import free_port, haproxy_servers

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
needs_haproxy = pytest.mark.skipif(not Path(HAPROXY).exists(), reason="HAProxy is not installed (./run.sh setup)")


@needs_haproxy
@pytest.mark.parametrize("tls", [True, False])
def test_haproxy_accepts_the_generated_config(tmp_path: Path, tls: bool) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config("127.0.0.1", 8443, [Backend("w1", "127.0.0.1", 9001),
                                                      Backend("w2", "127.0.0.1", 9002)],
                                  tls=tls, stats_socket=tmp_path / "s.sock"))
    proc = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_config_passes_tls_through_and_checks_readiness() -> None:
    text = haproxy_config("0.0.0.0", 8443, [Backend("w1", "127.0.0.1", 9001)], tls=True)
    assert "mode tcp" in text and "mode http" not in text  # HAProxy never decrypts client traffic
    assert "http-check send meth GET uri /-/readyz" in text
    assert "server w1 127.0.0.1:9001 check inter 1000 fall 2 rise 1 check-ssl verify none" in text
    assert "bind 0.0.0.0:8443" in text
    plain = haproxy_config("::1", 8080, [Backend("w1", "127.0.0.1", 9001)], tls=False)
    assert "check-ssl" not in plain and "bind [::1]:8080" in plain
    with pytest.raises(ValueError, match="no workers"):
        haproxy_config("127.0.0.1", 1, [], tls=False)


def test_each_worker_has_its_own_node_id_and_shares_the_admin_port() -> None:
    opts = {"phigate_node_id": "gw", "phigate_admin_port": "8444", "phigate_holds_db": "/var/lib/holds.db"}
    w1, w2 = worker_options(opts, "gw-w1"), worker_options(opts, "gw-w2")
    assert (w1["phigate_node_id"], w2["phigate_node_id"]) == ("gw-w1", "gw-w2")
    assert w1["phigate_holds_db"] == w2["phigate_holds_db"] == "/var/lib/holds.db"
    assert w1["phigate_admin_reuse_port"] == "true"
    assert opts["phigate_node_id"] == "gw"  # the caller's options are not changed


def test_launcher_builds_lean_and_mitmdump_worker_command_lines(tmp_path: Path) -> None:
    args = launch.parse(["--upstream", "http://127.0.0.1:8000", "--issuer", "http://127.0.0.1:9", "--plain-http",
                         "--workers", "2", "--no-backend-credential"])
    assert args.engine == "lean" and args.workers == 2
    opts = launch.phigate_options(args)
    assert "flow_detail" not in opts  # the lean engine has no flow dumper; it would reject the option
    argv = launch.engine_argv(args, opts, host="127.0.0.1", port=9001)
    assert argv[1:3] == ["-m", "addons.runtime.engine"]
    assert argv[argv.index("--mode") + 1] == "reverse:http://127.0.0.1:8000@127.0.0.1:9001"
    args = launch.parse(["--upstream", "http://127.0.0.1:8000", "--issuer", "http://127.0.0.1:9", "--plain-http",
                         "--engine", "mitmdump", "--no-backend-credential"])
    opts = launch.phigate_options(args)
    assert opts["flow_detail"] == "0"
    argv = launch.engine_argv(args, opts)
    assert argv[0].endswith("mitmdump") and "-s" in argv


def test_zero_workers_is_refused() -> None:
    args = launch.parse(["--upstream", "http://127.0.0.1:8000", "--issuer", "http://127.0.0.1:9", "--plain-http",
                         "--workers", "0", "--no-backend-credential"])
    with pytest.raises(launch.LaunchError, match="--workers 0: expected 1 or more"):
        launch.phigate_options(args)


def test_a_dead_worker_is_restarted_with_backoff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Workers here are short-lived stand-ins: the supervisor's bookkeeping, not HAProxy, is tested.
    quick = [sys.executable, "-c", "pass"]
    sup = Supervisor([("n-w1", 1, quick), ("n-w2", 2, [sys.executable, "-c", "import time; time.sleep(30)"])],
                     "127.0.0.1", 1, tls=False, state_dir=tmp_path)
    try:
        now = time.monotonic()
        sup.reap_and_restart(now)  # first start of both
        w1, w2 = sup.workers
        assert w1.proc is not None and w2.proc is not None
        w1.proc.wait(10)
        sup.reap_and_restart(now + 1)
        assert w1.proc is None and w1.restarts == 1 and w1.next_start == pytest.approx(now + 1 + 0.5)
        sup.reap_and_restart(now + 1.2)
        assert w1.proc is None  # still backing off
        sup.reap_and_restart(now + 1.6)
        assert w1.proc is not None  # restarted
        w1.proc.wait(10)
        sup.reap_and_restart(now + 2)
        assert w1.backoff == 2.0  # doubling: 0.5, 1, 2, ...
        assert w2.proc is not None and w2.proc.poll() is None and w2.restarts == 0  # the other keeps running
    finally:
        sup.shutdown()
    assert all(w.proc is None or w.proc.poll() is not None for w in sup.workers)
    assert "w1 (node n-w1" in capsys.readouterr().err


# A stand-in worker: answers HAProxy's readiness check with 503 for its first READY_AFTER seconds
# (a real worker listens before its signing keys are fetched), then 200.
STAND_IN = """
import http.server, sys, time
port, ready_at = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if time.monotonic() >= ready_at else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _status(sup: Supervisor, name: str) -> str:
    return haproxy_servers(sup.stats_socket)[name]["status"]


def _wait_status(sup: Supervisor, name: str, prefix: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _status(sup, name).startswith(prefix):
        assert time.monotonic() < deadline, f"{name} not {prefix} within {timeout}s: {_status(sup, name)}"
        time.sleep(0.05)


@needs_haproxy
def test_a_dead_worker_is_marked_down_at_once_and_back_only_when_its_replacement_is_ready(
        tmp_path: Path) -> None:
    port = free_port()
    sup = Supervisor([("n-w1", port, [sys.executable, "-c", STAND_IN, str(port), "0"])],
                     "127.0.0.1", free_port(), tls=False, state_dir=tmp_path)
    try:
        w1 = sup.workers[0]
        sup.start_worker(w1)
        sup.wait_listening(10)
        sup.start_haproxy()
        deadline = time.monotonic() + 10
        while not sup.stats_socket.exists():
            assert time.monotonic() < deadline, "HAProxy did not open its stats socket"
            time.sleep(0.05)
        _wait_status(sup, "w1", "UP", 10)
        # The replacement will listen at once but answer "not ready" for its first 2 seconds.
        w1.argv = [sys.executable, "-c", STAND_IN, str(port), "2"]
        assert w1.proc is not None
        w1.proc.kill()
        w1.proc.wait(10)
        sup.reap_and_restart(time.monotonic())
        # Marked DOWN by the supervisor, not by its checks: HAProxy needs two failed checks to do
        # that itself, and at this moment it has counted fewer (read in the same stats line).
        row = haproxy_servers(sup.stats_socket)["w1"]
        assert row["status"].startswith("DOWN"), row["status"]
        assert int(row["chkfail"] or 0) < 2, row
        deadline = time.monotonic() + 10
        while w1.proc is None:  # the restart back-off
            sup.reap_and_restart(time.monotonic())
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ready_at = time.monotonic() + 2
        # Listening but not ready: HAProxy must not take it back (its checks get 503).
        while time.monotonic() < ready_at - 0.2:
            assert not _status(sup, "w1").startswith("UP"), "HAProxy took back a worker that is not ready"
            time.sleep(0.05)
        _wait_status(sup, "w1", "UP", 5)
    finally:
        sup.shutdown()


def test_an_unreachable_admin_socket_is_reported_not_fatal(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # HAProxy "running" (a stand-in process) but no admin socket: the supervisor says so and carries
    # on (the checks still take the worker out, later), rather than dying and taking every worker down.
    sup = Supervisor([("n-w1", 1, [sys.executable, "-c", "pass"])], "127.0.0.1", 1, tls=False, state_dir=tmp_path)
    sup.haproxy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sup.mark_down(sup.workers[0])
    finally:
        sup.haproxy.kill()
        sup.haproxy.wait(10)
    assert f"could not mark w1 DOWN through {sup.stats_socket} (FileNotFoundError" in capsys.readouterr().err


def test_supervise_needs_haproxy(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(workers.shutil, "which", lambda name: None)
    monkeypatch.setattr(workers, "Path", lambda p: Path("/nonexistent/haproxy"))
    args = launch.parse(["--upstream", "http://127.0.0.1:8000", "--issuer", "http://127.0.0.1:9", "--plain-http",
                         "--workers", "2", "--no-backend-credential"])
    assert workers.supervise(args, {}) == 2
    assert "apt-get install haproxy" in capsys.readouterr().err
