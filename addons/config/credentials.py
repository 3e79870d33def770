"""The backend's own credential, read from an environment variable or a file named by the options.
Callers never hold it; the Forward addon injects it."""

from __future__ import annotations

import os
from pathlib import Path


def read_credential(env_name: str, file_name: str) -> str | None:
    """The backend credential from the env var or the file; None when neither yields one."""
    if env_name:
        value = os.environ.get(env_name, "").strip()
        if value:
            return value
    if file_name:
        try:
            value = Path(file_name).read_text().strip()
        except OSError:
            return None
        return value or None
    return None
