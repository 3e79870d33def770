"""What a packet is made of: tables (with the data file behind each), sections, and the packet."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup


@dataclass(frozen=True, slots=True)
class Table:
    """One table of the packet.

    `rows` are the rows shown (at most the packet's row limit); `total` is how many the query
    produced, all of which are in `data_file` (CSV) and `json_file` (JSON array). Tables never hold
    more than the limit in Python: a million-event ledger is aggregated and limited in DuckDB.
    """

    id: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    total: int
    data_file: str
    json_file: str
    numeric: frozenset[int] = frozenset()  # column indexes to right-align
    empty_text: str = "None in this period."
    note: str | None = None
    # A register reviewed entry by entry (break-glass): every row is shown in the HTML and the PDF,
    # however many there are; a reviewer must never sign off rows they were not shown.
    complete: bool = False

    @property
    def truncated(self) -> bool:
        return self.total > len(self.rows)

    def limited(self, limit: int) -> Table:
        if self.complete or len(self.rows) <= limit:
            return self
        return Table(
            self.id, self.title, self.columns, self.rows[:limit], self.total, self.data_file,
            self.json_file, self.numeric, self.empty_text, self.note,
        )

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


@dataclass(frozen=True, slots=True)
class Fact:
    """A labelled figure shown in a section's summary list."""

    label: str
    value: Any


@dataclass(slots=True)
class Section:
    id: str  # HTML anchor, also used by the control table's "where in the packet"
    number: int
    title: str
    intro: str = ""
    facts: list[Fact] = field(default_factory=list)
    charts: list[Markup] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    # Status shown next to the title: None (informational), "ok", "attention".
    status: str | None = None
    status_text: str = ""
    html: Markup | None = None  # extra prepared markup (e.g. the masking matrix grid)
    # Tables written as data files but drawn differently (the matrix grid) or not at all.
    data_tables: list[Table] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"§{self.number} {self.title}"


@dataclass(frozen=True, slots=True)
class Control:
    cite: str
    requirement: str
    evidence: str
    where: tuple[Section, ...]
    status: str  # "evidence" | "attention" | "not-evidenced"


@dataclass(slots=True)
class Packet:
    period_label: str
    period_start: dt.datetime
    period_end: dt.datetime
    generated_at: dt.datetime
    software_version: str
    ledger: str
    sections: list[Section]
    controls: list[Control]
    summary: dict[str, Any]
    # Filled once the data files are hashed and signed (see reports.manifest).
    packet_sha256: str = ""
    signature: str = ""
    key_id: str = ""
    public_key: str = ""

    def tables(self) -> Sequence[Table]:
        return [t for s in self.sections for t in (*s.tables, *s.data_tables)]
