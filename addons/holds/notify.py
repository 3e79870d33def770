"""Tell reviewers when a hold starts, is decided or expires: a log line and webhook POSTs.

Delivery runs in a background task off a bounded queue: a slow or dead webhook endpoint never
delays a hold, a decision or any other request. Failures are retried with backoff, then logged.
Payloads carry the PHI-free hold summary only (the receiving chat or pager is outside the
gateway's access controls).
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

log = logging.getLogger("phigate")

BACKOFF_S = (0.5, 1.0, 2.0, 4.0)  # waits between attempts: 5 attempts over ~7.5 s
QUEUE_SIZE = 1000
POST_TIMEOUT_S = 5.0


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - configured http(s) URL
                                 headers={"content-type": "application/json", "user-agent": "phigate"})
    with urllib.request.urlopen(req, timeout=POST_TIMEOUT_S) as resp:  # noqa: S310 - configured URL
        return int(resp.status)


class Notifier:
    def __init__(self, urls: Sequence[str], console_url: str | None = None,
                 backoff: Sequence[float] = BACKOFF_S) -> None:
        self.urls = tuple(urls)
        self.console_url = console_url
        self.backoff = tuple(backoff)
        self._queue: asyncio.Queue[tuple[str, bytes]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        if self.urls and self._task is None:
            self._queue = asyncio.Queue(QUEUE_SIZE)
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def event(self, event: str, hold: Mapping[str, Any], **extra: Any) -> None:
        """Log and queue one event; returns at once whatever the webhooks do."""
        log.info(
            "phigate approvals: %s hold=%s rule=%s requester=%s operation=%s collection=%s state=%s%s",
            event, hold.get("hold_id") or hold.get("grant_id"), hold.get("rule_id"),
            hold.get("requester") or hold.get("subject"), hold.get("operation"), hold.get("collection"),
            hold.get("state"), "".join(f" {k}={v}" for k, v in extra.items()),
        )
        if self._queue is None:
            return
        payload = {"event": event, "at": time.time(), "hold": dict(hold), **extra}
        if self.console_url:
            payload["console"] = self.console_url
        body = orjson.dumps(payload)
        for url in self.urls:
            try:
                self._queue.put_nowait((url, body))
            except asyncio.QueueFull:
                self.failed += 1
                log.error("phigate approvals: webhook queue full; dropped %s notification for %s", event, url)

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            url, body = await self._queue.get()
            # One task per delivery so one dead endpoint's retries do not delay the others.
            asyncio.get_running_loop().create_task(self._deliver(url, body))

    async def _deliver(self, url: str, body: bytes) -> None:
        for attempt, wait in enumerate((*self.backoff, None), start=1):
            try:
                status = await asyncio.to_thread(_post, url, body)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                why = type(exc).__name__ if not isinstance(exc, urllib.error.HTTPError) else f"HTTP {exc.code}"
            else:
                if 200 <= status < 300:
                    self.delivered += 1
                    return
                why = f"HTTP {status}"
            if wait is None:
                self.failed += 1
                log.error("phigate approvals: webhook %s failed after %d attempts (%s)", url, attempt, why)
                return
            log.warning("phigate approvals: webhook %s attempt %d failed (%s); retrying", url, attempt, why)
            await asyncio.sleep(wait)
