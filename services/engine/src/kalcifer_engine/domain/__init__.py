"""The engine's domain: plain Python (graphs, validation, weighted variants); no gRPC, SQL or protobuf."""

from kalcifer_engine.domain.graph import FlowGraph, GraphEdge, GraphNode, parse_graph
from kalcifer_engine.domain.validation import DEFAULT_LIMITS, GraphLimits, validate_graph
from kalcifer_engine.domain.violations import GraphViolation, ViolationReason

__all__ = [
    "DEFAULT_LIMITS",
    "FlowGraph",
    "GraphEdge",
    "GraphLimits",
    "GraphNode",
    "GraphViolation",
    "ViolationReason",
    "parse_graph",
    "validate_graph",
]
