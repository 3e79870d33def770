"""HIPAA evidence packets from the phigate audit ledger.

`python -m reports.cli` (`./run.sh report`) reads the ledger in a separate process, never on the
gateway's event loop: rendering a PDF is seconds of CPU that would stall every flow.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def software_version() -> str:
    """The package version, and the git commit when run from a checkout (what an auditor can rebuild)."""
    try:
        version = importlib.metadata.version("phigate")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        try:
            done = subprocess.run([git, "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],  # noqa: S603 - fixed argv
                                  capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return version
        if done.returncode == 0 and done.stdout.strip():
            version += f" (git {done.stdout.strip()})"
    return version
