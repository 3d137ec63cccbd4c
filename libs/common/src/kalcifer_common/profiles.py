"""How a patch of customer attributes applies, once for the API (UpsertCustomer) and the engine (`update_profile`).

Top-level keys of the patch replace the current ones; a null value removes the key (SPEC 7). The engine applies
the same split in SQL (`attributes || set - removed`), so a profile edited by a flow and one edited through the
API end up the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class AttributePatch:
    """A patch split into the keys it sets and the keys it removes."""

    set: dict[str, Any]
    removed: list[str]

    @classmethod
    def of(cls, patch: Mapping[str, Any]) -> AttributePatch:
        """Split `patch`: a None (JSON null) value removes its key, any other value sets it."""
        return cls(
            set={key: value for key, value in patch.items() if value is not None},
            removed=[key for key, value in patch.items() if value is None],
        )

    def applied_to(self, current: Mapping[str, Any]) -> dict[str, Any]:
        """`current` with this patch applied."""
        merged = {**current, **self.set}
        for key in self.removed:
            merged.pop(key, None)
        return merged


def merged_attributes(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys of `patch` replace those of `current`; a None value removes the key."""
    return AttributePatch.of(patch).applied_to(current)
