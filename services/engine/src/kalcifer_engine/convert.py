"""Wire <-> domain for the registry RPCs: graph violations and node types (graphs: `kalcifer_common.graphs`).

Converted once at the edge: the domain (validation, registry) never sees a `*_pb2` message. A graph arrives as
`kalcifer.v1.FlowGraph` and becomes the JSON form `kalcifer_engine.domain.graph` parses, so a graph sent through
gRPC and one stored in `flow_versions.graph` are validated by the same code.
"""

from __future__ import annotations

from typing import Final

from kalcifer.v1 import flow_pb2, node_type_pb2
from kalcifer_common.errors import FieldViolation
from kalcifer_common.structs import dict_to_struct

from kalcifer_engine.domain.violations import GraphViolation
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.webhook import WebhookNodeType

CATEGORY_TO_PROTO: Final[dict[NodeCategory, node_type_pb2.NodeCategory.ValueType]] = {
    NodeCategory.TRIGGER: node_type_pb2.NODE_CATEGORY_TRIGGER,
    NodeCategory.CONDITION: node_type_pb2.NODE_CATEGORY_CONDITION,
    NodeCategory.WAIT: node_type_pb2.NODE_CATEGORY_WAIT,
    NodeCategory.ACTION: node_type_pb2.NODE_CATEGORY_ACTION,
    NodeCategory.END: node_type_pb2.NODE_CATEGORY_END,
}
CATEGORY_FROM_PROTO: Final[dict[int, NodeCategory]] = {int(v): k for k, v in CATEGORY_TO_PROTO.items()}


def violation_to_proto(violation: FieldViolation) -> flow_pb2.GraphViolation:
    """Domain violation -> wire; plain field violations (no node, edge or reason) keep those empty."""
    if isinstance(violation, GraphViolation):
        return flow_pb2.GraphViolation(
            field=violation.field,
            description=violation.description,
            node_id=violation.node_id,
            edge_id=violation.edge_id,
            reason=str(violation.reason),
        )
    return flow_pb2.GraphViolation(field=violation.field, description=violation.description)


def node_type_to_proto(node_type: NodeType) -> node_type_pb2.NodeType:
    """Domain node type -> wire. Config-dependent branches (ab_split) are listed empty, as the contract says."""
    webhook = isinstance(node_type, WebhookNodeType)
    branches: tuple[str, ...] = () if node_type.branches_depend_on_config else node_type.branches({})
    return node_type_pb2.NodeType(
        key=node_type.key,
        category=CATEGORY_TO_PROTO[node_type.category],
        config_schema=dict_to_struct(node_type.config_schema),
        branches=list(branches),
        resumable=node_type.resumable,
        builtin=not webhook,
        description=node_type.description,
        endpoint_url=node_type.endpoint_url if isinstance(node_type, WebhookNodeType) else "",
    )
