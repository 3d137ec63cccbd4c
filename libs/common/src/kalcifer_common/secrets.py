"""Secrets at rest (SPEC 10): tenants' provider secrets sealed with a key derived from `KALCIFER_SECRET_KEY`.

Each secret is sealed on its own with AES-256-GCM (`cryptography`), with the place it belongs to (tenant, channel,
setting name) as associated data: a sealed value copied to another row or setting does not open. The AES key is
derived from the configured key with HKDF-SHA256, so any high-entropy string of at least 32 characters will do
(e.g. `openssl rand -base64 32`). Every sealed value names the key that sealed it (a short id derived from the
key, never the key), so keys can be rotated: put the new key in `KALCIFER_SECRET_KEY` and the old one in
`KALCIFER_PREVIOUS_SECRET_KEYS`; values sealed with either open, new ones are sealed with the new key, and
setting a provider again re-seals its secrets.

The API only seals (and fingerprints, see `fingerprint`); the scheduler only opens. Without a key nothing can
be sealed: the API refuses to store a secret rather than store it in the clear.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_KEY_LENGTH: Final = 32
_FORMAT: Final = b"\x01"
_KEY_ID_BYTES: Final = 4
_NONCE_BYTES: Final = 12


class SecretKeyMissing(Exception):
    """No `KALCIFER_SECRET_KEY` is configured, so nothing can be sealed or opened."""


class SecretUnreadable(Exception):
    """A sealed value that does not open: sealed with a key that is not configured, moved, or tampered with."""


def _derive(key: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"kalcifer", info=purpose).derive(key.encode())


class _Key:
    def __init__(self, key: str) -> None:
        self.aead = AESGCM(_derive(key, b"secrets/aes-256-gcm/v1"))
        self.id = _derive(key, b"secrets/key-id/v1")[:_KEY_ID_BYTES]
        self.mac = _derive(key, b"secrets/fingerprint/v1")


class SecretBox:
    """Seals and opens secrets under the configured keys: the first seals, every one opens."""

    def __init__(self, keys: Sequence[str]) -> None:
        for key in keys:
            if len(key) < MIN_KEY_LENGTH:
                raise ValueError(f"a secret key must be at least {MIN_KEY_LENGTH} characters")
        self._keys = [_Key(key) for key in keys]

    @classmethod
    def from_settings(cls, current: str, previous: str = "") -> SecretBox:
        """The box of `KALCIFER_SECRET_KEY` and the comma-separated `KALCIFER_PREVIOUS_SECRET_KEYS` (which only
        open; they are ignored without a current key)."""
        if not current:
            return cls([])
        return cls([current, *(key.strip() for key in previous.split(",") if key.strip())])

    @property
    def configured(self) -> bool:
        """Whether a key is configured (secrets can be sealed and opened)."""
        return bool(self._keys)

    def _current(self) -> _Key:
        if not self._keys:
            raise SecretKeyMissing("KALCIFER_SECRET_KEY is not set")
        return self._keys[0]

    def seal(self, value: str, *, context: str) -> str:
        """`value` sealed for `context`, as URL-safe base64 text (for a JSON column)."""
        key = self._current()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = key.aead.encrypt(nonce, value.encode(), context.encode())
        return base64.urlsafe_b64encode(_FORMAT + key.id + nonce + sealed).decode("ascii")

    def open(self, token: str, *, context: str) -> str:
        """The value `token` sealed for `context`; `SecretKeyMissing` or `SecretUnreadable` otherwise."""
        if not self._keys:
            raise SecretKeyMissing("KALCIFER_SECRET_KEY is not set")
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError) as error:
            raise SecretUnreadable("a sealed secret is malformed") from error
        head = len(_FORMAT) + _KEY_ID_BYTES
        if len(raw) < head + _NONCE_BYTES or raw[: len(_FORMAT)] != _FORMAT:
            raise SecretUnreadable("a sealed secret is malformed")
        key_id, nonce, sealed = raw[len(_FORMAT) : head], raw[head : head + _NONCE_BYTES], raw[head + _NONCE_BYTES :]
        key = next((key for key in self._keys if hmac.compare_digest(key.id, key_id)), None)
        if key is None:
            raise SecretUnreadable(
                "a secret was sealed with a key that is neither KALCIFER_SECRET_KEY "
                "nor one of KALCIFER_PREVIOUS_SECRET_KEYS"
            )
        try:
            return key.aead.decrypt(nonce, sealed, context.encode()).decode()
        except (InvalidTag, UnicodeDecodeError) as error:
            raise SecretUnreadable("a sealed secret does not open here (moved or tampered with)") from error

    def fingerprint(self, value: str, *, context: str) -> str:
        """A keyed digest of `value` (HMAC-SHA256 under a key derived from the current key): tells two values apart
        without storing anything a dictionary attack on a leaked database could use (a plain hash would)."""
        key = self._current()
        return hmac.new(key.mac, context.encode() + b"\x00" + value.encode(), hashlib.sha256).hexdigest()
