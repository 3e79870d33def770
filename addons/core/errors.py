"""The one error contract for configuration: every load-time failure names the file, the rule id, the
bad value and what was expected, so an operator can fix it without reading code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Long values (a whole YAML document, a huge list) are cut in messages; the file still names them.
SHOWN_CHARS = 200


class ConfigError(ValueError):
    """A rule, option or file that cannot be used, said the way an operator can fix it."""

    def __init__(self, file: str | Path, rule_id: str | None, value: Any, expected: str) -> None:
        self.file = str(file)
        self.rule_id = rule_id
        self.value = value
        self.expected = expected
        super().__init__(self.diagnostics())

    def diagnostics(self) -> str:
        where = self.file + (f", rule {self.rule_id!r}" if self.rule_id else "")
        shown = repr(self.value)
        if len(shown) > SHOWN_CHARS:
            shown = shown[:SHOWN_CHARS] + "..."
        return f"{where}: bad value {shown}; expected {self.expected}"


def require(file: Path | str, rule_id: str | None, value: Any, ok: bool, expected: str) -> None:
    """Raise a ConfigError unless `ok`: the one-line form rule compilers use for every check."""
    if not ok:
        raise ConfigError(file, rule_id, value, expected)
