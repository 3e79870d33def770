from __future__ import annotations

import base64

import pytest

from addons.phi.tokens import KeyRing, KeySetError, TokenError, load_keyring

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()


def test_round_trip_keeps_json_type_and_is_deterministic() -> None:
    ring = KeyRing.parse(f"k1={K1}")
    for value in ("1234567", 1234567, 0, "", False, None, "José Núñez"):
        tok = ring.tokenize(value, "mrn")
        assert tok.startswith("tok_mrn_k1_")
        assert ring.tokenize(value, "mrn") == tok
        assert ring.detokenize(tok) == value and type(ring.detokenize(tok)) is type(value)
    assert ring.tokenize("1234567", "mrn") != ring.tokenize(1234567, "mrn")


def test_type_is_bound_into_the_token() -> None:
    ring = KeyRing.parse(f"k1={K1}")
    tok = ring.tokenize("John Smith", "name")
    relabelled = tok.replace("tok_name_", "tok_mrn_")
    with pytest.raises(TokenError, match="does not verify"):
        ring.detokenize(relabelled)


def test_altered_token_fails() -> None:
    ring = KeyRing.parse(f"k1={K1}")
    tok = ring.tokenize("1234567", "mrn")
    bad = tok[:-1] + ("a" if tok[-1] != "a" else "b")
    with pytest.raises(TokenError):
        ring.detokenize(bad)


def test_rotation_active_key_tokenizes_all_keys_detokenize() -> None:
    old = KeyRing.parse(f"k1={K1}")
    old_token = old.tokenize("7654321", "mrn")
    ring = KeyRing.parse(f"k1={K1}, *k2={K2}")
    assert ring.active == "k2"
    assert ring.tokenize("7654321", "mrn").startswith("tok_mrn_k2_")
    assert ring.detokenize(old_token) == "7654321"
    other = KeyRing.parse(f"k9={K2}")
    with pytest.raises(TokenError, match="k1"):
        other.detokenize(old_token)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no keys"),
        ("k1", "without '='"),
        (f"k1={base64.b64encode(b'short').decode()}", "at least 32"),
        (f"k1={K1} k2={K2}", "none marked active"),
        (f"*k1={K1} *k2={K2}", "several keys marked"),
        (f"k1={K1} k1={K2}", "listed twice"),
        (f"K_1={K1}", "lower-case"),
    ],
)
def test_bad_key_sets_are_refused(text: str, message: str) -> None:
    with pytest.raises(KeySetError, match=message):
        KeyRing.parse(text)


def test_subject_ref_is_keyed_and_normalised() -> None:
    a = KeyRing.parse(f"k1={K1}")
    b = KeyRing.parse(f"k1={K2}")
    assert a.subject_ref("John  SMITH") == a.subject_ref("john smith")
    assert a.subject_ref("1234567") != b.subject_ref("1234567")  # not an unkeyed hash
    assert a.subject_ref("1234567").startswith("ref_k1_")
    assert "1234567" not in a.subject_ref("1234567")


def test_remembered_subject_refs_and_tokens_do_not_mix() -> None:
    ring = KeyRing.parse(f"k1={K1}")
    fresh = KeyRing.parse(f"k1={K1}")
    # A token of a field typed like the ref cache's entries, then the ref of the same value (and
    # the reverse): each cache answers only for its own kind, and a remembered ref is the HMAC one.
    token = ring.tokenize("1234567", "ref")
    ref = ring.subject_ref("1234567")
    assert ref.startswith("ref_k1_") and ref == fresh.subject_ref("1234567")
    assert ring.subject_ref("1234567") == ref and ring.tokenize("1234567", "ref") == token
    assert ring.subject_refs_all("1234567") == [ref]


def test_load_keyring_from_file_and_env(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "keys"
    f.write_text(f"*k1={K1}\nk0={K2}\n")
    assert load_keyring(str(f), None, {}).active == "k1"  # type: ignore[union-attr]
    assert load_keyring(None, "KEYS", {"KEYS": f"k3={K1}"}).active == "k3"  # type: ignore[union-attr]
    assert load_keyring(None, None, {}) is None
    with pytest.raises(KeySetError, match="not set"):
        load_keyring(None, "MISSING", {})
    with pytest.raises(KeySetError, match="cannot read"):
        load_keyring(str(tmp_path / "nope"), None, {})
