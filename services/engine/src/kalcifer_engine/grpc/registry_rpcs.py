"""EngineService RPCs of the node registry and graph validation (ValidateGraph, *NodeType*).

Validation lives here, next to the registry, so the API never needs to know a node type: it sends the graph and
the tenant, and gets every violation back. Tenants' webhook node types are stored in the database and read fresh
for validation and listing (any replica may have registered them a moment ago); runs use the cached
`tenant_registry.registry_for`.
"""

from __future__ import annotations

import uuid
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
from google.protobuf import empty_pb2
from kalcifer.engine.v1 import engine_pb2
from kalcifer.v1 import node_type_pb2
from kalcifer_common.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from kalcifer_common.graphs import graph_to_json
from kalcifer_common.ids import parse_id
from kalcifer_common.outbound_policy import OutboundPolicy
from kalcifer_common.structs import struct_to_dict

from kalcifer_engine import tenant_registry
from kalcifer_engine.convert import (
    CATEGORY_FROM_PROTO,
    CATEGORY_TO_PROTO,
    node_type_to_proto,
    violation_to_proto,
)
from kalcifer_engine.deps import EngineDeps
from kalcifer_engine.domain.validation import template_ids, validate_graph
from kalcifer_engine.nodes.base import NodeCategory
from kalcifer_engine.nodes.registry import NodeRegistry
from kalcifer_engine.nodes.schema import quote
from kalcifer_engine.nodes.webhook import WebhookNodeType
from kalcifer_engine.repo.node_types import DEFAULT_TIMEOUT_MS, NodeTypeStore
from kalcifer_engine.repo.templates import template_channels

# Webhook types may only do what a node in the middle of a flow does: triggers are fed by ingestion and end
# nodes are the engine's own (see kalcifer/v1/node_type.proto).
REGISTRABLE_CATEGORIES: Final = (NodeCategory.CONDITION, NodeCategory.WAIT, NodeCategory.ACTION)
MAX_DESCRIPTION_LENGTH: Final = 1000
MAX_BRANCHES: Final = 32
MAX_SCHEMA_BYTES: Final = 64 * 1024
_CATEGORY_ORDER: Final = {category: position for position, category in enumerate(NodeCategory)}


def _optional_tenant(value: str) -> uuid.UUID | None:
    return parse_id(value, "tenant_id") if value else None


def _registration_violations(
    node_type: node_type_pb2.NodeType, schema: dict[str, Any], outbound: OutboundPolicy
) -> list[FieldViolation]:
    """What `WebhookNodeType` does not check itself: required category, registrable categories, sizes, URL shape,
    and https (plain http only to a destination OUTBOUND_ALLOWLIST lists)."""
    found: list[FieldViolation] = []
    category = CATEGORY_FROM_PROTO.get(node_type.category)
    allowed = ", ".join(node_type_pb2.NodeCategory.Name(CATEGORY_TO_PROTO[c]) for c in REGISTRABLE_CATEGORIES)
    if category not in REGISTRABLE_CATEGORIES:
        found.append(FieldViolation("node_type.category", f"must be one of {allowed}"))
    elif category is NodeCategory.CONDITION and not node_type.branches:
        found.append(FieldViolation("node_type.branches", "a CONDITION node type must declare the branches it returns"))
    if len(node_type.description) > MAX_DESCRIPTION_LENGTH:
        found.append(FieldViolation("node_type.description", f"must be at most {MAX_DESCRIPTION_LENGTH} characters"))
    if len(node_type.branches) > MAX_BRANCHES:
        found.append(FieldViolation("node_type.branches", f"at most {MAX_BRANCHES} branches"))
    if len(orjson.dumps(schema)) > MAX_SCHEMA_BYTES:
        found.append(FieldViolation("node_type.config_schema", f"must be at most {MAX_SCHEMA_BYTES} bytes as JSON"))
    if not node_type.endpoint_url:
        found.append(FieldViolation("node_type.endpoint_url", "is required (the https URL the engine posts to)"))
    else:
        try:
            url = urlsplit(node_type.endpoint_url)
            port = url.port or 80
        except ValueError:
            found.append(FieldViolation("node_type.endpoint_url", f"{quote(node_type.endpoint_url)} is not a URL"))
        else:
            if url.scheme == "http" and not outbound.allows_plain_http(url.hostname or "", port):
                found.append(
                    FieldViolation(
                        "node_type.endpoint_url",
                        f"{quote(node_type.endpoint_url)} must be an https:// URL (plain http only to a destination "
                        "listed in OUTBOUND_ALLOWLIST)",
                    )
                )
    return found


def _webhook_type(node_type: node_type_pb2.NodeType, outbound: OutboundPolicy) -> WebhookNodeType:
    """The validated definition, or INVALID_ARGUMENT naming every bad field of `node_type`."""
    schema = struct_to_dict(node_type.config_schema)
    found = _registration_violations(node_type, schema, outbound)
    category = CATEGORY_FROM_PROTO.get(node_type.category, NodeCategory.ACTION)
    malformed_url = any(v.field == "node_type.endpoint_url" for v in found)
    definition: WebhookNodeType | None = None
    try:
        definition = WebhookNodeType(
            key=node_type.key,
            category=category,
            description=node_type.description,
            config_schema=schema,
            branches=list(node_type.branches),
            resumable=node_type.resumable,
            endpoint_url="https://placeholder.invalid" if malformed_url else node_type.endpoint_url,
            timeout_ms=DEFAULT_TIMEOUT_MS,
        )
    except InvalidArgument as error:
        found.extend(FieldViolation(f"node_type.{v.field}", v.description) for v in error.violations)
    if found or definition is None:
        raise InvalidArgument(found)
    return definition


class RegistryRpcs:
    """ValidateGraph, ListNodeTypes, RegisterNodeType, DeleteNodeType."""

    deps: EngineDeps

    async def _registry(self, tenant_id: uuid.UUID | None) -> NodeRegistry:
        if tenant_id is None:
            return self.deps.registry
        return await tenant_registry.fresh_registry_for(self.deps, tenant_id)

    async def ValidateGraph(
        self, request: engine_pb2.ValidateGraphRequest, context: Any
    ) -> engine_pb2.ValidateGraphResponse:
        """Every violation of the graph against the built-ins and the tenant's types and templates; a bad graph is
        an answer, not an error (size limits included). Without a tenant, templates are not checked."""
        tenant_id = _optional_tenant(request.tenant_id)
        registry = await self._registry(tenant_id)
        graph = graph_to_json(request.graph)
        templates = None
        if tenant_id is not None:
            templates = await template_channels(self.deps.sessions, tenant_id, template_ids(graph))
        violations = validate_graph(graph, registry, templates=templates)
        return engine_pb2.ValidateGraphResponse(
            valid=not violations, violations=[violation_to_proto(v) for v in violations]
        )

    async def ListNodeTypes(
        self, request: engine_pb2.ListNodeTypesRequest, context: Any
    ) -> engine_pb2.ListNodeTypesResponse:
        """Built-ins plus the tenant's own, by category (trigger, condition, wait, action, end) then key."""
        wanted: NodeCategory | None = None
        if request.category:
            wanted = CATEGORY_FROM_PROTO.get(request.category)
            if wanted is None:
                raise InvalidArgument.single("category", f"unknown category {request.category}")
        registry = await self._registry(_optional_tenant(request.tenant_id))
        chosen = [t for t in registry.all() if wanted is None or t.category is wanted]
        chosen.sort(key=lambda t: (_CATEGORY_ORDER[t.category], t.key))
        return engine_pb2.ListNodeTypesResponse(node_types=[node_type_to_proto(t) for t in chosen])

    async def RegisterNodeType(
        self, request: engine_pb2.RegisterNodeTypeRequest, context: Any
    ) -> node_type_pb2.NodeType:
        """Store a tenant's webhook type (re-registering the tenant's own key updates it). A built-in key is
        ALREADY_EXISTS: a graph's node type must mean the same thing for every tenant."""
        tenant_id = parse_id(request.tenant_id, "tenant_id")
        key = request.node_type.key
        if key in self.deps.registry:
            raise AlreadyExists(
                f"node type {key!r} is a built-in; choose another key", metadata={"key": key, "builtin": "true"}
            )
        definition = _webhook_type(request.node_type, OutboundPolicy.parse(self.deps.settings.outbound_allowlist))
        await NodeTypeStore(self.deps.sessions).upsert(tenant_id, definition)
        tenant_registry.invalidate(self.deps, tenant_id)
        return node_type_to_proto(definition)

    async def DeleteNodeType(self, request: engine_pb2.DeleteNodeTypeRequest, context: Any) -> empty_pb2.Empty:
        """Remove a tenant's webhook type. Built-ins cannot be deleted; another tenant's type is NOT_FOUND."""
        tenant_id = parse_id(request.tenant_id, "tenant_id")
        if not request.key:
            raise InvalidArgument.single("key", "is required")
        if request.key in self.deps.registry:
            raise InvalidArgument.single("key", f"{quote(request.key)} is a built-in node type and cannot be deleted")
        if not await NodeTypeStore(self.deps.sessions).delete(tenant_id, request.key):
            raise NotFound("node type", request.key)
        tenant_registry.invalidate(self.deps, tenant_id)
        return empty_pb2.Empty()
