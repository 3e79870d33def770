"""`./run.sh replay SESSION`: a recorded session's exchanges in order, optionally re-sent to a target.

    ./run.sh replay SESSION_ID [--dir AUDIT_DIR] [--key-file FILE] [--to URL [--header 'K: V' ...]]

Prints each event (time, caller, operation, decision) with the request and response as delivered
(masked), decrypted with the recording key. `--to URL` re-sends each request to URL (forensic
reproduction); credentials were never recorded, so pass one with --header when the target needs it.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import orjson

from addons.ledger import layout, recording
from addons.ledger.read import LedgerReadError, open_ledger, read_error_text, warn_stderr

HOP_BY_HOP = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te",
                        "upgrade", "proxy-connection", "trailer"})


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run.sh replay", description="Print or re-send a recorded session.")
    p.add_argument("session", help="the session id (events.session_id)")
    p.add_argument("--dir", default=os.environ.get("PHIGATE_AUDIT_DIR", ""),
                   help="the ledger folder (phigate_audit_dir; env PHIGATE_AUDIT_DIR)")
    p.add_argument("--key-file", default=os.environ.get("PHIGATE_RECORDING_KEY_FILE", ""),
                   help="recording key file (KEY_ID:BASE64 per line; env PHIGATE_RECORDING_KEY_FILE, else "
                        "PHIGATE_RECORDING_KEY)")
    p.add_argument("--to", metavar="URL", help="re-send each request to this base URL")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="add a header to re-sent requests (e.g. a credential for the target), repeatable")
    p.add_argument("--json", action="store_true", help="print one JSON object per exchange")
    return p.parse_args(list(argv))


def session_events(audit_dir: Path, session: str) -> list[dict[str, Any]]:
    con = open_ledger(audit_dir, warn=warn_stderr)
    try:
        cur = con.execute(
            "SELECT node_id, seq, strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') AS ts, request_id, subject, client_id, "
            "operation, collection, method, path, status, decision, payload_sha256 FROM events "
            "WHERE session_id = ? ORDER BY ts, node_id, seq",
            [session],
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def recordings_for(audit_dir: Path, session: str) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for node in layout.list_nodes(audit_dir):
        rec_dir = layout.node_dir(audit_dir, node.node_id) / "recordings"
        for rec in recording.iter_records(rec_dir):
            if rec.get("session_id") == session:
                out[(node.node_id, int(rec["seq"]))] = rec
    return out


def resend(base: str, ex: dict[str, Any], extra: list[tuple[str, str]]) -> tuple[int, bytes]:
    req = ex["request"]
    body = base64.b64decode(req["body"]) if req.get("body") else None
    r = urllib.request.Request(base.rstrip("/") + req["url"], data=body, method=req["method"])  # noqa: S310
    for k, v in req.get("headers") or []:
        if k.lower() not in HOP_BY_HOP:
            r.add_header(k, v)
    for k, v in extra:
        r.add_header(k, v)
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:  # noqa: S310 - the auditor's chosen target
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def text(b64: str | None) -> str:
    if not b64:
        return ""
    raw = base64.b64decode(b64)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return f"<{len(raw)} bytes of binary>"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if not args.dir or not Path(args.dir).is_dir():
        print(f"error: {args.dir or '(none)'} is not a ledger folder: pass --dir AUDIT_DIR or set PHIGATE_AUDIT_DIR",
              file=sys.stderr)
        return 2
    audit_dir = Path(args.dir)
    try:
        keyring = recording.load_keys(args.key_file, "PHIGATE_RECORDING_KEY")
        extra = [(h.split(":", 1)[0].strip(), h.split(":", 1)[1].strip()) for h in args.header]
    except (recording.RecordingKeyError, IndexError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        events = session_events(audit_dir, args.session)
        recs = recordings_for(audit_dir, args.session) if events else {}
    except (LedgerReadError, duckdb.Error, recording.RecordingCorrupt) as exc:
        why = str(exc) if isinstance(exc, recording.RecordingCorrupt) else read_error_text(audit_dir, exc)
        print(f"error: {why}", file=sys.stderr)
        return 1
    if not events:
        print(f"error: no events for session {args.session!r} in {audit_dir}", file=sys.stderr)
        return 1
    failures = 0
    for n, ev in enumerate(events, 1):
        rec = recs.get((ev["node_id"], int(ev["seq"])))
        ex: dict[str, Any] | None = None
        why = "not recorded (no recording key) or purged after the retention period"
        if rec is not None:
            try:
                ex = orjson.loads(recording.open_line(keyring, rec))
            except recording.RecordingKeyError as exc:
                why, failures = str(exc), failures + 1
        replayed = resend(args.to, ex, extra) if (args.to and ex) else None
        if args.json:
            print(orjson.dumps({"n": n, "event": ev, "exchange": ex, "unavailable": None if ex else why,
                                "replayed_status": replayed[0] if replayed else None}).decode())
            continue
        print(f"#{n} {ev['ts']} {ev['node_id']}:{ev['seq']} {ev['subject'] or '-'} ({ev['client_id'] or '-'}) "
              f"{ev['method']} {ev['path']} -> {ev['status']} {ev['decision']} "
              f"[{' '.join(x for x in (ev['operation'] or '-', ev['collection']) if x)}]")
        if ex is None:
            print(f"   (exchange {why})")
            continue
        print(f"   > {ex['request']['method']} {ex['request']['url']}")
        if ex["request"].get("body"):
            print(f"   > {text(ex['request']['body'])}")
        if ex.get("response"):
            print(f"   < {ex['response']['status']} {text(ex['response']['body'])}")
        if replayed is not None:
            print(f"   replayed to {args.to}: {replayed[0]} {replayed[1][:2000].decode(errors='replace')}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
