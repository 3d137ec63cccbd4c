"""Rules for starting instances on demand (TriggerFlow) or from an inbound webhook (TriggerWebhook).

The engine decides whether a start is allowed (flow status, re-entry, entry node); the API refuses what is
malformed before it costs an engine call, and bounds what it forwards.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

from kalcifer_common.errors import FieldViolation

MAX_NODE_ID_LENGTH = 200
MAX_WEBHOOK_PATH_LENGTH = 200
# The same rule the engine's `webhook_entry` schema applies to `webhook_path`: lower-case segments without empty
# parts, so a path that no node can carry is refused instead of silently matching nothing.
WEBHOOK_PATH_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*")


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """An ACTIVE flow whose active version has a `webhook_entry` node on the called path: start there."""

    flow_id: uuid.UUID
    entry_node_id: str


def entry_node_id_violations(value: str, field: str) -> list[FieldViolation]:
    """Optional; whether it names a trigger node of the active version is the engine's call."""
    if len(value) > MAX_NODE_ID_LENGTH:
        return [FieldViolation(field, f"must be at most {MAX_NODE_ID_LENGTH} characters")]
    return []


def webhook_path_violations(value: str, field: str) -> list[FieldViolation]:
    """Required, bounded, and shaped like the paths `webhook_entry` nodes may configure."""
    if not value:
        return [FieldViolation(field, "is required")]
    if len(value) > MAX_WEBHOOK_PATH_LENGTH:
        return [FieldViolation(field, f"must be at most {MAX_WEBHOOK_PATH_LENGTH} characters")]
    if not WEBHOOK_PATH_PATTERN.fullmatch(value):
        return [
            FieldViolation(
                field, f"{value!r} is not a webhook path (lower-case segments of a-z, 0-9, '_' or '-', split by '/')"
            )
        ]
    return []


def webhook_request_id(request_id: str, flow_id: uuid.UUID) -> str:
    """The engine-side idempotency key of one flow started by a TriggerWebhook call with `request_id`.

    One webhook call fans out to several StartInstance calls; deriving a key per flow lets a retry get back the
    instance each flow started the first time (and start the ones a failure interrupted) without the API holding
    anything itself. The caller's id is hashed so the derived key stays within the request id bound whatever its
    length. Empty stays empty (not idempotent)."""
    if not request_id:
        return ""
    return f"webhook:{flow_id}:{hashlib.sha256(request_id.encode()).hexdigest()}"
