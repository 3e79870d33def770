"""HIPAA evidence packets from the phigate audit ledger.

`python -m reports.cli` (`./run.sh report`) reads the ledger in a separate process, never on the
gateway's event loop: rendering a PDF is seconds of CPU that would stall every flow.
"""

from __future__ import annotations

import importlib.metadata


def software_version() -> str:
    try:
        return importlib.metadata.version("phigate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
