"""Rule-file loading: clear errors, duplicate keys, reload keeps the last good rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from addons.config import rulefiles
from addons.config.rulefiles import ConfigError, WatchedFile, require


def compile_limit(path: Path, doc: Any) -> int:
    require(path, "limit-rule", doc, isinstance(doc, dict) and isinstance(doc.get("limit"), int),
            "a mapping with an integer 'limit'")
    return int(doc["limit"])


def test_config_error_names_file_rule_value_and_expectation() -> None:
    err = ConfigError("rules/policy.yaml", "clin-search", "sometimes", "one of allow, deny, hold")
    assert str(err) == ("rules/policy.yaml, rule 'clin-search': bad value 'sometimes'; "
                        "expected one of allow, deny, hold")


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("limit: 1\nlimit: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'limit'"):
        WatchedFile(p, compile_limit).load()


def test_bad_yaml_gives_its_position(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("limit: [1,\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        WatchedFile(p, compile_limit).load()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a readable file"):
        WatchedFile(tmp_path / "absent.yaml", compile_limit).load()


def test_reload_applies_good_edits_and_keeps_last_good(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("limit: 1\n")
    seen: list[str] = []
    rulefiles.on_version(lambda v: seen.append(v.sha256))
    wf = rulefiles.watched(p, compile_limit)
    assert wf.current == 1
    assert rulefiles.watched(p, compile_limit) is wf  # one instance per path
    p.write_text("limit: 2\n")
    assert rulefiles.reload_all() == [wf] and wf.current == 2
    p.write_text("limit: two\n")
    assert rulefiles.reload_all() == []
    assert wf.current == 2
    assert wf.last_error is not None and "integer 'limit'" in wf.last_error
    p.write_text("limit: 3\n")
    rulefiles.reload_all()
    assert wf.current == 3 and wf.last_error is None
    assert len(set(seen[-3:])) == 3  # every version in force was announced


def test_rejected_edits_are_told_once_listed_and_cleared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rulefiles, "_rejection_listeners", [])
    p = tmp_path / "r.yaml"
    p.write_text("limit: 1\n")
    told: list[tuple[str, str]] = []
    rulefiles.on_rejected(lambda path, why: told.append((path, why)))
    wf = rulefiles.watched(p, compile_limit)
    assert rulefiles.rejected_edits() == {}
    p.write_text("limit: two\n")
    rulefiles.reload_all()
    rulefiles.reload_all()  # the same bad edit again: one incident, not one per poll
    assert [path for path, _ in told] == [str(wf.path)] and "integer 'limit'" in told[0][1]
    assert list(rulefiles.rejected_edits()) == [str(wf.path)]
    p.write_text("limit: 1\n")  # undone: the file is the rules in force again
    rulefiles.reload_all()
    assert rulefiles.rejected_edits() == {} and wf.current == 1
    p.write_text("limit: [\n")  # a new bad edit is a new incident
    rulefiles.reload_all()
    assert len(told) == 2
