"""The hold store: SQLite in WAL mode, shared by every gateway process on one host.

Why SQLite: holds must survive the process that created them long enough to be recorded (a restart
ends them as denied, never silently), and with several workers the console and CLI must see every
worker's holds and a decision must reach whichever worker holds the flow. WAL lets readers run beside
one writer; every state change is one `BEGIN IMMEDIATE` transaction whose `WHERE state = 'pending'`
makes the first decision win (approve vs. timeout vs. cancel), across processes.

Every method here is blocking: the Approvals addon calls them on one dedicated thread (see
`AsyncHoldStore`), never on the event loop, so a slow disk never stalls other traffic.

Every outcome (hold decided, timed out, cancelled, grant made or used, break-glass) is also written
to `decisions`, the approvals record, in the same transaction as the state change: it is what the
console lists and what is handed to the audit ledger.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from addons.holds.model import Actor, DecisionError, Grant, Hold, HoldState, NewHold

P = ParamSpec("P")
R = TypeVar("R")

# Named, ordered migrations; `PRAGMA user_version` says how many have run. Never edit one that
# shipped: add the next.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("create holds, approvals, grants, decisions, instances", """
        CREATE TABLE holds (
            hold_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            node_id TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            request_id TEXT NOT NULL,
            requester TEXT NOT NULL,
            requester_issuer TEXT NOT NULL,
            requester_name TEXT,
            rule_id TEXT,
            reason TEXT,
            backend TEXT,
            operation TEXT,
            route TEXT,
            collection TEXT,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            summary TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            approver_roles TEXT NOT NULL,
            approvals_required INTEGER NOT NULL,
            requested_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            decided_at REAL,
            approvers TEXT NOT NULL DEFAULT '[]',
            justification TEXT
        );
        CREATE INDEX holds_by_state ON holds (state, instance_id);
        CREATE INDEX holds_by_time ON holds (requested_at);
        CREATE TABLE approvals (
            hold_id TEXT NOT NULL REFERENCES holds (hold_id),
            approver TEXT NOT NULL,
            approver_name TEXT,
            justification TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (hold_id, approver)
        );
        CREATE TABLE grants (
            grant_id TEXT PRIMARY KEY,
            subject TEXT NOT NULL,
            operation TEXT NOT NULL,
            collection TEXT NOT NULL,
            granted_by TEXT NOT NULL,
            granted_by_roles TEXT NOT NULL,
            justification TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            revoked_at REAL,
            revoked_by TEXT
        );
        CREATE INDEX grants_by_match ON grants (subject, operation, collection, expires_at);
        CREATE TABLE decisions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            recorded_at REAL NOT NULL,
            instance_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            hold_id TEXT,
            outcome TEXT NOT NULL,
            row TEXT NOT NULL,
            shipped INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX decisions_unshipped ON decisions (instance_id, shipped);
        CREATE TABLE instances (
            instance_id TEXT PRIMARY KEY,
            node_id TEXT NOT NULL,
            hostname TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL
        );
    """),
)

_HOLD_COLUMNS = (
    "hold_id, kind, state, node_id, instance_id, request_id, requester, requester_issuer, requester_name, "
    "rule_id, reason, backend, operation, route, collection, method, path, summary, request_hash, "
    "approver_roles, approvals_required, requested_at, expires_at, decided_at, approvers, justification"
)

# Built from constants only (no caller value is ever formatted into SQL).
_SELECT_HOLD = "SELECT " + _HOLD_COLUMNS + " FROM holds"  # noqa: S608
_INSERT_HOLD = "INSERT INTO holds (" + _HOLD_COLUMNS + ") VALUES (" + ", ".join("?" * 26) + ")"  # noqa: S608

# How long one statement waits for another process's write lock before it fails. Every write here
# is one short transaction; a lock held longer is a stuck or foreign process, and the caller
# (a held flow, an approver) is better told at once than kept waiting.
BUSY_TIMEOUT_S = 2.0

# A gateway process that has not written its heartbeat for this long is presumed dead (another host
# in the same store, or a frozen process), and its pending holds are ended as denied.
DEFAULT_LEASE_S = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class HoldStore:
    """Blocking access to the store, for one thread. Times are epoch seconds (UTC)."""

    def __init__(self, path: Path, node_id: str, *, instance_id: str | None = None,
                 lease_s: float = DEFAULT_LEASE_S) -> None:
        self.path = path
        self.node_id = node_id
        self.instance_id = instance_id or uuid.uuid4().hex[:16]
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.lease_s = lease_s
        self._db: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a decision takes the write
        # lock before it reads the state it is about to change (no lost update between processes).
        db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed decision survives a process crash; only a power cut can
        # lose the last transactions, and the audit ledger holds its own durable copy.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        self._db = db
        self._migrate()
        now = time.time()
        with self._tx() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?, ?, ?)",
                (self.instance_id, self.node_id, self.hostname, self.pid, now, now),
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the hold store is not open")
        return self._db

    def _migrate(self) -> None:
        with self._tx() as tx:
            done = int(tx.execute("PRAGMA user_version").fetchone()[0])
            for index, (_name, script) in enumerate(MIGRATIONS[done:], start=done + 1):
                for statement in filter(str.strip, script.split(";")):
                    tx.execute(statement)
                tx.execute(f"PRAGMA user_version = {index}")

    @contextmanager
    def _tx(self) -> Any:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def data_version(self) -> int:
        """Changes whenever another connection (another process) commits: cheap change polling."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    # ------------------------------------------------------------------ holds

    def create(self, new: NewHold, state: HoldState = HoldState.PENDING, *,
               approvers: Sequence[str] = (), justification: str | None = None,
               record: Mapping[str, Any] | None = None) -> Hold:
        """Insert a hold. A hold created already settled (break-glass, grant) is recorded at once."""
        decided = None if state == HoldState.PENDING else new.requested_at
        with self._tx() as tx:
            tx.execute(
                _INSERT_HOLD,
                (new.hold_id, new.kind, str(state), self.node_id, self.instance_id, new.request_id,
                 new.requester, new.requester_issuer, new.requester_name, new.rule_id, new.reason,
                 new.backend, new.operation, new.route, new.collection, new.method, new.path,
                 json.dumps(dict(new.summary), sort_keys=True), new.request_hash,
                 json.dumps(sorted(new.approver_roles)), new.approvals_required, new.requested_at,
                 new.expires_at, decided, json.dumps(list(approvers)), justification),
            )
            hold = self._get(tx, new.hold_id)
            assert hold is not None
            if state != HoldState.PENDING:
                self._record(tx, hold, str(state), extra=record)
        return hold

    def get(self, hold_id: str) -> Hold | None:
        return self._get(self.db, hold_id)

    def _get(self, db: sqlite3.Connection, hold_id: str) -> Hold | None:
        row = db.execute(_SELECT_HOLD + " WHERE hold_id = ?", (hold_id,)).fetchone()
        if row is None:
            return None
        approvals = db.execute(
            "SELECT approver, approver_name, justification, at FROM approvals WHERE hold_id = ? ORDER BY at",
            (hold_id,),
        ).fetchall()
        return _hold(row, tuple(dict(a) for a in approvals))

    def holds(self, *, state: HoldState | None = None, limit: int = 200) -> list[Hold]:
        if state is None:
            rows = self.db.execute(
                _SELECT_HOLD + " ORDER BY requested_at DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self.db.execute(
                _SELECT_HOLD + " WHERE state = ? ORDER BY requested_at LIMIT ?",
                (str(state), limit),
            ).fetchall()
        out = []
        for row in rows:
            approvals = self.db.execute(
                "SELECT approver, approver_name, justification, at FROM approvals WHERE hold_id = ? "
                "ORDER BY at", (row["hold_id"],),
            ).fetchall()
            out.append(_hold(row, tuple(dict(a) for a in approvals)))
        return out

    def settled_among(self, hold_ids: Iterable[str]) -> list[Hold]:
        """Those of `hold_ids` no longer pending (decided by any process)."""
        ids = list(hold_ids)
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT hold_id FROM holds WHERE hold_id IN ({marks}) AND state != 'pending'", ids  # noqa: S608 - only ?s
        ).fetchall()
        return [h for h in (self.get(r[0]) for r in rows) if h is not None]

    def approve(self, hold_id: str, actor: Actor, justification: str, now: float) -> Hold:
        """Add one approval; the hold is approved when enough distinct approvers agree."""
        with self._tx() as tx:
            hold = self._decidable(tx, hold_id, actor, now)
            already = tx.execute(
                "SELECT 1 FROM approvals WHERE hold_id = ? AND approver = ?", (hold_id, _who(actor))
            ).fetchone()
            if already:
                # Two-person rule: the second approval must come from a different person.
                raise DecisionError(409, "already_approved",
                                    f"you already approved hold {hold_id}; it needs "
                                    f"{hold.approvals_required} different approvers")
            tx.execute("INSERT INTO approvals VALUES (?, ?, ?, ?, ?)",
                       (hold_id, _who(actor), actor.name, justification, now))
            approvers = [r[0] for r in tx.execute(
                "SELECT approver FROM approvals WHERE hold_id = ? ORDER BY at", (hold_id,))]
            if len(approvers) >= hold.approvals_required:
                reasons = [r[0] for r in tx.execute(
                    "SELECT justification FROM approvals WHERE hold_id = ? ORDER BY at", (hold_id,))]
                tx.execute(
                    "UPDATE holds SET state = 'approved', decided_at = ?, approvers = ?, justification = ? "
                    "WHERE hold_id = ? AND state = 'pending'",
                    (now, json.dumps(approvers), " | ".join(reasons), hold_id),
                )
                decided = self._get(tx, hold_id)
                assert decided is not None
                self._record(tx, decided, "approved")
                return decided
            partial = self._get(tx, hold_id)
            assert partial is not None
            return partial

    def deny(self, hold_id: str, actor: Actor, justification: str, now: float) -> Hold:
        """One authorised approver's denial ends the hold (any veto suffices)."""
        with self._tx() as tx:
            self._decidable(tx, hold_id, actor, now)
            tx.execute(
                "UPDATE holds SET state = 'denied', decided_at = ?, approvers = ?, justification = ? "
                "WHERE hold_id = ? AND state = 'pending'",
                (now, json.dumps([_who(actor)]), justification, hold_id),
            )
            decided = self._get(tx, hold_id)
            assert decided is not None
            self._record(tx, decided, "denied")
            return decided

    def _decidable(self, tx: sqlite3.Connection, hold_id: str, actor: Actor, now: float) -> Hold:
        hold = self._get(tx, hold_id)
        if hold is None:
            raise DecisionError(404, "not_found", f"no hold {hold_id}")
        if hold.state != HoldState.PENDING:
            raise DecisionError(409, "already_decided", f"hold {hold_id} is already {hold.state}")
        if now >= hold.expires_at:
            raise DecisionError(409, "expired", f"hold {hold_id} has expired")
        # Separation of duties: a requester who is also an approver must never release (or settle)
        # their own request, or the hold would be a formality for anyone holding both roles.
        if actor.subject == hold.requester and actor.issuer == hold.requester_issuer:
            raise DecisionError(403, "self_approval",
                                "you cannot decide your own request; another approver must")
        if not actor.roles & hold.approver_roles:
            raise DecisionError(403, "not_an_approver",
                                f"hold {hold_id} needs one of the roles "
                                f"{', '.join(sorted(hold.approver_roles))}; you have none of them")
        return hold

    def finish(self, hold_id: str, state: HoldState, justification: str, now: float) -> Hold:
        """End a pending hold without an approver (timeout, cancelled, gateway restart).

        Returns the hold as it now stands: if an approver decided first, that decision stands.
        """
        with self._tx() as tx:
            changed = tx.execute(
                "UPDATE holds SET state = ?, decided_at = ?, justification = ? "
                "WHERE hold_id = ? AND state = 'pending'",
                (str(state), now, justification, hold_id),
            ).rowcount
            hold = self._get(tx, hold_id)
            if hold is None:
                raise DecisionError(404, "not_found", f"no hold {hold_id}")
            if changed:
                self._record(tx, hold, str(state))
            return hold

    # ------------------------------------------------------------------ liveness of gateway processes

    def heartbeat(self, now: float) -> None:
        with self._tx() as tx:
            tx.execute("UPDATE instances SET heartbeat_at = ? WHERE instance_id = ?", (now, self.instance_id))

    def reap(self, now: float, why: str = "gateway restarted") -> list[Hold]:
        """End, as denied, the pending holds of gateway processes that are gone.

        Gone means: on this host with a dead pid, or silent for longer than the lease. Their
        clients' connections died with them; without this the holds would stay pending forever.
        """
        with self._tx() as tx:
            dead = []
            for inst in tx.execute("SELECT instance_id, hostname, pid, heartbeat_at FROM instances "
                                   "WHERE instance_id != ?", (self.instance_id,)).fetchall():
                local_dead = inst["hostname"] == self.hostname and not _pid_alive(int(inst["pid"]))
                if local_dead or now - float(inst["heartbeat_at"]) > self.lease_s:
                    dead.append(inst["instance_id"])
            # Holds whose process row is missing altogether (a store copied from elsewhere) too.
            orphans = tx.execute(
                "SELECT hold_id FROM holds WHERE state = 'pending' AND instance_id != ? AND "
                "instance_id NOT IN (SELECT instance_id FROM instances)", (self.instance_id,)
            ).fetchall()
            ids = [r[0] for r in orphans]
            for instance in dead:
                ids += [r[0] for r in tx.execute(
                    "SELECT hold_id FROM holds WHERE state = 'pending' AND instance_id = ?", (instance,))]
                tx.execute("DELETE FROM instances WHERE instance_id = ?", (instance,))
            ended = self._deny_flowless(tx, ids, now, why)
        return ended

    def end_own_pending(self, now: float, why: str) -> list[Hold]:
        """At shutdown: this process's pending holds end as denied, recorded (never silently lost)."""
        with self._tx() as tx:
            ids = [r[0] for r in tx.execute(
                "SELECT hold_id FROM holds WHERE state = 'pending' AND instance_id = ?", (self.instance_id,))]
            ended = self._deny_flowless(tx, ids, now, why)
            tx.execute("DELETE FROM instances WHERE instance_id = ?", (self.instance_id,))
        return ended

    def _deny_flowless(self, tx: sqlite3.Connection, hold_ids: Sequence[str], now: float, why: str) -> list[Hold]:
        """Deny pending holds whose flows are gone (or going); their records go to the ledger from here."""
        ended = []
        for hold_id in hold_ids:
            changed = tx.execute("UPDATE holds SET state = 'denied', decided_at = ?, justification = ? "
                                 "WHERE hold_id = ? AND state = 'pending'", (now, why, hold_id)).rowcount
            hold = self._get(tx, hold_id)
            if changed and hold is not None:
                self._record(tx, hold, "denied", ship=True)
                ended.append(hold)
        return ended

    # ------------------------------------------------------------------ grants

    def add_grant(self, subject: str, operation: str, collection: str, actor: Actor, justification: str,
                  now: float, minutes: float) -> Grant:
        grant = Grant(grant_id="g-" + uuid.uuid4().hex[:12], subject=subject, operation=operation,
                      collection=collection, granted_by=_who(actor), granted_by_roles=actor.roles,
                      justification=justification, created_at=now, expires_at=now + minutes * 60)
        with self._tx() as tx:
            tx.execute("INSERT INTO grants VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                       (grant.grant_id, subject, operation, collection, grant.granted_by,
                        json.dumps(sorted(actor.roles)), justification, now, grant.expires_at))
            self._record_grant(tx, grant, "granted", grant.granted_by, now, justification)
        return grant

    def find_grant(self, subject: str, operation: str, collection: str, now: float) -> Grant | None:
        row = self.db.execute(
            "SELECT * FROM grants WHERE subject = ? AND operation = ? AND collection = ? AND expires_at > ? "
            "AND revoked_at IS NULL ORDER BY expires_at DESC LIMIT 1", (subject, operation, collection, now),
        ).fetchone()
        return None if row is None else _grant(row)

    def grants(self, *, now: float, active_only: bool = True, limit: int = 200) -> list[Grant]:
        if active_only:
            rows = self.db.execute("SELECT * FROM grants WHERE expires_at > ? AND revoked_at IS NULL "
                                   "ORDER BY created_at DESC LIMIT ?", (now, limit)).fetchall()
        else:
            rows = self.db.execute("SELECT * FROM grants ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [_grant(r) for r in rows]

    def revoke_grant(self, grant_id: str, actor: Actor, justification: str, now: float) -> Grant:
        with self._tx() as tx:
            changed = tx.execute("UPDATE grants SET revoked_at = ?, revoked_by = ? WHERE grant_id = ? "
                                 "AND revoked_at IS NULL", (now, _who(actor), grant_id)).rowcount
            row = tx.execute("SELECT * FROM grants WHERE grant_id = ?", (grant_id,)).fetchone()
            if row is None:
                raise DecisionError(404, "not_found", f"no grant {grant_id}")
            grant = _grant(row)
            if changed:
                self._record_grant(tx, grant, "revoked", _who(actor), now, justification)
            return grant

    # ------------------------------------------------------------------ the approvals record

    def _record(self, tx: sqlite3.Connection, hold: Hold, outcome: str,
                extra: Mapping[str, Any] | None = None, *, ship: bool = False) -> None:
        """Record an outcome. `ship`: hand it to the audit ledger from here. Outcomes of holds whose
        flow is still held by a live gateway process are not shipped: that flow's audit event carries
        them (ctx.hold), and one record per outcome keeps the ledger's counts honest. Holds ended
        without their flow (restart, dead worker) and grants have no flow: they are shipped."""
        row = {
            "hold_id": hold.hold_id, "kind": hold.kind, "requester": hold.requester,
            "approvers": list(hold.approvers), "rule_id": hold.rule_id, "operation": hold.operation,
            "collection": hold.collection, "requested_at": hold.requested_at,
            "decided_at": hold.decided_at, "outcome": outcome, "justification": hold.justification,
            "request_hash": hold.request_hash, "request_id": hold.request_id, "node_id": hold.node_id,
            **(extra or {}),
        }
        self._record_row(tx, str(row["kind"]), hold.hold_id, outcome, row, ship=ship)

    def _record_grant(self, tx: sqlite3.Connection, grant: Grant, outcome: str, by: str, at: float,
                      justification: str) -> None:
        self._record_row(tx, "grant", None, outcome, {
            "hold_id": None, "grant_id": grant.grant_id, "kind": "grant", "requester": grant.subject,
            "approvers": [by], "rule_id": None, "operation": grant.operation, "collection": grant.collection,
            "requested_at": grant.created_at, "decided_at": at, "outcome": outcome,
            "justification": justification, "request_hash": None, "expires_at": grant.expires_at,
        }, ship=True)

    def _record_row(self, tx: sqlite3.Connection, kind: str, hold_id: str | None, outcome: str,
                    row: Mapping[str, Any], *, ship: bool) -> None:
        # shipped: 0 = for the ledger, 1 = in the ledger, 2 = carried by the flow's audit event.
        tx.execute("INSERT INTO decisions (recorded_at, instance_id, kind, hold_id, outcome, row, shipped) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (time.time(), self.instance_id, kind, hold_id, outcome, json.dumps(dict(row), sort_keys=True),
                    0 if ship else 2))

    def decisions(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT seq, row FROM decisions ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [{"seq": r["seq"], **json.loads(r["row"])} for r in rows]

    def unshipped(self, limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
        """Records this process wrote that the audit ledger has not yet taken."""
        rows = self.db.execute("SELECT seq, row FROM decisions WHERE instance_id = ? AND shipped = 0 "
                               "ORDER BY seq LIMIT ?", (self.instance_id, limit)).fetchall()
        return [(int(r["seq"]), json.loads(r["row"])) for r in rows]

    def mark_shipped(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._tx() as tx:
            tx.executemany("UPDATE decisions SET shipped = 1 WHERE seq = ?", [(s,) for s in seqs])


def unavailable_reason(exc: BaseException) -> str:
    """Why the store failed, said without values: SQLite's messages name the condition
    ("database is locked", "disk I/O error"), never a row's content."""
    if isinstance(exc, sqlite3.Error):
        return f"the hold store is unavailable ({str(exc) or type(exc).__name__})"
    return f"the hold store is unavailable ({type(exc).__name__})"


def _who(actor: Actor) -> str:
    return actor.subject


def _hold(row: sqlite3.Row, approvals: tuple[Mapping[str, Any], ...]) -> Hold:
    return Hold(
        hold_id=row["hold_id"], kind=row["kind"], state=HoldState(row["state"]), node_id=row["node_id"],
        instance_id=row["instance_id"], request_id=row["request_id"], requester=row["requester"],
        requester_issuer=row["requester_issuer"], requester_name=row["requester_name"],
        rule_id=row["rule_id"], reason=row["reason"], backend=row["backend"], operation=row["operation"],
        route=row["route"], collection=row["collection"], method=row["method"], path=row["path"],
        summary=json.loads(row["summary"]), request_hash=row["request_hash"],
        approver_roles=frozenset(json.loads(row["approver_roles"])),
        approvals_required=int(row["approvals_required"]), requested_at=float(row["requested_at"]),
        expires_at=float(row["expires_at"]),
        decided_at=None if row["decided_at"] is None else float(row["decided_at"]),
        approvers=tuple(json.loads(row["approvers"])), justification=row["justification"],
        approvals=approvals,
    )


def _grant(row: sqlite3.Row) -> Grant:
    return Grant(
        grant_id=row["grant_id"], subject=row["subject"], operation=row["operation"],
        collection=row["collection"], granted_by=row["granted_by"],
        granted_by_roles=frozenset(json.loads(row["granted_by_roles"])), justification=row["justification"],
        created_at=float(row["created_at"]), expires_at=float(row["expires_at"]),
        revoked_at=None if row["revoked_at"] is None else float(row["revoked_at"]),
        revoked_by=row["revoked_by"],
    )


class AsyncHoldStore:
    """Runs every HoldStore call on one dedicated thread: SQLite connections belong to one thread,
    and the event loop (all other traffic) must never wait on the disk."""

    def __init__(self, store: HoldStore) -> None:
        self.store = store
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="phigate-holds")

    @classmethod
    async def open(cls, store: HoldStore) -> AsyncHoldStore:
        opened = cls(store)
        try:
            await opened.call(store.open)
        except BaseException:
            opened._pool.shutdown(wait=False)
            raise
        return opened

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def call_blocking(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """For `done()` at shutdown, when there is no loop left to await on."""
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        try:
            self._pool.submit(self.store.close).result()
        finally:
            self._pool.shutdown(wait=True)
