"""Runtime node types backed by a tenant's HTTPS webhook (SPEC 6.7).

A tenant registers one in the database, so every engine replica sees it; its configs are validated like a
built-in's, against the JSON Schema it declared. Calling the webhook is built with execution.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from kalcifer_common.errors import FieldViolation, InvalidArgument

from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import quote, schema_errors

KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_TIMEOUT_MS = 30_000
# Plain http only to the machine itself: tests and local development, never across a network.
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class WebhookNodeType(NodeType):
    """A tenant-defined node type: the engine posts {config, context} to `endpoint_url` and reads the result."""

    def __init__(
        self,
        *,
        key: str,
        category: NodeCategory | str,
        description: str,
        config_schema: Mapping[str, Any],
        branches: Iterable[str] = (),
        resumable: bool = False,
        endpoint_url: str,
        timeout_ms: int = 10_000,
    ) -> None:
        """Check the definition; raises `InvalidArgument` naming every bad field (`key`, `config_schema`, ...)."""
        declared_branches = tuple(branches)
        violations = definition_violations(
            key=key,
            category=category,
            config_schema=config_schema,
            branches=declared_branches,
            endpoint_url=endpoint_url,
            timeout_ms=timeout_ms,
        )
        if violations:
            raise InvalidArgument(violations)
        self.key = key
        self.category = NodeCategory(category)
        self.description = description
        self.config_schema = dict(config_schema)
        self.resumable = resumable
        self.endpoint_url = endpoint_url
        self.timeout_ms = timeout_ms
        self._branches = declared_branches

    def branches(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """The branches the tenant declared."""
        return self._branches


def definition_violations(
    *,
    key: str,
    category: NodeCategory | str,
    config_schema: Mapping[str, Any],
    branches: tuple[str, ...],
    endpoint_url: str,
    timeout_ms: int,
) -> list[FieldViolation]:
    """Every problem with a webhook node type's definition, by field."""
    found: list[FieldViolation] = []
    if not KEY_PATTERN.fullmatch(key):
        found.append(FieldViolation("key", f"{quote(key)} must match {KEY_PATTERN.pattern} (e.g. 'score_lead')"))
    categories = [c.value for c in NodeCategory if c is not NodeCategory.TRIGGER]
    if category not in categories:
        # Triggers are started by ingestion (events, segments, inbound webhooks), never run, so none is external.
        found.append(FieldViolation("category", f"must be one of {', '.join(categories)}; got {quote(category)}"))
    found.extend(FieldViolation("config_schema", message) for message in schema_errors(config_schema))
    if any(not isinstance(b, str) or not b for b in branches):
        found.append(FieldViolation("branches", "branch keys must be non-empty strings"))
    elif len(set(branches)) != len(branches):
        found.append(FieldViolation("branches", "branch keys must be unique"))
    if category == NodeCategory.END and branches:
        found.append(FieldViolation("branches", "an end node ends the instance; it cannot have branches"))
    url = urlsplit(endpoint_url)
    if not url.hostname or not (url.scheme == "https" or (url.scheme == "http" and url.hostname in _LOOPBACK_HOSTS)):
        found.append(FieldViolation("endpoint_url", f"{quote(endpoint_url)} must be an https:// URL"))
    if not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
        found.append(FieldViolation("timeout_ms", f"must be between 1 and {MAX_TIMEOUT_MS}; got {timeout_ms}"))
    return found
