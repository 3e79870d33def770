"""The command line of one gateway process: the chosen engine (lean or stock mitmdump), its listener,
TLS certificate and `--set` options, and the environment that makes this repository importable."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from addons.config import settings

ROOT = Path(__file__).resolve().parents[2]
# Settings passed on to the addons as mitmproxy options (audit trail, keys, node id, log format).
OPTION_SETTINGS = tuple(s for s in settings.SETTINGS if s.option)
# (flag, option, help) of the files among them: checked to exist before start.
FILE_FLAGS = tuple((s.flag, s.option or "", s.help) for s in OPTION_SETTINGS if s.key.endswith("_file"))


def add_option_settings(args: argparse.Namespace, opts: dict[str, str]) -> None:
    """The settings that are addon options (audit dir, keys, node id, log format), where set; a
    `--set` for the same option wins."""
    sets = {item.split("=", 1)[0] for item in getattr(args, "sets", [])}
    for s in OPTION_SETTINGS:
        value = getattr(args, s.key, None)
        if value not in (None, "") and s.option and s.option not in sets:
            opts[s.option] = str(value)


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
    add_option_settings(args, opts)
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
