"""A real Milvus standalone server (pip `milvus==2.3.5`, its own venv) on loopback, for tests and the demo.

`milvus-server` (the pip package's launcher) writes a config from its template, resolves free ports
and runs the bundled `milvus run standalone` with embedded etcd and local storage. Measured here:
about 7 s from start to a REST answer, ~260 MB resident.

Loopback: Milvus 2.3's Go gRPC/HTTP servers listen on every interface (`:port`) and 2.3 has no
listen-address option (measured with `ss -ltnp`: etcd on 127.0.0.1, ten other ports on `*`). So the
server runs in its own network namespace (`unshare -n`), whose only interface is its own loopback,
and its REST port alone is bridged to host 127.0.0.1 through a Unix socket (tests/support/netns_relay.py).
Where namespaces cannot be made (`unshare -n` refused), it runs directly with every component's
advertised address (`*.ip`) set to 127.0.0.1, and `.isolated` is False.

Authorization is on (`--authorization-enabled true`): the REST API then requires
`Authorization: Bearer root:Milvus`, so a test can see the gateway inject the backend credential.

    python -m tests.support.milvus_server           # run one by hand; prints its URL
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.servers import ROOT, STATE, Process, free_port

MILVUS_BIN = Path(os.environ.get("PHIGATE_MILVUS_BIN", STATE / "milvus-venv" / "bin" / "milvus-server"))
ROOT_CREDENTIAL = "root:Milvus"  # Milvus's documented default root user; local test server only
COMPONENTS_WITH_IP = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexCoord", "indexNode", "dataCoord",
                      "dataNode")


UNSHARE = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--net", "--map-root-user"]


def namespaces_work() -> bool:
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Milvus:
    """A real Milvus 2.3 standalone server with REST v1 on `.url`."""

    def __init__(self, port: int | None = None, auth: bool = True, isolate: bool = True) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = Path(tempfile.mkdtemp(prefix="phigate-milvus-"))
        self.auth = auth
        self.isolated = isolate and namespaces_work()
        # In its own namespace Milvus has every port to itself: the default REST port is free.
        inner_port = 19530 if self.isolated else self.port
        argv = [str(MILVUS_BIN), "--data", str(self.data), "--proxy-port", str(inner_port),
                "--authorization-enabled", "true" if auth else "false"]
        for component in COMPONENTS_WITH_IP:
            argv += ["--extra-config", f"{component}.ip=127.0.0.1"]
        self.relay: Process | None = None
        if self.isolated:
            sock = str(self.data / "rest.sock")
            relay = [sys.executable, "-m", "tests.support.netns_relay"]
            argv = [*UNSHARE, *relay, "inner", "--unix", sock, "--port", str(inner_port), "--", *argv]
            self.relay = Process("milvus-relay", [*relay, "outer", "--unix", sock, "--port", str(self.port)],
                                 cwd=ROOT)
        self.proc = Process("milvus", argv, cwd=ROOT)
        self.started_in: float | None = None

    def call(self, name: str, body: dict[str, Any] | None = None, method: str = "POST",
             credential: str | None = ROOT_CREDENTIAL) -> Any:
        """A direct REST v1 call (bypassing the gateway): set-up and checks in tests."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/v1/vector/{name}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if credential:
            req.add_header("Authorization", f"Bearer {credential}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)

    def start(self, timeout: float = 120.0) -> Milvus:
        if not MILVUS_BIN.exists():
            raise RuntimeError(f"{MILVUS_BIN} is missing: run ./run.sh setup (ensure_milvus)")
        t0 = time.monotonic()
        self.proc.start()
        if self.relay is not None:
            self.relay.start()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.proc is not None and self.proc.proc.poll() is not None:
                raise RuntimeError(f"milvus exited:\n{self.proc.log()[-4000:]}")
            try:
                answer = self.call("collections", method="GET")
                if answer.get("code") == 200:
                    self.started_in = time.monotonic() - t0
                    return self
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"milvus did not answer within {timeout}s:\n{self.proc.log()[-4000:]}")

    def stop(self) -> None:
        # Milvus drains for a long time on SIGTERM, and the launcher exits at once leaving it running:
        # kill the whole process group (launcher + milvus); the test data is thrown away anyway.
        self.proc.kill9()
        if self.relay is not None:
            self.relay.stop()
        # Each run unpacks Milvus's binaries into its data folder (~500 MB): never leave it behind.
        shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self) -> Milvus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - manual use
    with Milvus() as server:
        where = "own network namespace" if server.isolated else "host network"
        print(f"milvus REST v1 on {server.url} ({where}, started in {server.started_in:.1f}s); Ctrl+C to stop",
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
