"""Real servers for integration tests and the demo, all on loopback: the OpenID provider (npm
oidc-provider), a Chroma server (pip chromadb, its own venv) and the gateway (stock mitmdump with
addons/chain.py, or `python -m addons.runtime.launch`). Each is a context manager that starts a process,
waits until it answers, and stops it (and its log) on exit.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import functools
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("PHIGATE_HOME", ROOT / ".phigate"))
VENV_BIN = Path(sys.executable).parent
IDP_DIR = Path(os.environ.get("PHIGATE_IDP_DIR", STATE / "idp"))
CHROMA_BIN = Path(os.environ.get("PHIGATE_CHROMA_BIN", STATE / "chroma-venv" / "bin" / "chroma"))
CHROMA_PYTHON = Path(os.environ.get("PHIGATE_CHROMA_PYTHON", STATE / "chroma-venv" / "bin" / "python"))
IDP_SCRIPT = ROOT / "tests" / "support" / "idp" / "idp.mjs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None,
              cafile: str | None = None) -> None:
    """Wait until `url` answers with any HTTP status (or the process dies)."""
    import ssl

    tls = ssl.create_default_context(cafile=cafile) if cafile else None
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2, context=tls):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s ({last})")


def wait_ok(url: str, timeout: float, cafile: str | None = None) -> bool:
    """Wait until `url` answers 2xx (a readiness endpoint says ready); False when it never does."""
    import ssl

    tls = ssl.create_default_context(cafile=cafile) if cafile else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=tls):
                return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    return False


def haproxy_servers(sock: Path, backend: str = "workers") -> dict[str, dict[str, str]]:
    """HAProxy's `show stat` rows for one backend's servers, by server name."""
    from addons.runtime.workers import haproxy_command

    rows = csv.DictReader(io.StringIO(haproxy_command(sock, "show stat").lstrip("# ")))
    return {r["svname"]: r for r in rows if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")}


class Process:
    """A child process with its output in a log file, stopped on exit."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log_path = Path(tempfile.mkstemp(prefix=f"phigate-{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self.proc.pid})")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
            start_new_session=True,
        )
        log.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout)

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# ---------------------------------------------------------------- OpenID provider

def make_rsa_jwks(kids: Sequence[str]) -> dict[str, Any]:
    """A private JWKS (RS256 keys) for the IdP, so tests can also sign crafted tokens with it."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    def b64(n: int) -> str:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    keys = []
    for kid in kids:
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pn, pub = k.private_numbers(), k.public_key().public_numbers()
        keys.append({
            "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": b64(pub.n), "e": b64(pub.e), "d": b64(pn.d), "p": b64(pn.p), "q": b64(pn.q),
            "dp": b64(pn.dmp1), "dq": b64(pn.dmq1), "qi": b64(pn.iqmp),
        })
    return {"keys": keys}


class Idp:
    """The real OpenID provider (tests/support/idp/idp.mjs), reached by discovery like any IdP."""

    def __init__(self, jwks: dict[str, Any] | None = None, port: int | None = None,
                 clients: dict[str, Any] | None = None) -> None:
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="phigate-idp-"))
        self.jwks = jwks or make_rsa_jwks(["test-key-1"])
        self.clients = clients
        self.proc: Process | None = None
        self.script: Path | None = None

    @property
    def jwks_path(self) -> Path:
        return self.workdir / "jwks.json"

    def private_key_pem(self, kid: str | None = None) -> bytes:
        """The PEM of one of the IdP's signing keys (the first by default), to craft tokens."""
        import jwt

        key = next(k for k in self.jwks["keys"] if kid is None or k["kid"] == kid)
        from cryptography.hazmat.primitives import serialization

        private = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(key))
        return private.private_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def start(self) -> Idp:
        if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(f"oidc-provider is not installed in {IDP_DIR}: run ./run.sh setup")
        self.jwks_path.write_text(json.dumps(self.jwks))
        env = {"IDP_PORT": str(self.port), "IDP_JWKS": str(self.jwks_path),
               "NODE_PATH": str(IDP_DIR / "node_modules")}
        if self.clients is not None:
            (self.workdir / "clients.json").write_text(json.dumps(self.clients))
            env["IDP_CLIENTS"] = str(self.workdir / "clients.json")
        # ESM imports resolve from the script's folder, not NODE_PATH: run a copy beside node_modules,
        # named for this provider (checkouts sharing one .phigate/idp must not run each other's script).
        script = IDP_DIR / f"idp-{os.getpid()}-{self.port}.mjs"
        shutil.copyfile(IDP_SCRIPT, script)
        self.script = script
        self.proc = Process("idp", ["node", str(script)], env=env, cwd=IDP_DIR)
        self.proc.start()
        wait_http(f"{self.issuer}/.well-known/openid-configuration", 30, self.proc.proc)
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
        if self.script is not None:
            self.script.unlink(missing_ok=True)

    def restart(self, jwks: dict[str, Any] | None = None) -> None:
        """Restart (e.g. with rotated keys) on the same port and issuer."""
        self.stop()
        if jwks is not None:
            self.jwks = jwks
        self.start()

    def token(self, client_id: str) -> str:
        data = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "vectors"}).encode()
        req = urllib.request.Request(f"{self.issuer}/token", data=data)
        cred = base64.b64encode(f"{client_id}:{client_id}-secret".encode()).decode()
        req.add_header("Authorization", f"Basic {cred}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return str(json.load(resp)["access_token"])

    def __enter__(self) -> Idp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- Chroma

class Chroma:
    """A real Chroma server (pip chromadb in its own venv) on loopback."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = Path(tempfile.mkdtemp(prefix="phigate-chroma-"))
        self.proc = Process("chroma", [str(CHROMA_BIN), "run", "--path", str(self.data),
                                       "--host", "127.0.0.1", "--port", str(self.port)])

    def start(self) -> Chroma:
        if not CHROMA_BIN.exists():
            raise RuntimeError(f"the Chroma server is not installed at {CHROMA_BIN}: run ./run.sh setup")
        self.proc.start()
        wait_http(f"{self.url}/api/v2/heartbeat", 60, self.proc.proc)
        return self

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self) -> Chroma:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_chroma_client(script: str, env: Mapping[str, str] | None = None, timeout: float = 120) -> Any:
    """Run a Python script in the Chroma venv (where the real chromadb client lives).

    The script prints one JSON document as its last stdout line; that document is returned.
    chromadb's pins clash with mitmproxy's, so the client cannot be imported in the test process.
    """
    proc = subprocess.run(
        [str(CHROMA_PYTHON), "-c", script], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False", **(env or {})},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"chromadb client failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


# ---------------------------------------------------------------- gateway

# The runner integration tests use by default: "mitmdump" (stock `mitmdump -s addons/chain.py`) or
# "lean" (addons/runtime/engine.py, the lean master). CI runs the suite on one and a subset on the other.
RUNNERS = ("mitmdump", "lean")
DEFAULT_RUNNER = os.environ.get("PHIGATE_TEST_RUNNER", "mitmdump")
if DEFAULT_RUNNER not in RUNNERS:
    raise RuntimeError(f"PHIGATE_TEST_RUNNER={DEFAULT_RUNNER!r}: expected one of {', '.join(RUNNERS)}")


@functools.cache
def lean_options() -> frozenset[str]:
    """Every option name the lean engine declares (its built-ins plus the chain's addons)."""
    out = subprocess.run([str(VENV_BIN / "python"), "-m", "addons.runtime.engine", "--options"], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return frozenset(out.split())


class Gateway:
    """The gateway as users run it: stock `mitmdump -s addons/chain.py` in reverse mode (default),
    the lean engine (`runner="lean"`, `python -m addons.runtime.engine`), or the runner behind
    `./run.sh gateway` (`runner="launch"`)."""

    def __init__(self, upstream: str, options: Mapping[str, str] | None = None,
                 env: Mapping[str, str] | None = None, port: int | None = None,
                 runner: str = "mitmdump", args: Sequence[str] = (), tls_cert: str | None = None,
                 tls_ca: str | None = None, script: Path | None = None) -> None:
        self.port = port or free_port()
        # TLS (launch runner only): the listener uses `tls_cert`; health checks trust `tls_ca`.
        self.tls_ca = tls_ca
        self.url = f"{'https' if tls_cert else 'http'}://127.0.0.1:{self.port}"
        self.upstream = upstream
        self.options = dict(options or {})
        self.workdir = Path(tempfile.mkdtemp(prefix="phigate-gw-"))
        if runner == "mitmdump":
            argv = [str(VENV_BIN / "mitmdump"), "--mode", f"reverse:{upstream}@127.0.0.1:{self.port}",
                    "-s", str(script or ROOT / "addons" / "chain.py"), "--set", f"confdir={self.workdir / 'conf'}",
                    "--set", "flow_detail=0", *args]
            for k, v in self.options.items():
                argv += ["--set", f"{k}={v}"]
        elif runner == "lean":
            # Same flags as the mitmdump runner minus flow_detail: the lean engine has no flow dumper.
            argv = [str(VENV_BIN / "python"), "-m", "addons.runtime.engine", "--mode",
                    f"reverse:{upstream}@127.0.0.1:{self.port}", "--set", f"confdir={self.workdir / 'conf'}",
                    *args]
            for k, v in self.options.items():
                argv += ["--set", f"{k}={v}"]
        else:
            argv = [str(VENV_BIN / "python"), "-m", "addons.runtime.launch", "--upstream", upstream,
                    "--host", "127.0.0.1", "--port", str(self.port),
                    *(["--cert", tls_cert] if tls_cert else ["--plain-http"]), *args]
            flags = {"phigate_rules": "--rules", "phigate_profile": "--profile", "phigate_issuer": "--issuer",
                     "phigate_audience": "--audience",
                     "phigate_backend_credential_env": "--backend-credential-env",
                     "phigate_backend_credential_file": "--backend-credential-file"}
            for k, v in self.options.items():
                argv += [flags[k], v] if k in flags else ["--set", f"{k}={v}"]
        self.proc = Process("gateway", argv, env=env, cwd=ROOT)

    def start(self, timeout: float = 30.0, ready_timeout: float = 5.0) -> Gateway:
        self.proc.start()
        try:
            wait_http(f"{self.url}/-/healthz", timeout, self.proc.proc, cafile=self.tls_ca)
        except Exception:
            self.proc.stop()
            raise RuntimeError(f"gateway did not start:\n{self.proc.log()[-4000:]}") from None
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float) -> bool:
        """Wait until /-/readyz says ready (the audit ledger is open, keys are fetched, ...).

        Not an error when it stays unready: some tests start gateways that must not be ready
        (unreachable issuer, broken audit store) and check what clients get then."""
        return wait_ok(f"{self.url}/-/readyz", timeout, cafile=self.tls_ca)

    def stop(self) -> None:
        self.proc.stop()

    def __enter__(self) -> Gateway:
        # `with gw.start():` must not start a second process (and orphan the first).
        if self.proc.proc is not None and self.proc.proc.poll() is None:
            return self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http_call(method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None,
              timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP call that returns (status, headers, body) for any status."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None and not any(k.lower() == "content-type" for k in (headers or {})):
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


@contextlib.contextmanager
def started(*servers: Any) -> Iterator[None]:
    """Start several servers, stopping all of them (in reverse) on exit."""
    with contextlib.ExitStack() as stack:
        for s in servers:
            stack.enter_context(s)
        yield


class RecordingUpstream:
    """A loopback HTTP server that records every request it receives and answers with JSON.

    Used where a test must show that nothing reached the backend (refused flows) or what exactly
    was forwarded (headers, canonical path, body). `responses` maps "METHOD /path" to
    (status, json body); anything else gets 200 {}.
    """

    def __init__(self, responses: Mapping[str, tuple[int, Any]] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        import http.server
        import threading

        self.requests: list[dict[str, Any]] = []
        self.responses = dict(responses or {})
        # extra response headers on every answer (e.g. a backend's Alt-Svc); may be set after start
        self.headers = dict(headers or {})
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append({"method": self.command, "path": self.path,
                                       "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "body": body})
                status, payload = outer.responses.get(f"{self.command} {self.path.split('?')[0]}", (200, {}))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in outer.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def chroma_steps(url: str, token: str | None, steps: list[dict[str, Any]], header: str = "authorization",
                 env: Mapping[str, str] | None = None, timeout: float = 120) -> list[dict[str, Any]]:
    """Run steps with the real chromadb client (tests/support/chroma_client.py) in the Chroma venv."""
    argv = [str(CHROMA_PYTHON), str(ROOT / "tests" / "support" / "chroma_client.py"), "--url", url,
            "--steps", json.dumps(steps), "--header", header]
    if token:
        argv += ["--token", token]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "ANONYMIZED_TELEMETRY": "False", **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"chromadb client failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result: list[dict[str, Any]] = json.loads(proc.stdout.splitlines()[-1])
    return result
