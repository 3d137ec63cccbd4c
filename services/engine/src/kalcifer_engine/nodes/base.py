"""The node contract (SPEC 6.1): what every node type declares and what running one returns.

A node type is stateless: one instance serves every flow and every tenant, and everything a run needs arrives as
`config` (the node's configuration in the graph) and `ctx` (the instance's context). Built-ins declare their
attributes on the class; runtime types (`WebhookNodeType`) set them per instance, which is why they are plain
annotated attributes rather than `ClassVar`s.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal, TypeAlias

from kalcifer_common.errors import FieldViolation
from kalcifer_common.outbound import CallSpec

from kalcifer_engine.nodes.schema import ConfigValidator, compiled_validator


class NodeCategory(StrEnum):
    """What a node does in a flow; the only categories there are (no BPMN words)."""

    TRIGGER = "trigger"
    CONDITION = "condition"
    WAIT = "wait"
    ACTION = "action"
    END = "end"


@dataclass(frozen=True, slots=True)
class Completed:
    """The node finished; the path follows every outgoing edge."""

    output: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Skipped:
    """The node did not do what it was asked, for `reason` (SPEC 7: `FREQUENCY_CAPPED`, `PREFERENCE_OFF`,
    `NO_CONTACT`); its step is SKIPPED with the reason in its output, and the path goes on as after `Completed`."""

    reason: str
    output: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Branched:
    """The node chose branch `key`; the path follows the edges labelled `key`."""

    key: str
    output: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Waiting:
    """The path parks here until a timer fires (`fire_time`), an event arrives (`event_type`, `event_filter`) or
    the outbound call `call` was made (SPEC 6.10: the scheduler makes it, out of any run, and resumes the node
    with trigger `call` and the `CallAnswer` as data).

    `timeout_branch` names the branch to take when an event wait's timer fires first (`wait_for_event`).
    """

    kind: Literal["timer", "event", "call"]
    fire_time: datetime | None = None
    event_type: str | None = None
    event_filter: str | None = None
    timeout_branch: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    call: CallSpec | None = None

    def __post_init__(self) -> None:
        # A wait row that can never fire is a stuck instance; refuse it where it is made, not where it hangs.
        if self.kind == "timer" and self.fire_time is None:
            raise ValueError("a timer wait needs a fire_time")
        if self.fire_time is not None and self.fire_time.utcoffset() is None:
            raise ValueError("fire_time must be timezone-aware")
        if self.kind == "event" and not self.event_type:
            raise ValueError("an event wait needs an event_type")
        if (self.kind == "call") != (self.call is not None):
            raise ValueError("a call wait, and only a call wait, has a call")


@dataclass(frozen=True, slots=True)
class Failed:
    """The node failed; `retryable` lets the engine retry it (with backoff, up to the type's `retries`)."""

    reason: str
    retryable: bool = False


NodeResult: TypeAlias = Completed | Skipped | Branched | Waiting | Failed


class NodeType(ABC):
    """A kind of node: its key, category, config schema, branches and behaviour.

    `config_schema` is a JSON Schema (draft 2020-12) for the node's config, with `additionalProperties: false`;
    `semantic_violations` adds the checks a schema cannot express. `branches(config)` is empty for nodes that
    return `Completed` (every outgoing edge is followed), else the branch keys the node can return.
    """

    key: str
    category: NodeCategory
    description: str
    config_schema: dict[str, Any]
    resumable: bool = False
    retries: int = 0
    # True when `branches` reads the config (ab_split): an invalid config then says nothing about the edges.
    branches_depend_on_config: bool = False

    def branches(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """Branch keys this node can return for `config`; empty means it completes and follows every edge.

        Must not raise, whatever `config` holds: validation calls it on configs that failed their schema.
        """
        return ()

    def semantic_violations(self, config: Mapping[str, Any]) -> list[FieldViolation]:
        """Problems JSON Schema cannot express, with field paths relative to the config (`variants[1].key`).

        Must not raise, whatever `config` holds; values of the wrong type are left to the schema to report.
        """
        return []

    @cached_property
    def config_validator(self) -> ConfigValidator:
        """The compiled validator of `config_schema` (shared between types with the same schema)."""
        return compiled_validator(self.config_schema)

    async def execute(self, config: Mapping[str, Any], ctx: Any) -> NodeResult:
        """Run the node for one path of one instance."""
        raise NotImplementedError(f"node type {self.key!r} cannot execute yet")

    async def resume(self, config: Mapping[str, Any], ctx: Any, trigger: str, data: Mapping[str, Any]) -> NodeResult:
        """Continue a waiting node after its timer fired or its event arrived.

        `trigger` is one of `behaviour.TIMER`, `EVENT` (`data` is the event), `TIMEOUT` (an event wait gave up) or
        `CALL` (`data` is the outbound call's `CallAnswer.to_data()`).
        """
        raise NotImplementedError(f"node type {self.key!r} cannot resume yet")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key!r} ({self.category})>"
