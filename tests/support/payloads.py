"""JSON payloads of a chosen nesting depth, for the tests of the bound on it (`kalcifer_api.domain.payloads`)."""

from __future__ import annotations

from typing import Any


def nested(levels: int, *, arrays: bool = False) -> dict[str, Any]:
    """An object whose containers nest exactly `levels` deep: `{"d": {"d": {}}}` for 3, or with `arrays` an object
    holding arrays in arrays, `{"d": [[]]}`."""
    if levels <= 1:
        return {}
    inner: Any = [] if arrays else {}
    for _ in range(levels - 2):
        inner = [inner] if arrays else {"d": inner}
    return {"d": inner}
