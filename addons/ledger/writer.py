"""One node's ledger writer: group-committed appends, checkpoints, witness, sealing, recovery.

Appends are staged on the event loop (sequence number, canonical entry, leaf hash: microseconds)
and written by a single flush task: it takes everything staged so far, closes the batch with a
checkpoint signing the tree it completes, writes and fsyncs it in a worker thread, and resolves
every waiting future at once. Flows that finish while one fsync runs share the next, so the cost of
durability is one fsync and one Ed25519 signature per batch, not per request, and no flow's wait
ever blocks the loop or another flow.

Every acknowledged record is therefore covered by a signed checkpoint written with it: a record
that no checkpoint covers was never acknowledged (a crash mid-write), or was appended by someone
without the signing key. On open the writer never signs such a tail: it moves it to
`quarantine/`, records an incident naming the seq range, and resumes from the last checkpoint.

Any write failure (disk full, permissions, a vanished folder) marks the ledger broken: every
waiting and later append fails with LedgerError, so the audit addon refuses traffic (fail closed).
Every few seconds the writer tries to recover: it cuts the write-ahead file back to its last
durable size, rescans it, and records an incident saying what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from addons.core import metrics
from addons.core.startup import runtime_error
from addons.ledger import canonical, keys, layout, merkle, recording, seal, wal, witness_fs
from addons.ledger.wal import AppendFile

log = logging.getLogger("phigate")

RECOVERY_INTERVAL_S = 5.0
# The witness is fdatasync'd beside a commit at most this often (and within a second when idle): a
# second file's fsync in every commit would double the journal commits per batch. Losing its last
# fraction of a second to a power cut loses nothing the ledger does not still hold signed.
WITNESS_SYNC_INTERVAL_S = 0.2


class LedgerError(RuntimeError):
    """The ledger cannot durably record: nothing may pass unaudited."""


class NodeBusy(LedgerError):
    """Another live process holds this node's writer lock."""


@dataclass(slots=True)
class _Item:
    seq: int | None
    leaf: bytes | None
    line: bytes
    ts: float
    rec_line: bytes | None = None
    witness_line: bytes | None = None
    cp_size: int | None = None
    future: asyncio.Future[int] | None = None


@dataclass(slots=True)
class _State:
    """What a scan of the node's files says: where the tree and the sequence stand."""

    frontier: merkle.Frontier
    active: layout.Wal
    active_leaves: int
    last_cp_size: int
    to_seal: list[tuple[Path, int, int, list[bytes]]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Cut:
    """Where the signed part of the write-ahead files ends: file index and byte offset."""

    wal_index: int
    offset: int
    size: int  # tree size the covering checkpoint signs


@dataclass(frozen=True, slots=True)
class _Trust:
    own: Any  # this writer's public key (None without a key)
    published: dict[str, Any]
    witnessed: set[tuple[int, str, str]]

    def covers(self, cp: keys.Checkpoint, node_id: str, size: int, root_hex: str) -> bool:
        """A checkpoint of this node, at this size and root, signed by a key trusted for it."""
        if not (cp.size == size and cp.root == root_hex and cp.node_id == node_id
                and cp.origin == f"phigate/{node_id}"):
            return False
        if self.own is not None and cp.key_id == keys.key_id_of(self.own):
            return keys.check_signature(self.own, cp)
        pub = self.published.get(cp.key_id)
        return (pub is not None and (cp.size, cp.root, cp.signature) in self.witnessed
                and keys.check_signature(pub, cp))


@dataclass(frozen=True, slots=True)
class Settings:
    seal_events: int = 50_000
    retention_days: int = 2190


class Ledger:
    def __init__(
        self,
        audit_dir: Path,
        node_id: str,
        *,
        signing_key: Ed25519PrivateKey | None,
        witness: Path | None,
        recording_key: recording.RecordingKey | None = None,
        settings: Settings = Settings(),
    ) -> None:
        self.audit_dir = audit_dir
        self.node_id = node_id
        self.dir = layout.node_dir(audit_dir, node_id)
        self.rec_dir = self.dir / "recordings"
        self.signing_key = signing_key
        self.witness = layout.witness_file(witness, node_id) if witness else None
        # A witness folder (one file per node): append-only too, so no node's file can be removed.
        self.witness_folder = (self.witness.parent if witness is not None and self.witness is not None
                               and self.witness != witness else None)
        self.recording_key = recording_key
        self.settings = settings
        self.broken: str | None = None
        self.refused_while_broken = 0
        self.batches = 0
        self._pending: list[_Item] = []
        self._frontier = merkle.Frontier()  # durable leaves
        # Every staged leaf, in seq order, including a batch in flight: a checkpoint staged now is
        # written after all of them, so it must sign exactly this tree.
        self._staged = merkle.Frontier()
        self._next_seq = 1
        self._last_cp_size = 0
        self._wal: AppendFile | None = None
        self._wal_first = 1
        self._wal_leaves = 0
        self._good_offset = 0
        self._rec: AppendFile | None = None
        self._witness_file: AppendFile | None = None
        self._witness_dirty = False
        self._witness_synced = 0.0
        # Incidents found while opening (a quarantined tail): recorded with the first commit.
        self.open_incidents: list[dict[str, Any]] = []
        self._lock_fd = -1
        self._io = threading.Lock()
        self._seal_lock = threading.Lock()
        # The recordings' and the witness's fsyncs run beside the write-ahead file's.
        self._syncer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="phigate-audit-fsync")
        self._flusher: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._sealer: asyncio.Task[None] | None = None
        self._to_seal: list[tuple[Path, int, int, list[bytes]]] = []

    # ------------------------------------------------------------------ open / close (sync)

    @property
    def size(self) -> int:
        """Durable tree size (= the last durable seq)."""
        return self._frontier.size

    def open(self) -> None:
        """Take the node's writer lock and resume from its files (repairing a crash-cut tail)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.rec_dir.mkdir(exist_ok=True)
            self._lock_fd = os.open(self.dir / "writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                self._lock_fd = -1
                raise NodeBusy(
                    f"{self.dir}: another process is writing node {self.node_id!r}; give each gateway "
                    "process its own phigate_node_id"
                ) from None
            self._publish_key()
            self._apply(self._scan())
        except (OSError, ValueError, wal.WalCorrupt, duckdb.Error) as exc:
            self._unlock()
            raise LedgerError(f"cannot open the audit ledger at {self.dir}: {exc}") from exc
        # Never a checkpoint here: signing whatever sits after the last checkpoint would cover a
        # record appended by someone without the key (the scan quarantined any such tail).
        for incident in self.open_incidents:
            self.stage("incident", incident)
        self.open_incidents = []

    def _publish_key(self) -> None:
        if self.signing_key is None:
            return
        pub = self.signing_key.public_key()
        kdir = layout.keys_dir(self.audit_dir)
        kdir.mkdir(parents=True, exist_ok=True)
        path = kdir / f"{keys.key_id_of(pub)}.pub"
        if not path.exists():
            path.write_bytes(keys.public_pem(pub))

    def _trusted(self) -> _Trust:
        """Which checkpoints count as covering records at open: this writer's own key's; and those
        of keys published in the ledger folder (rotated keys, ephemeral keys of earlier runs) only
        when the witness holds the same checkpoint. Threat: someone who can write the audit folder
        publishing a key of their own and signing a forged tail with it."""
        published: dict[str, Any] = {}
        for path in sorted(layout.keys_dir(self.audit_dir).glob("*.pub")):
            with contextlib.suppress(OSError, ValueError):
                pub = keys.parse_public(path.read_bytes(), str(path))
                published[keys.key_id_of(pub)] = pub
        own = self.signing_key.public_key() if self.signing_key is not None else None
        witnessed: set[tuple[int, str, str]] = set()
        if self.witness is not None:
            with contextlib.suppress(OSError):
                for line in self.witness.read_bytes().splitlines():
                    cp = _checkpoint_of(line)
                    if cp is not None and cp.node_id == self.node_id:
                        witnessed.add((cp.size, cp.root, cp.signature))
        return _Trust(own, published, witnessed)

    def _sealed_cover(self, segment: layout.Segment, frontier: merkle.Frontier, trusted: _Trust) -> bool:
        """Whether a valid checkpoint inside the last sealed segment signs the tree at its end."""
        con = duckdb.connect(str(segment.path), read_only=True)
        try:
            rows = con.execute(
                "SELECT node_id, origin, size, root, strftime(ts, '%Y-%m-%dT%H:%M:%S.%f'), key_id, signature "
                "FROM checkpoints WHERE size = ?", [frontier.size],
            ).fetchall()
        finally:
            con.close()
        root = frontier.root().hex()
        return any(trusted.covers(keys.Checkpoint(str(n), str(o), int(sz), str(rt), str(ts), str(k), str(sig)),
                                  self.node_id, frontier.size, root) for n, o, sz, rt, ts, k, sig in rows)

    def _scan(self) -> _State:
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()
        files = layout.list_node(self.dir)
        frontier = merkle.Frontier()
        trusted = self._trusted()
        cut: _Cut | None = _Cut(0, 0, 0)
        if files.sealed:
            _, last, peaks = seal.read_meta(files.sealed[-1].path)
            frontier = merkle.Frontier(last, peaks)
            cut = _Cut(0, 0, last) if self._sealed_cover(files.sealed[-1], frontier, trusted) else None
        sealed_size = frontier.size
        for leftover in self.dir.glob("wal-*.ndjson"):
            if leftover not in {w.path for w in files.wals}:
                leftover.unlink()  # sealed already: the segment is the record
        to_seal: list[tuple[Path, int, int, list[bytes]]] = []
        active: layout.Wal | None = None
        active_leaves = 0
        candidates: list[tuple[_Cut, str, bytes]] = []
        for i, w in enumerate(files.wals):
            data, size = wal.complete_bytes(w.path)
            if size != len(data):
                # A crash cut the last line mid-write: that record was never acknowledged.
                with open(w.path, "r+b") as fh:
                    fh.truncate(len(data))
                    os.fsync(fh.fileno())
                log.warning("phigate audit: cut a partial record from the end of %s", w.path.name)
            if w.first != frontier.size + 1:
                raise wal.WalCorrupt(f"{w.path.name} starts at seq {w.first}, expected {frontier.size + 1}")
            leaves = 0
            for rec in wal.parse(data, str(w.path)):
                if rec.leaf is None:
                    # The writer puts a batch's checkpoint after the batch's leaves, so an honest
                    # checkpoint signs exactly the tree read so far.
                    if rec.kind == "checkpoint":
                        candidates.append((_Cut(i, rec.end, frontier.size), frontier.root().hex(), rec.entry))
                    continue
                if rec.seq != frontier.size + 1:
                    raise wal.WalCorrupt(f"{w.path.name}: seq {rec.seq} follows {frontier.size}")
                frontier.append(rec.leaf)
                leaves += 1
            if i == len(files.wals) - 1 and leaves < self.settings.seal_events:
                # The tail segment has room: keep appending (restarts and CLI tools would otherwise
                # leave a trail of tiny sealed files).
                active, active_leaves = w, leaves
            else:
                to_seal.append((w.path, w.first, frontier.size, list(frontier.peaks)))
        # The last checkpoint that checks out (signatures are checked from the end: usually one).
        for where, root, entry in reversed(candidates):
            if cut is not None and where.size <= cut.size:
                break
            cp = _checkpoint_of(entry)
            if cp is not None and trusted.covers(cp, self.node_id, where.size, root):
                cut = where
                break
        if self.signing_key is not None and frontier.size > (cut.size if cut else 0):
            if cut is None or cut.size < sealed_size:
                raise LedgerError(
                    f"{files.sealed[-1].path.name}: seq {sealed_size} is covered by no checkpoint signed with a "
                    "trusted key; the sealed segments hold records nobody acknowledged. Review it and move it "
                    "aside (`./run.sh verify` names the range) before starting the gateway"
                )
            self._quarantine(files.wals, cut, frontier.size)
            return self._scan()
        if active is None:
            active = layout.Wal(self.dir / layout.wal_name(frontier.size + 1), frontier.size + 1)
        return _State(frontier, active, active_leaves, frontier.size, to_seal)

    def _quarantine(self, wals: list[layout.Wal], cut: _Cut, size: int) -> None:
        """Move the write-ahead bytes after the last covering checkpoint to quarantine/, never signed."""
        qdir = self.dir / layout.QUARANTINE_DIR
        qdir.mkdir(exist_ok=True)
        first = cut.size + 1
        target = qdir / f"wal-{first:0{layout.SEQ_WIDTH}d}-{size:0{layout.SEQ_WIDTH}d}-{int(time.time())}.ndjson"
        moved = wals[cut.wal_index:]
        with open(target, "xb") as out:
            for j, w in enumerate(moved):
                data, _ = wal.complete_bytes(w.path)
                out.write(data[cut.offset:] if j == 0 else data)
            out.flush()
            os.fsync(out.fileno())
        wal.fsync_dir(qdir)
        head = moved[0].path
        with open(head, "r+b") as fh:
            fh.truncate(cut.offset)
            os.fsync(fh.fileno())
        for w in moved[1:]:
            w.path.unlink()
        wal.fsync_dir(self.dir)
        where = target.relative_to(self.audit_dir)
        log.warning("phigate audit: seq %d..%d of node %s follow the last signed checkpoint: moved to %s, "
                    "not signed", first, size, self.node_id, where)
        self.open_incidents.append({
            "kind": "unsigned_tail_quarantined",
            "detail": f"seq {first}..{size} ({size - first + 1} records) followed the last signed checkpoint "
                      f"(tree size {cut.size}) when node {self.node_id} opened: never acknowledged (a write cut "
                      f"by a crash) or appended without the signing key. Moved to {where}, not signed.",
        })

    def _apply(self, st: _State) -> None:
        self._frontier = st.frontier
        self._staged = st.frontier.copy()
        self._next_seq = st.frontier.size + 1
        self._last_cp_size = st.last_cp_size
        self._wal = AppendFile(st.active.path)
        self._wal_first = st.active.first
        self._wal_leaves = st.active_leaves
        self._good_offset = self._wal.size
        self._to_seal.extend(st.to_seal)

    def close(self) -> None:
        """Write what is staged, sign a final checkpoint, seal everything, release the node."""
        try:
            if not self.broken:
                self._stage_checkpoint()
                self.flush_now()
        except (OSError, LedgerError) as exc:
            log.error("phigate audit: final write failed (%s)", type(exc).__name__)
        with self._io:
            if self._wal is not None:
                # The open write-ahead segment stays as it is: the next start appends to it.
                self._wal.close()
                self._wal = None
            for f in (self._rec, self._witness_file):
                if f is not None:
                    f.close()
            self._rec = self._witness_file = None
        self._syncer.shutdown(wait=True)
        self.seal_pending()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def seal_pending(self) -> None:
        # One sealer at a time: the background sealer and close() must never build the same segment.
        with self._seal_lock:
            while self._to_seal:
                path, first, last, peaks = self._to_seal[0]
                try:
                    seal.seal(path, self.node_id, first, last, peaks)
                except Exception as exc:  # noqa: BLE001 - the WAL stays the record; sealed at next start
                    log.error("phigate audit: sealing %s failed (%s: %s)", path.name, type(exc).__name__, exc)
                    return
                self._to_seal.pop(0)

    # ------------------------------------------------------------------ staging (event loop)

    def stage(self, kind: str, row: Mapping[str, Any], payload: bytes | None = None) -> _Item:
        if self.broken:
            raise LedgerError(self.broken)
        seq = self._next_seq
        now = time.time()
        fields = dict(row)
        fields.setdefault("node_id", self.node_id)
        fields.setdefault("ts", now)
        rec_line = None
        if payload is not None and self.recording_key is not None:
            # Filed under the event's own day, so retention counts from when the exchange happened.
            ts = fields["ts"]
            now = float(ts) if isinstance(ts, int | float) else now
            fields["payload_sha256"] = hashlib.sha256(payload).hexdigest()
            rec_line = recording.seal_line(
                self.recording_key, str(fields.get("request_id") or ""), fields.get("session_id"), seq,
                canonical.iso_ts(now), payload,
            )
        entry = canonical.encode(kind, seq, fields)  # RecordError: the caller's bad row, not a broken store
        leaf = merkle.leaf_hash(entry)
        self._next_seq = seq + 1
        self._staged.append(leaf)
        item = _Item(seq, leaf, wal.encode_line(kind, seq, leaf, entry), now, rec_line)
        self._pending.append(item)
        return item

    def _stage_checkpoint(self) -> None:
        """Sign the tree as it will stand once everything staged so far is durable."""
        item = self._checkpoint_item()
        if item is not None:
            self._pending.append(item)

    def _checkpoint_item(self) -> _Item | None:
        if self.signing_key is None:
            return None
        frontier = self._staged
        if frontier.size == 0 or frontier.size == self._last_cp_size:
            return None
        cp = keys.sign_checkpoint(
            self.signing_key, self.node_id, frontier.size, frontier.root(), canonical.iso_ts(time.time())
        )
        body = orjson.dumps(cp.as_row(), option=orjson.OPT_SORT_KEYS)
        self._last_cp_size = frontier.size
        return _Item(None, None, wal.encode_line("checkpoint", None, None, body), time.time(),
                     witness_line=body + b"\n", cp_size=frontier.size)

    def _take_batch(self) -> list[_Item]:
        """Everything staged, closed by the checkpoint that signs it: a record is acknowledged only
        together with a signature over it."""
        batch, self._pending = self._pending, []
        if batch:
            cp = self._checkpoint_item()
            if cp is not None:
                batch.append(cp)
        return batch

    # ------------------------------------------------------------------ writing (worker thread)

    def _write(self, batch: list[_Item], sync_witness: bool = False) -> None:
        with self._io:
            if self._wal is None:
                raise LedgerError("the audit ledger is closed")
            rec_sync: Future[None] | None = None
            # Earlier batches' witness lines become durable beside this batch's fsync: the witness
            # never runs ahead of the ledger, and costs no extra wait.
            wit_sync = None
            if self._witness_dirty and time.monotonic() - self._witness_synced >= WITNESS_SYNC_INTERVAL_S:
                wit_sync = self._syncer.submit(self._sync_witness)
            recs = [i for i in batch if i.rec_line is not None]
            if recs:
                rec = self._rec_file(recs[0].ts)
                same_day = [i for i in recs if recording.day_file(self.rec_dir, i.ts) == rec.path]
                rec.write(b"".join(i.rec_line or b"" for i in same_day))
                if len(same_day) != len(recs):  # the batch straddles midnight UTC
                    rec.sync()
                    rec = self._rec_file(recs[-1].ts)
                    rec.write(b"".join(i.rec_line or b"" for i in recs if i not in same_day))
                # Both files' fsyncs run at once; the batch is acknowledged only after both finish.
                rec_sync = self._syncer.submit(rec.sync)
            try:
                self._wal.write(b"".join(i.line for i in batch))
                self._wal.sync()
            finally:
                for fut in (rec_sync, wit_sync):
                    if fut is not None:
                        fut.result()
            wit = [i.witness_line for i in batch if i.witness_line is not None]
            if wit and self.witness is not None:
                # Written only once the checkpoint is durable in the ledger (never ahead of it).
                self._open_witness().write(b"".join(wit))
                self._witness_dirty = True
                if sync_witness:
                    self._sync_witness()
            self._good_offset = self._wal.size

    def _open_witness(self) -> AppendFile:
        assert self.witness is not None
        if self._witness_file is None:
            self.witness.parent.mkdir(parents=True, exist_ok=True)
            self._witness_file = AppendFile(self.witness)
        return self._witness_file

    def _sync_witness(self) -> None:
        if self._witness_file is not None and self._witness_dirty:
            self._witness_dirty = False
            self._witness_synced = time.monotonic()
            self._witness_file.sync()

    def witness_append_only(self, set_flag: bool = False) -> bool | None:
        """Whether this node's witness file (and the witness folder) are append-only (chattr +a);
        None: no witness, or the filesystem cannot say. `set_flag`: set it first when the process may
        (CAP_LINUX_IMMUTABLE)."""
        if self.witness is None:
            return None
        with self._io:
            self._open_witness()
        check = witness_fs.ensure_append_only if set_flag else witness_fs.is_append_only
        found = [check(p) for p in (self.witness, self.witness_folder) if p is not None]
        return None if None in found else all(found)

    def _rec_file(self, ts: float) -> AppendFile:
        path = recording.day_file(self.rec_dir, ts)
        if self._rec is None or self._rec.path != path:
            if self._rec is not None:
                self._rec.sync()
                self._rec.close()
            self._rec = AppendFile(path)
        return self._rec

    def _committed(self, batch: list[_Item]) -> None:
        for item in batch:
            if item.leaf is not None:
                self._frontier.append(item.leaf)
                self._wal_leaves += 1
            if item.future is not None and not item.future.done():
                item.future.set_result(item.seq or 0)
        self.batches += 1
        metrics.audit_committed(len(batch), batch[0].ts if batch else None)

    def _rotate(self) -> None:
        """Start a new write-ahead segment and queue the full one for sealing."""
        with self._io:
            if self._wal is None:
                return
            self._wal.close()
            self._to_seal.append((self._wal.path, self._wal_first, self.size, list(self._frontier.peaks)))
            self._wal_first = self.size + 1
            self._wal = AppendFile(self.dir / layout.wal_name(self._wal_first))
            self._wal_leaves = 0
            self._good_offset = 0

    # ------------------------------------------------------------------ sync API (CLI tools, tests)

    def flush_now(self) -> None:
        batch = self._take_batch()
        if not batch:
            return
        try:
            self._write(batch, sync_witness=True)
        except OSError as exc:
            self._fail(exc, batch)
            raise LedgerError(self.broken or "audit write failed") from exc
        self._committed(batch)

    def append_now(self, kind: str, row: Mapping[str, Any], payload: bytes | None = None) -> int:
        item = self.stage(kind, row, payload)
        self.flush_now()
        return item.seq or 0

    def checkpoint_now(self) -> None:
        self._stage_checkpoint()
        self.flush_now()

    # ------------------------------------------------------------------ async API (the gateway)

    def start(self) -> None:
        """Start the checkpoint timer, recovery and sealing in the running loop."""
        loop = asyncio.get_running_loop()
        self._ticker = loop.create_task(self._tick_loop())
        self._kick()
        self._kick_sealer()

    async def append(self, kind: str, row: Mapping[str, Any], payload: bytes | None = None) -> int:
        """Append and wait until the record is durable; raises LedgerError if it cannot be."""
        item = self.stage(kind, row, payload)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        item.future = fut
        self._kick()
        # shield: a client that goes away must not cancel the write other flows share.
        return await asyncio.shield(fut)

    def append_nowait(self, kind: str, row: Mapping[str, Any]) -> None:
        """Stage a record to be written with the next group commit (non-flow records)."""
        self.stage(kind, row)
        self._kick()

    def _kick(self) -> None:
        if self._pending and (self._flusher is None or self._flusher.done()):
            with contextlib.suppress(RuntimeError):  # no running loop: flush_now() will write it
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self._pending and not self.broken:
            batch = self._take_batch()
            try:
                await asyncio.to_thread(self._write, batch)
            except Exception as exc:  # noqa: BLE001 - any failure to persist means fail closed
                self._fail(exc, batch)
                return
            self._committed(batch)
            if self._wal_leaves >= self.settings.seal_events:
                try:
                    await asyncio.to_thread(self._rotate)
                except OSError as exc:
                    self._fail(exc, [])
                    return
                self._kick_sealer()

    def _fail(self, exc: BaseException, batch: list[_Item]) -> None:
        reason = f"audit store write failed: {type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
        if not self.broken:
            runtime_error(log, "phigate audit: %s; refusing traffic until it recovers", reason)
        self.broken = reason
        err = LedgerError(reason)
        for item in batch + self._pending:
            if item.future is not None and not item.future.done():
                item.future.set_exception(err)
                # Mark retrieved: a flow that went away must not log "exception never retrieved".
                item.future.exception()
        self._pending = []

    def _kick_sealer(self) -> None:
        if self._to_seal and (self._sealer is None or self._sealer.done()):
            self._sealer = asyncio.get_running_loop().create_task(asyncio.to_thread(self.seal_pending))

    async def _tick_loop(self) -> None:
        last_recovery = 0.0
        last_purge = float("-inf")  # purge expired recordings once at start, then hourly
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if self.broken:
                if now - last_recovery >= RECOVERY_INTERVAL_S:
                    last_recovery = now
                    await self._try_recover()
                continue
            if self._witness_dirty and (self._flusher is None or self._flusher.done()):
                # Idle: make the last batch's witness line durable (busy, the next batch does it).
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(self._locked_sync_witness)
            if now - last_purge >= 3600:
                last_purge = now
                with contextlib.suppress(OSError):
                    removed = await asyncio.to_thread(
                        recording.purge, self.rec_dir, self.settings.retention_days, time.time()
                    )
                    if removed:
                        log.info("phigate audit: purged %d expired recording files", len(removed))

    async def _try_recover(self) -> None:
        reason = self.broken
        try:
            state = await asyncio.to_thread(self._reset_files)
        except Exception as exc:  # noqa: BLE001 - still broken; try again later
            log.warning("phigate audit: still cannot write the ledger (%s)", type(exc).__name__)
            return
        self._apply(state)
        self.broken = None
        log.warning("phigate audit: the ledger is writable again; recording the incident")
        for incident in self.open_incidents:
            with contextlib.suppress(LedgerError, canonical.RecordError):
                self.append_nowait("incident", incident)
        self.open_incidents = []
        with contextlib.suppress(LedgerError, canonical.RecordError):
            self.append_nowait("incident", {
                "kind": "audit_write_failure",
                "detail": f"{reason}; {self.refused_while_broken} requests refused with 503 while it lasted",
            })
            self.refused_while_broken = 0
        self._kick()

    def _locked_sync_witness(self) -> None:
        with self._io:
            self._sync_witness()

    def _reset_files(self) -> _State:
        with self._seal_lock, self._io:
            if self._wal is not None:
                path, good = self._wal.path, self._good_offset
                self._wal.close()
                self._wal = None
                # Cut whatever a failed batch left behind: those flows were refused, not recorded.
                with open(path, "r+b") as fh:
                    fh.truncate(good)
                    os.fsync(fh.fileno())
            if self._rec is not None:
                self._rec.close()
                self._rec = None
            if self._witness_file is not None:
                self._witness_file.close()
                self._witness_file = None
            self._witness_dirty = False
            self._to_seal = []
            state = self._scan()
            # Prove the disk takes writes again before reopening for traffic.
            probe = self.dir / "probe.tmp"
            probe.write_bytes(b"x" * 4096)
            with open(probe, "rb+") as fh:
                os.fsync(fh.fileno())
            probe.unlink()
            return state


def _checkpoint_of(entry: bytes) -> keys.Checkpoint | None:
    try:
        row = orjson.loads(entry)
        return keys.Checkpoint(str(row["node_id"]), str(row["origin"]), int(row["size"]), str(row["root"]),
                               str(row["ts"]), str(row["key_id"]), str(row["signature"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
