"""AIP-158 list calls as async iterators: ask for the next page only when the caller has used the last one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

_Item = TypeVar("_Item")

Page = tuple[Sequence[_Item], str]


async def paginate(fetch: Callable[[str], Awaitable[tuple[Sequence[_Item], str]]]) -> AsyncIterator[_Item]:
    """Every item of every page: `fetch(page_token)` returns one page's items and the next token ("" at the end)."""
    token = ""
    while True:
        items, token = await fetch(token)
        for item in items:
            yield item
        if not token:
            return
