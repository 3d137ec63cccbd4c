"""Regular expressions of node config schemas, matched by RE2 (linear time, bounded memory), never by `re`.

A tenant's pattern is also published (ListNodeTypes) to clients that validate configs with backtracking engines
(JavaScript, Python `re`), where a nested quantifier such as `(a+)+` takes exponential time. So a pattern must
both compile under RE2 and have no repetition that repeats nothing but another repetition. google-re2 ships no
type information, so it is imported here only.
"""

from __future__ import annotations

import re
import re._constants as sre_constants  # type: ignore[import-not-found]  # re's own parser: no stubs
import re._parser as sre_parser  # type: ignore[import-not-found]
from functools import lru_cache
from typing import Any, Final

import re2  # type: ignore[import-untyped]

# Memory RE2 may use to compile one pattern; a pattern needing more is refused.
MAX_PATTERN_MEMORY: Final = 8 * 1024 * 1024


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a tenant's bad pattern is an answer, not a line on the engine's stderr
    options.max_mem = MAX_PATTERN_MEMORY
    return options


_OPTIONS: Final = _options()


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as error:
        message = error.args[0] if error.args else error
        return message.decode(errors="replace") if isinstance(message, bytes) else str(message)


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` may not be used: RE2 cannot compile it (a backreference, lookaround) or it nests a
    quantifier inside a quantified group; None when it may."""
    compiled = _compiled(pattern)
    if isinstance(compiled, str):
        return f"is not supported ({compiled}); patterns are matched by RE2"
    if _nests_quantifiers(pattern):
        return (
            "nests a quantifier inside a quantified group (like '(a+)+'), "
            "which backtracking engines run in exponential time"
        )
    return None


_REPEATS: Final = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)


def _nests_quantifiers(pattern: str) -> bool:
    """Whether a repetition repeats nothing but another repetition (`(a+)+`, `(?:x*|y)*`): the classic shape that
    backtracking engines explore in exponential time. (`(/[a-z]+)*` is fine: the `/` fixes where each turn starts.)"""
    try:
        parsed = sre_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):  # RE2 accepted it; be conservative about what `re` cannot read
        return True
    pending: list[Any] = [parsed]  # iterative on purpose: nesting depth is the tenant's choice
    while pending:
        for op, value in pending.pop():
            if op in _REPEATS:
                _low, high, body = value
                if _repeats(high) and _only_a_repetition(body):
                    return True
                pending.append(body)
            elif op is sre_constants.SUBPATTERN:
                pending.append(value[-1])
            elif op is sre_constants.BRANCH:
                pending.extend(value[1])
            elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
                pending.append(value[1])
    return False


def _repeats(high: Any) -> bool:
    return bool(high is sre_constants.MAXREPEAT or high > 1)


def _only_a_repetition(body: Any) -> bool:
    """Whether `body` is one repetition (of more than once), possibly in groups, or alternatives one of which is."""
    items = list(body)
    while len(items) == 1 and items[0][0] is sre_constants.SUBPATTERN:
        items = list(items[0][1][-1])
    if len(items) != 1:
        return False
    op, value = items[0]
    if op in _REPEATS:
        return _repeats(value[1])
    if op is sre_constants.BRANCH:
        return any(_only_a_repetition(branch) for branch in value[1])
    return False


def pattern_matches(pattern: str, text: str) -> bool:
    """Whether `pattern` matches somewhere in `text` (JSON Schema's unanchored search); False for a refused one."""
    compiled = _compiled(pattern)
    return not isinstance(compiled, str) and compiled.search(text) is not None
