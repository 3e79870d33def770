"""The command line of one gateway process: the chosen engine (lean or stock mitmdump), its listener,
TLS certificate and `--set` options, and the environment that makes this repository importable."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# (flag, option, help) for the settings every real deployment gives, so they need no `--set`.
FILE_FLAGS = (
    ("--audit-dir", "phigate_audit_dir", "folder of the tamper-evident audit ledger"),
    ("--audit-key-file", "phigate_audit_key_file", "Ed25519 key that signs audit checkpoints (kept away "
                                                   "from the ledger)"),
    ("--witness", "phigate_witness", "file or folder outside the audit folder that receives every checkpoint"),
    ("--recording-key-file", "phigate_recording_key_file", "AES-GCM key(s) for encrypted session recordings"),
    ("--token-key-file", "phigate_token_key_file", "keys for consistent PHI tokens (masking)"),
    ("--node-id", "phigate_node_id", "this gateway's node id in the audit ledger"),
)


def mitmdump_argv(args: argparse.Namespace, opts: dict[str, str]) -> list[str]:
    argv = [str(Path(sys.executable).parent / "mitmdump"),
            "--mode", f"reverse:{args.upstream}@{args.host}:{args.port}",
            "-s", str(ROOT / "addons" / "chain.py")]
    if not args.plain_http:
        argv += ["--certs", f"*={args.cert}"]
    for k, v in opts.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def engine_argv(args: argparse.Namespace, opts: dict[str, str], host: str | None = None,
                port: int | None = None) -> list[str]:
    """The command line of one gateway process (the chosen engine), listening on host:port."""
    host = args.host if host is None else host
    port = args.port if port is None else port
    for _, option, _ in FILE_FLAGS:
        value = getattr(args, option.removeprefix("phigate_"), "")
        if value:
            opts[option] = value
    if getattr(args, "engine", "mitmdump") == "mitmdump":
        argv = [str(Path(sys.executable).parent / "mitmdump"), "-s", str(ROOT / "addons" / "chain.py")]
    else:
        argv = [sys.executable, "-m", "addons.runtime.engine"]
    argv += ["--mode", f"reverse:{args.upstream}@{host}:{port}"]
    if not args.plain_http:
        argv += ["--certs", f"*={args.cert}"]
    for k, v in opts.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def engine_env() -> dict[str, str]:
    """This environment, with the repo importable for `python -m addons.runtime.engine` from any folder."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}
