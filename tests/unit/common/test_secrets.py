"""Provider secrets at rest (SPEC 10): sealed under KALCIFER_SECRET_KEY, bound to their place, rotatable."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kalcifer_common.secrets import SecretBox, SecretKeyMissing, SecretUnreadable

KEY, OLD = "k" * 32, "o" * 40
BOX = SecretBox.from_settings(KEY, f" {OLD} ,")


@given(st.text(max_size=200))
def test_a_sealed_secret_opens_in_its_place_and_is_not_in_the_clear(value: str) -> None:
    sealed = BOX.seal(value, context="t/email/password")
    assert BOX.open(sealed, context="t/email/password") == value
    if len(value) >= 4:
        assert value.encode() not in base64.urlsafe_b64decode(sealed)


def test_the_same_secret_seals_differently_each_time() -> None:
    assert BOX.seal("hunter2", context="c") != BOX.seal("hunter2", context="c")


def test_a_secret_moved_to_another_place_or_tampered_with_does_not_open() -> None:
    sealed = BOX.seal("hunter2", context="tenant-a/email/password")
    with pytest.raises(SecretUnreadable, match="does not open here"):
        BOX.open(sealed, context="tenant-b/email/password")
    raw = bytearray(base64.urlsafe_b64decode(sealed))
    raw[-1] ^= 1
    with pytest.raises(SecretUnreadable):
        BOX.open(base64.urlsafe_b64encode(bytes(raw)).decode(), context="tenant-a/email/password")
    with pytest.raises(SecretUnreadable, match="malformed"):
        BOX.open("not base64 at all!", context="x")


def test_keys_rotate_previous_keys_open_and_the_current_one_seals() -> None:
    old_box = SecretBox([OLD])
    assert BOX.open(old_box.seal("v", context="c"), context="c") == "v"
    with pytest.raises(SecretUnreadable, match="neither KALCIFER_SECRET_KEY"):
        old_box.open(BOX.seal("v", context="c"), context="c")


def test_without_a_key_nothing_is_sealed_or_opened() -> None:
    empty = SecretBox.from_settings("", OLD)
    assert not empty.configured
    with pytest.raises(SecretKeyMissing):
        empty.seal("v", context="c")
    with pytest.raises(SecretKeyMissing):
        empty.open(BOX.seal("v", context="c"), context="c")


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 characters"):
        SecretBox(["too short"])


def test_fingerprints_tell_values_apart_under_the_key_only() -> None:
    assert BOX.fingerprint("a", context="c") == BOX.fingerprint("a", context="c")
    assert BOX.fingerprint("a", context="c") != BOX.fingerprint("b", context="c")
    assert BOX.fingerprint("a", context="c") != SecretBox([OLD]).fingerprint("a", context="c")
