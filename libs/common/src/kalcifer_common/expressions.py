"""What a tenant's CEL expression may look like (SPEC 10): one check, applied by the API and the engine at write time.

CEL's own parser accepts expressions that are cheap to write and ruinous to run: 20,000 chained additions compile
and then overflow the evaluator's stack (a segfault, not an exception), and six nested `map` macros over ten-item
lists build a billion-element result. So before compiling, an expression must fit three shape limits, read off
its tokens without running anything:

- its length (`MAX_EXPRESSION_LENGTH` characters), which bounds operator chains well below the crash;
- its bracket nesting (`MAX_NESTING`), which bounds the parser's and evaluator's recursion;
- its comprehension nesting (`MAX_COMPREHENSION_DEPTH` macros inside one another: `all`, `exists`, `exists_one`,
  `map`, `filter`), which bounds the polynomial degree of its running time in the size of the data.

These are constants, not settings: every API and engine replica must accept exactly the same expressions, or a
graph valid on one replica would fail on another. What remains data-dependent (a comprehension over a large list)
is bounded at run time by the engine's expression sandbox, which stops an evaluation over its time or memory
budget.
"""

from __future__ import annotations

import re
from typing import Final

import cel
import orjson

MAX_EXPRESSION_LENGTH: Final = 4096
MAX_NESTING: Final = 32
MAX_COMPREHENSION_DEPTH: Final = 2

COMPREHENSION_MACROS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})

_OPENERS: Final = {"(": ")", "[": "]", "{": "}"}
_CLOSERS: Final = frozenset(_OPENERS.values())
# One token at a time: string and bytes literals (any quoting, raw or not), comments, identifiers, anything else.
_TOKEN: Final = re.compile(
    r"""
    (?P<string>[rRbB]{0,2}(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
    | (?P<comment>//[^\n]*)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_CEL_ERROR: Final = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")
_MAX_SHOWN: Final = 60


def expression_problem(expression: str) -> str | None:
    """Why `expression` may not be stored as a CEL expression (in one line), or None when it may.

    Checks the shape limits first (cheap, and they keep the parser away from pathological input), then compiles.
    """
    if len(expression) > MAX_EXPRESSION_LENGTH:
        return f"is {len(expression)} characters long; a CEL expression may have at most {MAX_EXPRESSION_LENGTH}"
    shape_problem = _shape_problem(expression)
    if shape_problem is not None:
        return shape_problem
    try:
        cel.compile(expression)
    except ValueError as error:  # also UnicodeEncodeError, for lone surrogates
        first = _CEL_ERROR.search(str(error))
        if first is None:
            return f"{_shown(expression)} is not a valid CEL expression"
        line, column, reason = first.groups()
        # The parser lists every token it would have accepted; operators need only what it found, and where.
        reason = reason.split(" expecting ", 1)[0]
        return f"{_shown(expression)} is not a valid CEL expression ({reason} at {line}:{column})"
    return None


def _shape_problem(expression: str) -> str | None:
    """The first shape limit `expression` breaks, or None (unbalanced brackets are left to the parser)."""
    # Each open bracket, and whether it opened a comprehension macro's argument list.
    open_brackets: list[bool] = []
    comprehensions = 0
    previous: list[str] = []  # the last two significant tokens
    for match in _TOKEN.finditer(expression):
        kind = match.lastgroup
        token = match.group()
        if kind in ("space", "comment"):
            continue
        if token in _OPENERS:
            is_macro = (
                token == "(" and len(previous) == 2 and previous[0] == "." and previous[1] in COMPREHENSION_MACROS
            )
            open_brackets.append(is_macro)
            comprehensions += is_macro
            if len(open_brackets) > MAX_NESTING:
                return f"nests brackets {len(open_brackets)} deep at offset {match.start()}; at most {MAX_NESTING}"
            if comprehensions > MAX_COMPREHENSION_DEPTH:
                return (
                    f"nests {comprehensions} comprehension macros (all, exists, exists_one, map, filter) inside one "
                    f"another at offset {match.start()}; at most {MAX_COMPREHENSION_DEPTH}"
                )
        elif token in _CLOSERS and open_brackets:
            comprehensions -= open_brackets.pop()
        previous = [*previous[-1:], token]
    return None


def _shown(expression: str) -> str:
    """`expression` quoted for a message, cut short when long."""
    text = orjson.dumps(expression).decode(errors="replace") if expression.isprintable() else repr(expression)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"
