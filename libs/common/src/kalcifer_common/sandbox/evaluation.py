"""Evaluating one CEL expression over JSON variables, as a worker process does it (pure: no I/O).

Values come back as plain JSON: timestamps as RFC 3339 strings, durations as seconds with an `s` suffix (CEL's own
duration syntax), bytes as text when they are UTF-8 and base64 otherwise, optionals unwrapped.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

import cel
import orjson

from kalcifer_common.sandbox.errors import ExpressionFailed


@lru_cache(maxsize=1024)
def _program(expression: str) -> cel.Program:
    return cel.compile(expression)


def evaluate_here(expression: str, variables: Mapping[str, Any]) -> Any:
    """The JSON value of `expression` over `variables` in this process; raises `ExpressionFailed` with one line.

    Only a worker process (or a test) may call this directly: nothing bounds its time or memory here.
    """
    try:
        value = _program(expression).execute(dict(variables))
    except Exception as error:  # the CEL runtime raises ValueError, KeyError, TypeError, RuntimeError, ...
        raise ExpressionFailed(_one_line(error)) from error
    try:
        return orjson.loads(orjson.dumps(value, default=_json_default))
    except (TypeError, orjson.JSONEncodeError) as error:
        raise ExpressionFailed(f"the value cannot be stored as JSON: {error}") from error


def _json_default(value: Any) -> Any:
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, cel.OptionalValue):
        return value.value() if value.has_value() else None
    raise TypeError(f"{type(value).__name__} is not JSON")


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    name = type(error).__name__
    return f"{name}: {first}" if first and name not in ("ValueError", "RuntimeError") else first or name
