"""phigate's tamper-evident audit ledger.

Design (why it is shaped like this)
-----------------------------------
DuckDB lets one process hold a database file, and refuses even read-only opens from other processes
while it does; row-by-row INSERT manages ~1,000 rows/s. A gateway that wrote one DuckDB file would
lock out every report, export and verification while it runs, and could not keep up with traffic.
So the gateway never keeps a DuckDB file open:

* Write path: each node (a gateway process, or a CLI tool that records a review) appends records to
  its own write-ahead segment, `nodes/NODE/wal-FIRSTSEQ.ndjson`. Appends are grouped: every flow
  that finished while the previous fsync ran shares the next one (`writer.Ledger`), the fsync runs
  in a worker thread, and each flow's response is released only when its record is durable.
* Sealing: when a write-ahead segment holds enough leaves (and at start/stop), it is converted into an
  immutable DuckDB file `seg-FIRST-LAST.duckdb` by DuckDB's own columnar `read_json` (no Python per
  row), written under a temporary name and renamed. The writer never opens it again.
* Reading (`read.open_ledger`): any number of readers, in any process, attach the sealed segments
  read-only and load the still-open write-ahead segments (complete lines only) into memory, behind
  views named after the tables. No lock is shared with the writer, so reports, exports and
  verification never pause traffic.
* Tamper evidence: every record (event, approval, auth failure, rule version, review, incident) is a
  leaf of the node's RFC 6962 Merkle tree over its canonical encoding (`canonical`); checkpoints
  (origin, size, root, time) are signed with Ed25519 and also appended to a witness outside the
  ledger folder (`verify` catches truncation and rollback against it).

Multi-process: one node id per worker; each has its own sequence, tree, checkpoints,
segments and witness file; readers and `verify` combine every node under `nodes/`.
"""
