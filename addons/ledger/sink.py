"""Non-flow records for the ledger: approvals decided in the admin API, grants, reviews, incidents.

In the gateway process, `record(kind, row)` queues the record on the running ledger (written with
the next group commit, thread-safe); `await record_durable(kind, row)` waits until it is durable.
A separate process (a CLI recording a review) uses `record_to(audit_dir, kind, row)`, which writes
through its own ledger node (`tool-HOSTNAME`), so it never contends with a gateway's writer.

Kinds and columns: see `schema.LEAF_TABLES` and the tables in `schema.MIGRATIONS`
(approval, auth_failure, rule_version, review, incident; `event` is the audit addon's).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from addons.ledger import canonical, keys, layout
from addons.ledger.writer import Ledger, LedgerError

_active: Ledger | None = None
_loop: asyncio.AbstractEventLoop | None = None
_intent_writer: Callable[[Any], Awaitable[int]] | None = None


class SinkUnavailable(RuntimeError):
    pass


def attach(ledger: Ledger | None, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Called by the audit addon: this process's running ledger (None when it stops)."""
    global _active, _loop
    _active, _loop = ledger, loop


def on_intent(writer: Callable[[Any], Awaitable[int]] | None) -> None:
    """Called by the audit addon: how this process records a flow's write-ahead intent."""
    global _intent_writer
    _intent_writer = writer


async def intent(flow: Any) -> int:
    """Record the write-ahead intent for a request about to be sent to the backend outside the
    chain's own forwarding (an approved answer re-fetched): durable on return, or raises
    SinkUnavailable/LedgerError, and then the request must not be sent."""
    if _intent_writer is None:
        raise SinkUnavailable("no audit ledger runs in this process: a request cannot be sent unrecorded")
    return await _intent_writer(flow)


def record(kind: str, row: Mapping[str, Any]) -> None:
    """Queue a record on this process's ledger. Raises SinkUnavailable/LedgerError/RecordError."""
    ledger, loop = _active, _loop
    if ledger is None:
        raise SinkUnavailable("no audit ledger runs in this process (the Audit addon is not loaded or "
                              "not started); from a separate process use sink.record_to(audit_dir, ...)")
    canonical.encode(kind, 0, {k: v for k, v in row.items()})  # validate now, in the caller's thread
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is not None and running is not loop:
        loop.call_soon_threadsafe(ledger.append_nowait, kind, dict(row))
    else:
        ledger.append_nowait(kind, row)


async def record_durable(kind: str, row: Mapping[str, Any]) -> int:
    """Append on this process's ledger (from the gateway's loop) and wait until durable; returns seq."""
    if _active is None:
        raise SinkUnavailable("no audit ledger runs in this process")
    return await _active.append(kind, row)


def record_to(
    audit_dir: str | Path, kind: str, row: Mapping[str, Any], *, key_file: str = "",
    key_env: str = "PHIGATE_AUDIT_KEY", witness: str | Path | None = None, node_id: str | None = None,
    wait_s: float = 30.0,
) -> int:
    """Write one record from a separate process (durable, and signed when a key is given)."""
    node = node_id or f"tool-{socket.gethostname()}"
    # Without a configured key, as the gateway does: a key that lives only in this process (its
    # public half is published), so the record is still covered by a signature.
    signing = keys.load_private(key_file, key_env) or Ed25519PrivateKey.generate()
    deadline = time.monotonic() + wait_s
    while True:
        where = layout.witness_location(str(witness)) if witness else None
        ledger = Ledger(Path(audit_dir), node, signing_key=signing, witness=where)
        try:
            ledger.open()
            break
        except LedgerError:
            # Another tool process holds this node for a moment: wait our turn.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        seq = ledger.append_now(kind, row)
        ledger.checkpoint_now()
    finally:
        ledger.close()
    return seq
