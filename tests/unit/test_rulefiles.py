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


def test_a_non_utf8_rule_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_bytes(b"rules: []\n# caf\xe9\n")
    with pytest.raises(rulefiles.ConfigError) as err:
        rulefiles.watched(p, lambda path, doc: doc)
    assert str(p) in err.value.diagnostics() and "UTF-8" in err.value.diagnostics()


def test_each_file_reloads_on_its_own_and_a_bad_one_keeps_its_last_good_version(tmp_path: Path) -> None:
    good, bad = tmp_path / "a.yaml", tmp_path / "b.yaml"
    good.write_text("1\n")
    bad.write_text("1\n")
    wf_bad = rulefiles.watched(bad, lambda path, doc: doc)
    wf_good = rulefiles.watched(good, lambda path, doc: doc)
    rejected: list[tuple[str, str]] = []
    rulefiles.on_rejection(lambda path, why: rejected.append((path, why)))
    bad.write_bytes(b"\xff\xfe not utf-8")
    good.write_text("2\n")
    assert rulefiles.reload_all() == [wf_good]
    assert (wf_good.current, wf_bad.current) == (2, 1)
    assert str(bad) in rulefiles.rejected_edits() and [p for p, _ in rejected] == [str(bad)]


def test_a_compiler_crash_on_reload_keeps_the_last_good_rules(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("1\n")

    def compile_fn(path: Path, doc: object) -> int:
        if doc == 2:
            raise ZeroDivisionError("compiler bug")
        return int(doc)  # type: ignore[call-overload]

    wf = rulefiles.watched(p, compile_fn)
    p.write_text("2\n")
    assert rulefiles.reload_all() == [] and wf.current == 1
    assert "ZeroDivisionError" in (wf.last_error or "")


def test_the_snapshot_is_one_immutable_version_until_a_reload(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("1\n")
    b.write_text("10\n")
    wa = rulefiles.watched(a, lambda path, doc: doc)
    wb = rulefiles.watched(b, lambda path, doc: doc)
    first = rulefiles.current_snapshot()
    assert rulefiles.current_snapshot() is first
    assert (first.of(wa), first.of(wb)) == (1, 10)
    a.write_text("2\n")
    rulefiles.reload_all()
    second = rulefiles.current_snapshot()
    assert second.version != first.version
    assert (first.of(wa), second.of(wa), second.of(wb)) == (1, 2, 10)
    with pytest.raises(TypeError):
        second.compiled[wa.path] = 3  # type: ignore[index]


def test_a_flow_keeps_the_snapshot_its_first_hook_pinned(tmp_path: Path) -> None:
    from mitmproxy.test import tflow

    from addons.config.snapshot import pinned, rules_for

    p = tmp_path / "a.yaml"
    p.write_text("1\n")
    wf = rulefiles.watched(p, lambda path, doc: doc)
    flow = tflow.tflow()
    pinned_version = rules_for(flow).version
    p.write_text("2\n")
    rulefiles.reload_all()
    assert pinned(flow, wf) == 1 and rules_for(flow).version == pinned_version
    assert pinned(tflow.tflow(), wf) == 2


@pytest.mark.parametrize("score", ["high", 0, 1.5, True, None])
def test_a_bad_detect_pattern_score_names_file_rule_value_and_expectation(tmp_path: Path, score: object) -> None:
    from addons.config.masking_rules import compile_masking

    p = tmp_path / "masking.yaml"
    doc = {"version": 2, "roles": {"*": {"default": "redact"}},
           "detect": {"patterns": [{"type": "BADGE", "pattern": r"B-\d{5}", "score": score}]},
           "rules": [{"id": "r1", "roles": ["agent"], "fields": ["mrn"], "operator": "redact"}]}
    with pytest.raises(ConfigError) as err:
        compile_masking(p, doc)
    e = err.value
    assert (e.file, e.rule_id, e.value) == (str(p), "detect", score)
    assert "score" in e.expected and str(p) in e.diagnostics()


def test_rejected_edits_are_told_once_listed_and_cleared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rulefiles, "_rejection_listeners", [])
    p = tmp_path / "r.yaml"
    p.write_text("limit: 1\n")
    told: list[tuple[str, str]] = []
    rulefiles.on_rejection(lambda path, why: told.append((path, why)))
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
