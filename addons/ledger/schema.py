"""The ledger's tables, as named, ordered migrations.

Every sealed segment file is created by running these migrations in order; each segment records the
names it ran in `schema_migrations`, so a reader can tell which schema a segment was written with.
A change to the schema is a NEW migration appended to `MIGRATIONS` (never an edit of an old one):
old segments are immutable evidence and keep their schema, and the read views combine segments
`UNION ALL BY NAME`, so a column added later reads as NULL in older segments.

Every record kind except checkpoints is a leaf of the node's Merkle tree: its row carries `seq`
(the leaf's position, shared by all kinds on a node, starting at 1), `entry` (the exact canonical
bytes that were hashed) and `leaf_hash`. The other columns are the entry's fields, kept typed for
queries; `verify` checks that they still say what the entry says.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_initial",
        """
        CREATE TABLE events (
          seq BIGINT NOT NULL, ts TIMESTAMP, node_id VARCHAR, request_id VARCHAR, session_id VARCHAR,
          subject VARCHAR, name VARCHAR, email VARCHAR, client_id VARCHAR, roles VARCHAR[],
          client_addr VARCHAR, user_agent VARCHAR, backend VARCHAR, operation VARCHAR,
          collection VARCHAR, method VARCHAR, path VARCHAR, request_summary JSON, status INTEGER,
          decision VARCHAR, rule_ids VARCHAR[], stage VARCHAR, masking JSON,
          fields_disclosed VARCHAR[], subject_refs VARCHAR[], purpose VARCHAR, hold_id VARCHAR,
          break_glass BOOLEAN, bytes_in BIGINT, bytes_out BIGINT, latency_ms DOUBLE, error VARCHAR,
          payload_sha256 VARCHAR, entry VARCHAR NOT NULL, leaf_hash VARCHAR NOT NULL
        );
        CREATE TABLE approvals (
          seq BIGINT NOT NULL, ts TIMESTAMP, node_id VARCHAR, hold_id VARCHAR, kind VARCHAR,
          requester VARCHAR, approvers VARCHAR[], rule_id VARCHAR, operation VARCHAR,
          collection VARCHAR, requested_at TIMESTAMP, decided_at TIMESTAMP, outcome VARCHAR,
          justification VARCHAR, request_hash VARCHAR, entry VARCHAR NOT NULL, leaf_hash VARCHAR NOT NULL
        );
        CREATE TABLE auth_failures (
          seq BIGINT NOT NULL, ts TIMESTAMP, node_id VARCHAR, request_id VARCHAR, client_addr VARCHAR,
          reason VARCHAR, claimed_subject VARCHAR, entry VARCHAR NOT NULL, leaf_hash VARCHAR NOT NULL
        );
        CREATE TABLE rule_versions (
          seq BIGINT NOT NULL, ts TIMESTAMP, node_id VARCHAR, path VARCHAR, sha256 VARCHAR,
          content VARCHAR, effective_from TIMESTAMP, effective_to TIMESTAMP,
          entry VARCHAR NOT NULL, leaf_hash VARCHAR NOT NULL
        );
        CREATE TABLE reviews (
          seq BIGINT NOT NULL, ts TIMESTAMP, node_id VARCHAR, packet_sha256 VARCHAR, reviewer VARCHAR,
          signed_at TIMESTAMP, period_from TIMESTAMP, period_to TIMESTAMP, notes VARCHAR,
          entry VARCHAR NOT NULL, leaf_hash VARCHAR NOT NULL
        );
        CREATE TABLE incidents (
          seq BIGINT NOT NULL, ts TIMESTAMP, node_id VARCHAR, kind VARCHAR, detail VARCHAR,
          entry VARCHAR NOT NULL, leaf_hash VARCHAR NOT NULL
        );
        -- Signed tree heads: not leaves (they sign the leaves). Copies also live in the witness.
        CREATE TABLE checkpoints (
          node_id VARCHAR, origin VARCHAR, size BIGINT, root VARCHAR, ts TIMESTAMP,
          key_id VARCHAR, signature VARCHAR
        );
        -- One row per sealed segment: its range and the tree frontier after its last leaf, so a
        -- restarting writer resumes the tree without rereading every leaf.
        CREATE TABLE segment_meta (
          node_id VARCHAR, first_seq BIGINT, last_seq BIGINT, frontier VARCHAR[], sealed_at TIMESTAMP
        );
        """,
    ),
    # The rules snapshot (profile, policy, masking) an event was decided and masked under.
    Migration("0002_event_rules_version", "ALTER TABLE events ADD COLUMN rules_version VARCHAR;"),
    Migration(
        "0003_intents",
        """
        -- Write-ahead intent: durable before a request is forwarded (who, what, decision, a PHI-free
        -- summary). The outcome is the flow's event, which names its intent in intent_seq; an intent
        -- no event names is a forwarded request whose outcome is unknown (the gateway stopped).
        CREATE TABLE intents (
          seq BIGINT NOT NULL, ts TIMESTAMP, node_id VARCHAR, request_id VARCHAR, session_id VARCHAR,
          subject VARCHAR, client_id VARCHAR, roles VARCHAR[], client_addr VARCHAR, user_agent VARCHAR,
          backend VARCHAR, operation VARCHAR, collection VARCHAR, method VARCHAR, path VARCHAR,
          request_summary JSON, decision VARCHAR, rule_ids VARCHAR[], hold_id VARCHAR, break_glass BOOLEAN,
          purpose VARCHAR, rules_version VARCHAR, entry VARCHAR NOT NULL, leaf_hash VARCHAR NOT NULL
        );
        ALTER TABLE events ADD COLUMN intent_seq BIGINT;
        """,
    ),
    Migration(
        "0004_configuration",
        """
        -- Configuration in force, as evidence: the gateway's settings and TLS certificates (recorded
        -- at start and on change), and who applied a rule file and why (`./run.sh rules apply`).
        -- kind: gateway_settings | tls_certificate | rule_change; name: the node, listener or rule file.
        CREATE TABLE configuration (
          seq BIGINT NOT NULL, ts TIMESTAMP, node_id VARCHAR, kind VARCHAR, name VARCHAR, content JSON,
          entry VARCHAR NOT NULL, leaf_hash VARCHAR NOT NULL
        );
        """,
    ),
)

# Record kinds a caller may append (`sink.record(kind, row)`) -> their table.
LEAF_TABLES: dict[str, str] = {
    "event": "events",
    "approval": "approvals",
    "auth_failure": "auth_failures",
    "rule_version": "rule_versions",
    "review": "reviews",
    "incident": "incidents",
    "intent": "intents",
    "configuration": "configuration",
}
# Columns the ledger fills itself, never taken from a caller's row.
LEDGER_COLUMNS = ("seq", "entry", "leaf_hash")


def apply_migrations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Run every migration this database has not run yet, in order, each in its own transaction."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
    done = {row[0] for row in con.execute("SELECT name FROM schema_migrations").fetchall()}
    ran: list[str] = []
    for migration in MIGRATIONS:
        if migration.name in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(migration.sql)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?)",
                [migration.name, dt.datetime.now(dt.UTC).replace(tzinfo=None)],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        ran.append(migration.name)
    return ran


_COLUMNS_CACHE: dict[str, list[tuple[str, str]]] = {}


def columns(table: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of `table` at the newest schema, computed once from the migrations."""
    if not _COLUMNS_CACHE:
        con = duckdb.connect(":memory:")
        try:
            apply_migrations(con)
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall():
                _COLUMNS_CACHE[name] = [
                    (c, t)
                    for c, t in con.execute(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = ? ORDER BY ordinal_position",
                        [name],
                    ).fetchall()
                ]
        finally:
            con.close()
    return _COLUMNS_CACHE[table]


def entry_columns(table: str) -> list[tuple[str, str]]:
    """The columns an entry carries: everything but `entry` and `leaf_hash`."""
    return [(c, t) for c, t in columns(table) if c not in ("entry", "leaf_hash")]
