"""Graph violations: a `FieldViolation` that also names the node or edge concerned and a stable reason code."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kalcifer_common.errors import FieldViolation


class ViolationReason(StrEnum):
    """Machine-readable codes of `kalcifer.v1.GraphViolation.reason`."""

    MALFORMED_GRAPH = "MALFORMED_GRAPH"
    TOO_LARGE = "TOO_LARGE"
    NO_TRIGGER = "NO_TRIGGER"
    TRIGGER_HAS_INCOMING_EDGE = "TRIGGER_HAS_INCOMING_EDGE"
    EMPTY_NODE_ID = "EMPTY_NODE_ID"
    DUPLICATE_NODE_ID = "DUPLICATE_NODE_ID"
    DUPLICATE_EDGE_ID = "DUPLICATE_EDGE_ID"
    MISSING_EDGE_END = "MISSING_EDGE_END"
    CYCLE = "CYCLE"
    UNREACHABLE_NODE = "UNREACHABLE_NODE"
    UNKNOWN_NODE_TYPE = "UNKNOWN_NODE_TYPE"
    INVALID_CONFIG = "INVALID_CONFIG"
    MISSING_BRANCH_EDGE = "MISSING_BRANCH_EDGE"
    UNKNOWN_BRANCH = "UNKNOWN_BRANCH"
    END_HAS_OUTGOING_EDGE = "END_HAS_OUTGOING_EDGE"
    UNKNOWN_TEMPLATE = "UNKNOWN_TEMPLATE"


@dataclass(frozen=True, slots=True)
class GraphViolation(FieldViolation):
    """One problem in a graph: `field` is its path in the graph (`nodes[3].config.duration`, `edges[0].target`)."""

    reason: ViolationReason
    node_id: str = ""
    edge_id: str = ""
