"""Runtime node types backed by a tenant's HTTPS webhook (SPEC 6.7).

A tenant registers one in the database, so every engine replica sees it; its configs are validated like a
built-in's, against the JSON Schema it declared. `execute` / `resume` park on a call to the endpoint (SPEC 6.10:
the scheduler makes it out of the run, and resumes the node with trigger `call` and the answer), and the answer's
JSON is mapped onto the result classes (`answer_result`). A type that answers `waiting` is called again, with the
trigger and its data, when that wait resolves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.expressions import expression_problem
from kalcifer_common.outbound import CALL_TRIGGER, CallAnswer, CallSpec

from kalcifer_engine.nodes.base import Branched, Completed, Failed, NodeCategory, NodeResult, NodeType, Waiting
from kalcifer_engine.nodes.context import NodeContext
from kalcifer_engine.nodes.schema import quote, schema_errors

KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_TIMEOUT_MS = 30_000


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

    async def execute(self, config: Mapping[str, Any], ctx: NodeContext) -> NodeResult:
        """Park on a POST of {config, context, node_id, participant_id} to the endpoint."""
        return self._call(config, ctx, None, None)

    async def resume(
        self, config: Mapping[str, Any], ctx: NodeContext, trigger: str, data: Mapping[str, Any]
    ) -> NodeResult:
        """The call's answer (trigger `call`) mapped to a result; any other trigger (the type answered `waiting`
        and that wait resolved) parks on a new call with `trigger` and `data` (the event) added to the body."""
        if trigger != CALL_TRIGGER:
            return self._call(config, ctx, trigger, data)
        answer = CallAnswer.from_data(data)
        if not answer.ok:
            return Failed(f"node type {self.key!r}: the call failed after {answer.attempts} attempt(s): {answer.error}")
        try:
            body = answer.json_body()
        except ValueError as error:
            return Failed(f"node type {self.key!r}: {error}")
        return answer_result(self.key, self._branches, body)

    def _call(
        self, config: Mapping[str, Any], ctx: NodeContext, trigger: str | None, data: Mapping[str, Any] | None
    ) -> NodeResult:
        body: dict[str, Any] = {
            "config": dict(config),
            "context": dict(ctx.data),
            "node_id": ctx.node_id,
            "participant_id": ctx.participant_id,
        }
        if trigger is not None:
            body["trigger"] = trigger
            body["data"] = dict(data or {})
        spec = CallSpec(self.endpoint_url, "POST", {}, body, self.timeout_ms / 1000, https_only=True)
        return Waiting(kind="call", call=spec)


def answer_result(key: str, branches: tuple[str, ...], answer: object) -> NodeResult:
    """Map a webhook's JSON answer to a result; anything malformed is a non-retryable `Failed` saying what."""

    def bad(why: str) -> Failed:
        return Failed(f"node type {key!r} answered badly: {why}")

    if not isinstance(answer, Mapping):
        return bad("the answer must be a JSON object")
    output = answer.get("output", {})
    if not isinstance(output, Mapping):
        return bad("'output' must be an object")
    output = dict(output)
    result = answer.get("result")
    if result == "completed":
        return Completed(output)
    if result == "branched":
        branch = answer.get("branch")
        if not isinstance(branch, str) or branch not in branches:
            return bad(f"branch {branch!r} is not one of {list(branches)}")
        return Branched(branch, output)
    if result == "failed":
        reason = answer.get("reason")
        return Failed(f"node type {key!r} failed: {reason if isinstance(reason, str) and reason else 'no reason'}")
    if result == "waiting":
        return _waiting(answer, output, bad)
    return bad(f"'result' must be completed, branched, waiting or failed; got {result!r}")


def _waiting(answer: Mapping[str, Any], output: dict[str, Any], bad: Callable[[str], Failed]) -> NodeResult:
    fire_time = None
    raw_time = answer.get("fire_time")
    if raw_time is not None:
        try:
            fire_time = datetime.fromisoformat(raw_time) if isinstance(raw_time, str) else None
        except ValueError:
            fire_time = None
        if fire_time is None or fire_time.utcoffset() is None:
            return bad(f"'fire_time' must be an ISO 8601 time with offset; got {raw_time!r}")
    event_type = answer.get("event_type")
    if event_type is not None and (not isinstance(event_type, str) or not event_type):
        return bad("'event_type' must be a non-empty string")
    if event_type is None and fire_time is None:
        return bad("a waiting answer needs 'fire_time' or 'event_type'")
    event_filter = answer.get("event_filter")
    if event_filter is not None and not isinstance(event_filter, str):
        return bad("'event_filter' must be a string")
    if event_filter:
        problem = expression_problem(event_filter)
        if problem is not None:
            return bad(f"'event_filter' {problem}")
    if event_type is not None:
        return Waiting(
            kind="event", event_type=event_type, event_filter=event_filter, fire_time=fire_time, output=output
        )
    return Waiting(kind="timer", fire_time=fire_time, output=output)


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
    # Plain http is refused at registration unless OUTBOUND_ALLOWLIST lists the destination (`registry_rpcs`),
    # and again when the call is made (`CallSpec.https_only`), so a narrowed allowlist applies to stored types too.
    url = urlsplit(endpoint_url)
    if not url.hostname or url.scheme not in ("http", "https"):
        found.append(FieldViolation("endpoint_url", f"{quote(endpoint_url)} must be an https:// URL"))
    if not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
        found.append(FieldViolation("timeout_ms", f"must be between 1 and {MAX_TIMEOUT_MS}; got {timeout_ms}"))
    return found
