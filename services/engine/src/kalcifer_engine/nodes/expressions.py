"""CEL expressions (`custom_code`, event filters): compiled once, evaluated many times; errors in one line."""

from __future__ import annotations

import re
from functools import lru_cache

import cel

from kalcifer_engine.nodes.schema import quote

_ERROR_LINE = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")


@lru_cache(maxsize=2048)
def compile_expression(expression: str) -> cel.Program:
    """The compiled program of `expression`; raises `ValueError` when it does not compile."""
    return cel.compile(expression)


def expression_error(expression: str) -> str | None:
    """Why `expression` does not compile, in one line; None when it compiles."""
    try:
        compile_expression(expression)
    except ValueError as error:  # also UnicodeEncodeError, for lone surrogates
        first = _ERROR_LINE.search(str(error))
        if first is None:
            return f"{quote(expression)} is not a valid CEL expression"
        line, column, reason = first.groups()
        # The parser lists every token it would have accepted; operators need only what it found, and where.
        reason = reason.split(" expecting ", 1)[0]
        return f"{quote(expression)} is not a valid CEL expression ({reason} at {line}:{column})"
    return None
