"""Drive the real, unmodified chromadb client through a list of steps; print the results as JSON.

Runs in the Chroma venv (chromadb's pins clash with mitmproxy's), e.g.

    .phigate/chroma-venv/bin/python tests/support/chroma_client.py --url http://127.0.0.1:8443 \
        --token "$TOKEN" --steps '[{"op": "heartbeat"}, {"op": "query", "collection": "notes", ...}]'

Each step is {"op": ..., ...}; each result is {"op", "ok", "result"} or {"op", "ok": false,
"error": {"type", "message"}}. Results are plain JSON (numpy arrays become lists) so a test can
compare a session through the gateway with the same session direct.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any


def plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def run(url: str, token: str | None, steps: list[dict[str, Any]], header: str) -> list[dict[str, Any]]:
    import chromadb

    parsed = urllib.parse.urlparse(url)
    headers = {}
    if token:
        headers = {"Authorization": f"Bearer {token}"} if header == "authorization" else {header: token}
    results: list[dict[str, Any]] = []
    try:
        client = chromadb.HttpClient(host=parsed.hostname, port=parsed.port, ssl=parsed.scheme == "https",
                                     headers=headers)
    except Exception as exc:
        return [{"op": "connect", "ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}]
    for step in steps:
        op = step["op"]
        args = {k: v for k, v in step.items() if k not in ("op", "collection")}
        try:
            if op == "heartbeat":
                result: Any = client.heartbeat()
                result = "ok" if result else None
            elif op == "create":
                result = client.create_collection(step["collection"], **args).name
            elif op == "get_or_create":
                result = client.get_or_create_collection(step["collection"], **args).name
            elif op == "list":
                result = sorted(c.name for c in client.list_collections())
            elif op == "drop":
                client.delete_collection(step["collection"])
                result = None
            else:
                col = client.get_collection(step["collection"])
                if op == "count":
                    result = col.count()
                elif op == "rename":
                    col.modify(name=args["name"])
                    result = None
                else:
                    result = getattr(col, op)(**args)  # add, query, get, update, upsert, delete, peek
            results.append({"op": op, "ok": True, "result": plain(result)})
        except Exception as exc:
            results.append({"op": op, "ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}})
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--token", default=None)
    p.add_argument("--header", default="authorization", help="authorization | x-chroma-token | ...")
    p.add_argument("--steps", required=True, help="JSON list of steps")
    args = p.parse_args()
    print(json.dumps(run(args.url, args.token, json.loads(args.steps), args.header)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
