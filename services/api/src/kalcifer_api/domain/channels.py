"""Channel providers (SPEC 7): what a valid provider configuration is, and how its secrets are kept.

The rules of each provider's settings are `kalcifer_common.channels`, shared with the scheduler that sends with
them. Secret settings are sealed here, one by one, for their tenant, channel and name (`kalcifer_common.secrets`)
and stored apart from the plain settings; nothing in this service can open them again.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from kalcifer_common.channels import (
    CHANNELS,
    PROVIDER_DEFINITIONS,
    provider_violations,
    secret_context,
    split_secrets,
)
from kalcifer_common.errors import FailedPrecondition, FieldViolation, InvalidArgument
from kalcifer_common.secrets import SecretBox

SECRET_KEY_NOT_CONFIGURED: Final = "SECRET_KEY_NOT_CONFIGURED"


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """A stored channel provider; `secret_names` says which secrets are set, never what they are."""

    channel: str
    provider: str
    settings: dict[str, Any]
    secret_names: tuple[str, ...]
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class StoredSecrets:
    """What a channel has stored, as far as a new configuration may keep it: its provider and sealed secrets."""

    provider: str
    sealed: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ProviderChange:
    """A validated configuration: the plain settings and the sealed secrets to store."""

    channel: str
    provider: str
    settings: dict[str, Any]
    sealed: dict[str, str]


def channel_violations(channel: str, path: str = "channel") -> list[FieldViolation]:
    """A channel is one of `kalcifer_common.channels.CHANNELS`."""
    if channel not in CHANNELS:
        described = f"{channel!r} is not a channel" if channel else "is required"
        return [FieldViolation(path, f"{described} (one of {', '.join(CHANNELS)})")]
    return []


def require_secret_key(box: SecretBox, provider: str, settings: Mapping[str, Any]) -> None:
    """FAILED_PRECONDITION SECRET_KEY_NOT_CONFIGURED when a secret is given but there is no key to seal it with:
    a secret is never stored in the clear."""
    definition = PROVIDER_DEFINITIONS.get(provider)
    if definition is None or box.configured:
        return
    given = [name for name in sorted(definition.secret_names) if settings.get(name) not in (None, "")]
    if given:
        raise FailedPrecondition(
            SECRET_KEY_NOT_CONFIGURED,
            f"settings {', '.join(given)} are secret, and this API has no KALCIFER_SECRET_KEY to seal them with; "
            "the operator must set one",
            metadata={"settings": ",".join(given)},
        )


def secret_fingerprints(box: SecretBox, provider: str, settings: Mapping[str, Any]) -> dict[str, str]:
    """Keyed digests of the given secrets, by name: what an idempotency record may keep of them."""
    definition = PROVIDER_DEFINITIONS.get(provider)
    if definition is None or not box.configured:
        return {}
    return {
        name: box.fingerprint(value, context=f"request/{provider}/{name}")
        for name, value in settings.items()
        if name in definition.secret_names and isinstance(value, str) and value
    }


def provider_change(
    box: SecretBox,
    tenant_id: uuid.UUID,
    channel: str,
    provider: str,
    settings: Mapping[str, Any],
    stored: StoredSecrets | None,
) -> ProviderChange:
    """The configuration to store, or INVALID_ARGUMENT naming every problem.

    A secret left out of `settings` keeps its stored value when the provider stays the same (a secret set to null
    or "" is removed); a new provider starts without secrets.
    """
    kept = dict(stored.sealed) if stored is not None and stored.provider == provider else {}
    violations = provider_violations(channel, provider, settings, stored_secrets=frozenset(kept))
    if violations:
        raise InvalidArgument(violations)
    plain, secrets = split_secrets(provider, settings)
    sealed = {name: token for name, token in kept.items() if name in PROVIDER_DEFINITIONS[provider].secret_names}
    for name, value in secrets.items():
        sealed.pop(name, None)
        if value:
            sealed[name] = box.seal(value, context=secret_context(str(tenant_id), channel, name))
    return ProviderChange(channel=channel, provider=provider, settings=plain, sealed=sealed)
