"""`./run.sh approvals`: list, approve, deny and grant on the admin API, with your own token.

    ./run.sh approvals list [--all]
    ./run.sh approvals show HOLD_ID
    ./run.sh approvals approve HOLD_ID --reason "verified export request #123"
    ./run.sh approvals deny HOLD_ID --reason "no ticket for this export"
    ./run.sh approvals grant --user agent-1 --operation export --collection notes --minutes 30 --reason "..."
    ./run.sh approvals grants [--all]
    ./run.sh approvals revoke GRANT_ID --reason "..."
    ./run.sh approvals decisions [--limit 20]

The token comes from --token or the PHIGATE_TOKEN env var (prefer the env var: command lines are
visible to other users of the machine); the API from --url or PHIGATE_ADMIN_URL.
`AdminClient` is also the helper the demo and tests use to act as an approver.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8444"


class AdminError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{detail} ({error}, HTTP {status})")
        self.status = status
        self.error = error
        self.detail = detail


class AdminClient:
    """A small client of the admin API (stdlib only, so the demo and tests can use it anywhere)."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 - operator URL
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            try:
                payload = json.loads(err.read() or b"{}")
            except ValueError:
                payload = {}
            raise AdminError(err.code, payload.get("error", "http_error"),
                             payload.get("detail", f"HTTP {err.code}")) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise AdminError(0, "unreachable",
                             f"cannot reach the admin API at {self.url} ({reason}); is the gateway running? "
                             "Set --url or PHIGATE_ADMIN_URL") from None

    def pending(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/api/holds?state=pending")["holds"])

    def holds(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/api/holds?state=all")["holds"])

    def hold(self, hold_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/api/holds/{hold_id}")["hold"])

    def approve(self, hold_id: str, reason: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/api/holds/{hold_id}/approve", {"justification": reason})["hold"])

    def deny(self, hold_id: str, reason: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/api/holds/{hold_id}/deny", {"justification": reason})["hold"])

    def grant(self, user: str, operation: str, collection: str, minutes: float, reason: str) -> dict[str, Any]:
        body = {"subject": user, "operation": operation, "collection": collection, "minutes": minutes,
                "justification": reason}
        return dict(self.call("POST", "/api/grants", body)["grant"])

    def grants(self, include_expired: bool = False) -> list[dict[str, Any]]:
        return list(self.call("GET", "/api/grants" + ("?all=1" if include_expired else ""))["grants"])

    def revoke(self, grant_id: str, reason: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/api/grants/{grant_id}/revoke", {"justification": reason})["grant"])

    def decisions(self, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/api/decisions?limit={limit}")["decisions"])

    def wait_for_pending(self, match: Callable[[dict[str, Any]], bool] = lambda h: True,
                         timeout: float = 30.0, interval: float = 0.1) -> dict[str, Any]:
        """The first pending hold `match` accepts, waiting for it to appear (raises TimeoutError)."""
        deadline = time.monotonic() + timeout
        while True:
            for hold in self.pending():
                if match(hold):
                    return hold
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no matching pending hold appeared within {timeout}s")
            time.sleep(interval)


def _left(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"


def _print_holds(holds: Sequence[dict[str, Any]]) -> None:
    if not holds:
        print("no holds")
        return
    print(f"{'HOLD':<20} {'STATE':<10} {'REQUESTER':<16} {'OPERATION':<10} {'COLLECTION':<20} "
          f"{'RULE':<22} {'APPROVALS':<9} LEFT")
    for h in holds:
        approvals = f"{len(h.get('approvals', []))}/{h.get('approvals_required')}"
        print(f"{h['hold_id']:<20} {h['state']:<10} {h['requester']:<16} {h.get('operation') or '-':<10} "
              f"{h.get('collection') or '-':<20} {h.get('rule_id') or '-':<22} {approvals:<9} "
              f"{_left(h.get('seconds_left', 0))}")


def _print_grants(grants: Sequence[dict[str, Any]]) -> None:
    if not grants:
        print("no grants")
        return
    print(f"{'GRANT':<16} {'USER':<16} {'OPERATION':<10} {'COLLECTION':<20} {'BY':<16} LEFT")
    for g in grants:
        print(f"{g['grant_id']:<16} {g['subject']:<16} {g['operation']:<10} {g['collection']:<20} "
              f"{g['granted_by']:<16} {_left(g.get('seconds_left', 0))}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.sh approvals",
                                description="Review held requests on the phigate admin API.")
    p.add_argument("--url", default=os.environ.get("PHIGATE_ADMIN_URL", DEFAULT_URL),
                   help=f"admin API base URL (env PHIGATE_ADMIN_URL, default {DEFAULT_URL})")
    p.add_argument("--token", default=None, help="your access token (default: env PHIGATE_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="pending holds (every gateway worker's)")
    ls.add_argument("--all", action="store_true", help="recent holds in every state")
    show = sub.add_parser("show", help="one hold, with its approvals")
    show.add_argument("hold_id")
    for name in ("approve", "deny"):
        d = sub.add_parser(name, help=f"{name} a pending hold (a justification is required)")
        d.add_argument("hold_id")
        d.add_argument("--reason", required=True, help="justification, recorded in the audit")
    g = sub.add_parser("grant", help="let a user run an operation on a collection for N minutes without a hold")
    g.add_argument("--user", required=True, help="the user's subject (sub claim)")
    g.add_argument("--operation", required=True, help="operation kind, e.g. export")
    g.add_argument("--collection", required=True, help="collection name")
    g.add_argument("--minutes", type=float, required=True, help="length of the window")
    g.add_argument("--reason", required=True, help="justification, recorded in the audit")
    gs = sub.add_parser("grants", help="active grants")
    gs.add_argument("--all", action="store_true", help="include expired and revoked grants")
    r = sub.add_parser("revoke", help="end a grant early")
    r.add_argument("grant_id")
    r.add_argument("--reason", required=True, help="justification, recorded in the audit")
    dec = sub.add_parser("decisions", help="recent outcomes: approvals, denials, timeouts, grants, break-glass")
    dec.add_argument("--limit", type=int, default=20)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    token = args.token or os.environ.get("PHIGATE_TOKEN", "")
    if not token:
        print("error: no access token: set PHIGATE_TOKEN (or pass --token) to your own OIDC access token",
              file=sys.stderr)
        return 2
    client = AdminClient(args.url, token)
    try:
        result: Any
        if args.command == "list":
            result = client.holds() if args.all else client.pending()
            show: Callable[[Any], None] = _print_holds
        elif args.command == "show":
            result, show = [client.hold(args.hold_id)], _print_holds
        elif args.command in ("approve", "deny"):
            act = client.approve if args.command == "approve" else client.deny
            result, show = [act(args.hold_id, args.reason)], _print_holds
        elif args.command == "grant":
            result = [client.grant(args.user, args.operation, args.collection, args.minutes, args.reason)]
            show = _print_grants
        elif args.command == "grants":
            result, show = client.grants(args.all), _print_grants
        elif args.command == "revoke":
            result, show = [client.revoke(args.grant_id, args.reason)], _print_grants
        else:
            result = client.decisions(args.limit)
            show = _print_decisions
    except AdminError as err:
        print(f"error: {err.detail} ({err.error})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        show(result)
    return 0


def _print_decisions(rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        print("no decisions")
        return
    print(f"{'HOLD/GRANT':<20} {'KIND':<12} {'OUTCOME':<12} {'REQUESTER':<16} {'APPROVERS':<24} JUSTIFICATION")
    for r in rows:
        print(f"{r.get('hold_id') or r.get('grant_id') or '-':<20} {r['kind']:<12} {r['outcome']:<12} "
              f"{r.get('requester') or '-':<16} {','.join(r.get('approvers') or []) or '-':<24} "
              f"{r.get('justification') or ''}")


if __name__ == "__main__":
    sys.exit(main())
