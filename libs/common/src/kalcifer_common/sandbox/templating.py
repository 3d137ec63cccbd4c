"""Rendering Jinja2 templates over JSON variables, as a worker process does it (pure: no I/O).

Every string in a JSON value that holds template syntax (`{{`, `{%`, `{#`) is rendered with Jinja2's
`SandboxedEnvironment` (no attribute access to Python internals, bounded `range`) and `StrictUndefined` (a
variable the context lacks is an error, never an empty string): the templating of SPEC 7, used by `call_webhook`
for its `url`, `headers` and `body`, and by message templates (`kalcifer_common.templates`). Other values come
back as they are. Time and memory are bounded by the worker process this runs in, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from kalcifer_common.sandbox.errors import ExpressionFailed

_MARKERS = ("{{", "{%", "{#")

_environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def is_templated(value: str) -> bool:
    """Whether `value` holds template syntax; one that does not renders to itself."""
    return any(marker in value for marker in _MARKERS)


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Any:
    return _environment.from_string(source)


def render_here(value: Any, variables: Mapping[str, Any]) -> Any:
    """`value` with every templated string rendered over `variables`; raises `ExpressionFailed` with one line.

    Only a worker process (or a test) may call this directly: nothing bounds its time or memory here.
    """
    if isinstance(value, str):
        if not any(marker in value for marker in _MARKERS):
            return value
        try:
            return _compiled(value).render(dict(variables))
        except TemplateError as error:
            raise ExpressionFailed(f"template {value[:80]!r}: {error.message or type(error).__name__}") from error
        except (ArithmeticError, TypeError, ValueError) as error:
            raise ExpressionFailed(f"template {value[:80]!r}: {type(error).__name__}: {error}") from error
    if isinstance(value, list):
        return [render_here(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: render_here(item, variables) for key, item in value.items()}
    return value


def syntax_problems_here(templates: Mapping[str, Any]) -> dict[str, str]:
    """For each named template that does not compile, why (one line, with its line number); {} when all do.

    Compiling is what rendering starts with, so a template that passes here fails later only on its data. Like
    `render_here`, only a worker process (or a test) may call this directly.
    """
    problems: dict[str, str] = {}
    for name, source in templates.items():
        if not isinstance(source, str):
            problems[name] = "is not a string"
        elif any(marker in source for marker in _MARKERS):
            try:
                _compiled(source)
            except TemplateSyntaxError as error:
                problems[name] = f"line {error.lineno}: {error.message or 'syntax error'}"
            except TemplateError as error:
                problems[name] = error.message or type(error).__name__
            except RecursionError:
                problems[name] = "is nested too deeply"
    return problems
