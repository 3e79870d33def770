"""Ask the backend for the name of a collection id the gateway has not learned (profile `resolve`).

Classify learns id -> name pairs from the backend's answers, but that knowledge is per process: with
several workers, a client's create may go through one and its query through another, and a restart
forgets everything. Rather than deny such requests, the gateway asks the backend once, with its own
credential, over the same upstream the flow goes to. Only the backend's answer is trusted, and only
if it names the very id asked about.

Threats handled: a caller sending many random ids cannot turn the gateway into a request amplifier
(one lookup per id at a time, a short negative cache, a cap on lookups in flight, a small answer
size); a lookup that fails or times out yields no name, so the request is denied (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Mapping
from urllib.parse import quote

import orjson

from addons.config.profile_model import CollectionLookup
from addons.request.upstream_call import Upstream, call

log = logging.getLogger("phigate")

TIMEOUT_S = 3.0
NEGATIVE_TTL_S = 5.0
MAX_IN_FLIGHT = 32
MAX_ANSWER_BYTES = 1 << 20
MAX_MISSES = 10_000


def lookup_path(spec: CollectionLookup, variables: Mapping[str, str]) -> str | None:
    """The lookup path with the request's path variables (re-encoded); None if one is missing."""
    path = spec.template
    for part in spec.template.split("{")[1:]:
        name = part.split("}", 1)[0].split(":", 1)[0]
        if name not in variables:
            return None
        path = path.replace("{" + part.split("}", 1)[0] + "}", quote(variables[name], safe=""), 1)
    return path


class NameLookup:
    def __init__(self, timeout_s: float = TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._in_flight: dict[str, asyncio.Task[str | None]] = {}
        self._misses: OrderedDict[str, float] = OrderedDict()

    async def name_of(self, spec: CollectionLookup, collection_id: str, variables: Mapping[str, str],
                      upstream: Upstream, headers: Mapping[str, str]) -> str | None:
        path = lookup_path(spec, variables)
        if path is None:
            return None
        # Keyed by the whole path: the same id under another tenant/database is another question.
        until = self._misses.get(path)
        if until is not None and until > time.monotonic():
            return None
        task = self._in_flight.get(path)
        if task is None:
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                return None  # a flood of unknown ids: deny rather than queue lookups
            task = asyncio.ensure_future(self._fetch(spec, collection_id, path, upstream, headers))
            self._in_flight[path] = task
            task.add_done_callback(lambda _t: self._in_flight.pop(path, None))
        name = await asyncio.shield(task)
        if name is None:
            self._misses[path] = time.monotonic() + NEGATIVE_TTL_S
            while len(self._misses) > MAX_MISSES:
                self._misses.popitem(last=False)
        return name

    async def _fetch(self, spec: CollectionLookup, collection_id: str, path: str,
                     upstream: Upstream, headers: Mapping[str, str]) -> str | None:
        try:
            status, body = await asyncio.wait_for(self._get(upstream, path, headers), self.timeout_s)
        except (OSError, TimeoutError, ValueError, ssl.SSLError) as exc:
            log.warning("phigate: collection lookup failed (%s)", type(exc).__name__)
            return None
        if status != 200:
            return None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(doc, dict) or doc.get(spec.id_key) != collection_id:
            return None
        name = doc.get(spec.name_key)
        return name if isinstance(name, str) and name else None

    async def _get(self, upstream: Upstream, path: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        answer = await call(upstream, "GET", path, {"Accept": "application/json", **headers},
                            max_bytes=MAX_ANSWER_BYTES)
        return answer.status, answer.body
