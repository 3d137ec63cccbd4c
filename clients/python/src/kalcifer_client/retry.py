"""How the client retries a call that failed with `Unavailable` or `RateLimited`."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """Attempts and backoff of one call; every attempt stays within the call's one deadline.

    The n-th retry waits a random time up to `initial_backoff * multiplier**(n-1)` (capped at `max_backoff`), or,
    when the server said when to come back (`RetryInfo`, sent with RATE_LIMITED), that long plus up to 10% so that
    clients told the same time do not return at once. A wait that would end past the call's deadline is not
    taken: the error is raised instead.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must not be negative and multiplier must be at least 1")

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `retry` (1 for the first), given the server's RetryInfo."""
        if retry_after is not None:
            return retry_after * (1 + random.uniform(0, 0.1))
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return random.uniform(0, ceiling)


NO_RETRIES = RetryPolicy(max_attempts=1)
