"""Message templates: what a valid template is, and previews (SPEC 7). Rendering itself is
`kalcifer_common.templates`, shared with the scheduler, so a preview renders exactly as a send.

Violations name the field inside the `Template` message (`id`, `channel`, `body`), every problem at once; a part
that does not compile names its line. Templates are hostile: they are compiled and rendered only in the API's
expression sandbox (worker processes with a time and memory budget), never in the API's own process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson
from kalcifer_common.channels import CHANNELS
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.sandbox import ExpressionSandbox
from kalcifer_common.templates import (
    MAX_TEMPLATE_ID_LENGTH,
    TEMPLATE_ID,
    TEMPLATE_PARTS,
    RenderedMessage,
    TemplateRenderError,
    part_size_problem,
    render_message,
    syntax_problems,
)

from kalcifer_api.domain.payloads import nesting_violations
from kalcifer_api.domain.segments import description_violations

# The fields UpdateTemplate may change (id and channel are immutable: flows name the template for its channel).
TEMPLATE_FIELDS: Final = ("subject", "body", "html_body", "description")
MAX_TEMPLATES_PER_TENANT: Final = 1000
QUOTA_REASON: Final = "TEMPLATE_QUOTA_EXCEEDED"
TEMPLATE_IN_USE: Final = "TEMPLATE_IN_USE"
MAX_PREVIEW_CONTEXT_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class TemplateDefinition:
    """The user-editable part of a template, validated (every part compiles)."""

    subject: str
    body: str
    html_body: str
    description: str

    def parts(self) -> dict[str, str]:
        """subject, body and html_body by name."""
        return {"subject": self.subject, "body": self.body, "html_body": self.html_body}


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    """A stored template."""

    id: str
    channel: str
    subject: str
    body: str
    html_body: str
    description: str
    revision: int
    create_time: datetime
    update_time: datetime

    def parts(self) -> dict[str, str]:
        """subject, body and html_body by name."""
        return {"subject": self.subject, "body": self.body, "html_body": self.html_body}


def template_id_violations(value: str, path: str = "id") -> list[FieldViolation]:
    """Template ids: 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit."""
    if not value:
        return [FieldViolation(path, "is required")]
    if len(value) > MAX_TEMPLATE_ID_LENGTH or not TEMPLATE_ID.fullmatch(value):
        return [
            FieldViolation(
                path,
                f"{value[:80]!r} is not a template id: 1 to {MAX_TEMPLATE_ID_LENGTH} letters, digits, '_', '.' or "
                "'-', starting with a letter or digit",
            )
        ]
    return []


def channel_violations(value: str, path: str = "channel", *, required: bool = True) -> list[FieldViolation]:
    """A channel is one of `kalcifer_common.channels.CHANNELS`."""
    if not value:
        return [FieldViolation(path, f"is required (one of {', '.join(CHANNELS)})")] if required else []
    if value not in CHANNELS:
        return [FieldViolation(path, f"{value!r} is not a channel (one of {', '.join(CHANNELS)})")]
    return []


async def validated_definition(
    sandbox: ExpressionSandbox,
    *,
    subject: str,
    body: str,
    html_body: str,
    description: str,
    fields: frozenset[str] | None = None,
    also: list[FieldViolation] | None = None,
) -> TemplateDefinition:
    """Check the fields being written (all of them by default): sizes first, then that every part compiles (in
    the sandbox); INVALID_ARGUMENT with every problem, `also` (the caller's own findings) included."""
    checked = frozenset(TEMPLATE_FIELDS) if fields is None else fields
    definition = TemplateDefinition(subject=subject, body=body, html_body=html_body, description=description)
    violations = list(also or [])
    if "description" in checked:
        violations += description_violations(description)
    to_compile: dict[str, str] = {}
    for part, source in definition.parts().items():
        if part not in checked:
            continue
        problem = part_size_problem(part, source)
        if problem:
            violations.append(FieldViolation(part, problem))
        else:
            to_compile[part] = source
    if to_compile:
        problems = await syntax_problems(sandbox, to_compile)
        violations += [
            FieldViolation(part, f"does not compile: {problems[part]}") for part in TEMPLATE_PARTS if part in problems
        ]
    if violations:
        raise InvalidArgument(violations)
    return definition


def preview_context_violations(context: Mapping[str, Any], path: str = "context") -> list[FieldViolation]:
    """A preview's variables are bounded like a trigger's context."""
    size = len(orjson.dumps(dict(context)))
    if size > MAX_PREVIEW_CONTEXT_BYTES:
        return [FieldViolation(path, f"is {size} bytes as JSON; at most {MAX_PREVIEW_CONTEXT_BYTES}")]
    return nesting_violations(context, path)


async def preview(sandbox: ExpressionSandbox, parts: Mapping[str, str], context: Mapping[str, Any]) -> RenderedMessage:
    """Render `parts` over `context` as a send would; a part that fails is INVALID_ARGUMENT naming it and why."""
    try:
        return await render_message(sandbox, parts, context)
    except TemplateRenderError as error:
        raise InvalidArgument.single(error.part, f"does not render: {error.reason}") from None
