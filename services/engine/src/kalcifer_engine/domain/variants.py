"""Weighted A/B variants (the `ab_split` node): which variant a participant gets the first time, from a seed.

Pure: the same seed and weights always give the same variant, so a first pick is reproducible; the runtime
records it (`ab_assignments`) so later visits keep it even if the weights change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def weighted_choice(variants: Sequence[tuple[str, float]], seed: str) -> str:
    """A variant picked by weight, deterministically from `seed` (so the first pick is reproducible too)."""
    total = sum(max(weight, 0.0) for _, weight in variants)
    if not variants:
        raise ValueError("no variants to choose from")
    if total <= 0:
        return variants[0][0]
    point = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") / 2**64 * total
    for key, weight in variants:
        point -= max(weight, 0.0)
        if point < 0:
            return key
    return variants[-1][0]
