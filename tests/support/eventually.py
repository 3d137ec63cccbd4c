"""The one way a test waits for an outcome: poll until it holds, or fail loudly with the last value seen.

A test never sleeps to let something happen; it names the outcome and waits for it, bounded. `eventually` is for
async tests, `eventually_sync` for sync ones (gRPC sync stubs, processes); both share `_Polling`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

_T = TypeVar("_T")


class _Polling:
    """Deadline and failure message of one wait."""

    def __init__(self, what: str, within: float) -> None:
        self.what = what
        self.within = within
        self.deadline = time.monotonic() + within

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def failure(self, last: object, error: BaseException | None) -> AssertionError:
        seen = f"last value seen: {last!r}" if error is None else f"last attempt raised {error!r}"
        return AssertionError(f"{self.what} did not happen within {self.within}s; {seen}")


@overload
async def eventually(
    probe: Callable[[], Awaitable[_T]],
    *,
    until: Callable[[_T], bool] = ...,
    within: float = ...,
    interval: float = ...,
    what: str = ...,
) -> _T: ...


@overload
async def eventually(
    probe: Callable[[], _T],
    *,
    until: Callable[[_T], bool] = ...,
    within: float = ...,
    interval: float = ...,
    what: str = ...,
) -> _T: ...


async def eventually(
    probe: Callable[[], _T | Awaitable[_T]],
    *,
    until: Callable[[_T], bool] = bool,
    within: float = 10.0,
    interval: float = 0.05,
    what: str = "the awaited outcome",
) -> _T:
    """Call `probe` (sync or async) until `until(value)` holds and return that value; AssertionError naming
    `what` and the last value (or exception) seen when `within` seconds pass first."""
    polling = _Polling(what, within)
    last: object = None
    while True:
        error: BaseException | None = None
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            if until(value):
                return value
            last = value
        except AssertionError as raised:
            error = raised
        if polling.expired():
            raise polling.failure(last, error)
        await asyncio.sleep(interval)


def eventually_sync(
    probe: Callable[[], _T],
    *,
    until: Callable[[_T], bool] = bool,
    within: float = 10.0,
    interval: float = 0.05,
    what: str = "the awaited outcome",
) -> _T:
    """`eventually` for sync tests: call `probe` until `until(value)` holds; fails loudly like `eventually`."""
    polling = _Polling(what, within)
    last: object = None
    while True:
        error: BaseException | None = None
        try:
            value = probe()
            if until(value):
                return value
            last = value
        except AssertionError as raised:
            error = raised
        if polling.expired():
            raise polling.failure(last, error)
        time.sleep(interval)
