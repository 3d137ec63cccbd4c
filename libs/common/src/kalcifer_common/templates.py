"""Message templates (SPEC 7): what a tenant may store, and rendering a message from a template.

A template has a `subject`, a `body` (plain text) and an `html_body`, each a Jinja2 template rendered sandboxed
with strict undefined variables. Tenants' templates are hostile, so they are compiled and rendered only in an
`ExpressionSandbox` worker (time and memory budget, never in the calling process). The API (syntax check on
create and update, `RenderTemplate` previews) and the scheduler (at send time) render through this one module,
so a preview renders exactly as the send will.

What a template sees at send time (`send_variables`): the instance context as the channel node saw it (the
trigger context at its root, `customer`, `event`, `accumulated`, `_participant_id`, ...), plus `data` (the
node's own `data`) and `participant_id`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kalcifer_common.sandbox import ExpressionFailed, ExpressionSandbox
from kalcifer_common.sandbox.templating import is_templated

# The parts of a template, in the order they are rendered.
TEMPLATE_PARTS: Final = ("subject", "body", "html_body")
# Template ids are chosen by the tenant and named by channel nodes' `template_id`.
TEMPLATE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_TEMPLATE_ID_LENGTH: Final = 128
# What a template part may hold (UTF-8 bytes) and what it may render to.
MAX_PART_BYTES: Final[Mapping[str, int]] = {"subject": 2 * 1024, "body": 64 * 1024, "html_body": 256 * 1024}
MAX_RENDERED_BYTES: Final = 1024 * 1024
# Key of the delivery payload that holds the variables the template is rendered over at send time.
VARIABLES_KEY: Final = "variables"

_LINE_BREAKS = re.compile(r"[\r\n]+")


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """A rendered template: the subject is one line; an empty part renders to ""."""

    subject: str
    body: str
    html_body: str


class TemplateRenderError(ValueError):
    """A part of a template that did not render (an undefined variable, a syntax error, a runaway, too large)."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(f"{part}: {reason}")
        self.part = part
        self.reason = reason


def part_size_problem(part: str, source: str) -> str | None:
    """Why `source` is too large for `part`, or None."""
    size = len(source.encode())
    limit = MAX_PART_BYTES[part]
    return f"is {size} bytes; at most {limit}" if size > limit else None


async def syntax_problems(sandbox: ExpressionSandbox, parts: Mapping[str, str]) -> dict[str, str]:
    """For each part that does not compile, why; {} when every part does. Compiled in the sandbox."""
    return await sandbox.check_templates({part: source for part, source in parts.items() if source})


async def render_message(
    sandbox: ExpressionSandbox, parts: Mapping[str, str], variables: Mapping[str, Any]
) -> RenderedMessage:
    """Render every non-empty part over `variables` in the sandbox.

    Raises `TemplateRenderError` naming the first part that failed (the same data fails it again: a send does not
    retry it) and `kalcifer_common.sandbox.SandboxUnavailable` when no worker could be had (worth retrying).
    """
    rendered: dict[str, str] = {}
    for part in TEMPLATE_PARTS:
        source = parts.get(part) or ""
        if not is_templated(source):
            rendered[part] = source  # plain text renders to itself: no worker round trip
            continue
        try:
            value = await sandbox.render(source, variables)
        except ExpressionFailed as error:
            raise TemplateRenderError(part, str(error)) from error
        text = value if isinstance(value, str) else str(value)
        size = len(text.encode())
        if size > MAX_RENDERED_BYTES:
            raise TemplateRenderError(part, f"renders to {size} bytes; at most {MAX_RENDERED_BYTES}")
        rendered[part] = text
    # A subject is one header line: line breaks (from the template or its data) would end the header.
    subject = _LINE_BREAKS.sub(" ", rendered["subject"]).strip()
    return RenderedMessage(subject=subject, body=rendered["body"], html_body=rendered["html_body"])


def send_variables(context: Mapping[str, Any], data: Mapping[str, Any], participant_id: str) -> dict[str, Any]:
    """What a template is rendered over at send time: the instance context, its `data` and `participant_id`."""
    return {**context, "data": dict(data), "participant_id": participant_id}
