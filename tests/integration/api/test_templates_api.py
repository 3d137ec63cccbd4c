"""TemplateService on the real API process: templates validated (sizes, syntax with its line) in the sandbox, CRUD
with etags and update masks, pagination, the quota, deletion refused while a flow names the template, request_id
replay, tenant isolation, and previews rendered exactly as a send renders (strict undefined, sandboxed, bounded)."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from kalcifer.v1 import flow_pb2, flow_pb2_grpc, template_pb2, template_pb2_grpc
from kalcifer_common.db.models import Template
from kalcifer_common.structs import dict_to_struct
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.payloads import nested
from tests.support.processes import Suite
from tests.support.rpc import field_violations, reason_of, rpc_error
from tests.support.tenants import Tenant, new_tenant

T = template_pb2
MAIL_GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "entry", "type": "event_entry", "config": {"event_type": "signup"}},
        {"id": "mail", "type": "send_email", "config": {"template_id": "welcome"}},
    ],
    "edges": [{"id": "e", "source": "entry", "target": "mail"}],
}


@pytest.fixture(scope="module")
def templates(channel: grpc.Channel) -> template_pb2_grpc.TemplateServiceStub:
    return template_pb2_grpc.TemplateServiceStub(channel)


@pytest.fixture
def tenant(suite: Suite) -> Tenant:
    """A tenant of each test's own: the tests count and page through its templates."""
    return new_tenant(suite, "templates")


def _create(
    templates: template_pb2_grpc.TemplateServiceStub,
    tenant: Tenant,
    template_id: str = "welcome",
    channel: str = "email",
    request_id: str = "",
    **parts: str,
) -> T.Template:
    parts.setdefault("subject", "Hi {{ customer.attributes.first_name }}")
    parts.setdefault("body", "Your code: {{ data.code }}")
    created: T.Template = templates.CreateTemplate(
        T.CreateTemplateRequest(
            template=T.Template(id=template_id, channel=channel, **parts),  # type: ignore[arg-type]
            request_id=request_id,
        ),
        metadata=tenant.auth,
    )
    return created


def test_a_template_is_created_read_and_listed(
    templates: template_pb2_grpc.TemplateServiceStub, tenant: Tenant
) -> None:
    created = _create(templates, tenant, html_body="<b>{{ data.code }}</b>", description="first mail")
    assert (created.id, created.channel, created.etag) == ("welcome", "email", '"1"')
    assert created.create_time.seconds > 0
    assert templates.GetTemplate(T.GetTemplateRequest(id="welcome"), metadata=tenant.auth) == created
    listed = templates.ListTemplates(T.ListTemplatesRequest(), metadata=tenant.auth)
    assert [t.id for t in listed.templates] == ["welcome"]


def test_every_problem_of_a_template_is_named_at_once(
    templates: template_pb2_grpc.TemplateServiceStub, tenant: Tenant
) -> None:
    error = rpc_error(
        lambda: templates.CreateTemplate(
            T.CreateTemplateRequest(
                template=T.Template(
                    id="no spaces!",
                    channel="fax",
                    subject="Hi {{ name }",
                    body="line one\n{% if x %}unclosed",
                    html_body="x" * (256 * 1024 + 1),
                    description="d" * 2001,
                )
            ),
            metadata=tenant.auth,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(error)
    assert set(violations) == {"id", "channel", "subject", "body", "html_body", "description"}
    assert "'fax' is not a channel" in violations["channel"]
    assert violations["subject"].startswith("does not compile: line 1:")
    assert violations["body"].startswith("does not compile: line 2:")
    assert "at most 262144" in violations["html_body"]
    assert field_violations(
        rpc_error(
            lambda: templates.CreateTemplate(T.CreateTemplateRequest(template=T.Template()), metadata=tenant.auth)
        )
    ).keys() == {"id", "channel"}


def test_a_template_id_is_unique_in_its_tenant_only(
    suite: Suite, templates: template_pb2_grpc.TemplateServiceStub, tenant: Tenant
) -> None:
    _create(templates, tenant)
    error = rpc_error(lambda: _create(templates, tenant))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    other = new_tenant(suite, "templates-other")
    assert _create(templates, other, body="theirs").body == "theirs"


def test_another_tenants_template_is_not_found_and_never_listed(
    suite: Suite, templates: template_pb2_grpc.TemplateServiceStub, tenant: Tenant
) -> None:
    _create(templates, tenant, template_id="mine")
    other = new_tenant(suite, "templates-intruder")
    calls = [
        lambda: templates.GetTemplate(T.GetTemplateRequest(id="mine"), metadata=other.auth),
        lambda: templates.UpdateTemplate(
            T.UpdateTemplateRequest(template=T.Template(id="mine", body="x")), metadata=other.auth
        ),
        lambda: templates.DeleteTemplate(T.DeleteTemplateRequest(id="mine"), metadata=other.auth),
        lambda: templates.RenderTemplate(T.RenderTemplateRequest(template_id="mine"), metadata=other.auth),
    ]
    for call in calls:
        assert rpc_error(call).code() == grpc.StatusCode.NOT_FOUND
    assert list(templates.ListTemplates(T.ListTemplatesRequest(), metadata=other.auth).templates) == []
    assert templates.GetTemplate(T.GetTemplateRequest(id="mine"), metadata=tenant.auth).body


def test_update_replaces_the_masked_fields_checks_the_etag_and_keeps_id_and_channel(
    templates: template_pb2_grpc.TemplateServiceStub, tenant: Tenant
) -> None:
    created = _create(templates, tenant, description="keep me")
    mask = field_mask_pb2.FieldMask(paths=["body"])
    updated = templates.UpdateTemplate(
        T.UpdateTemplateRequest(
            template=T.Template(id="welcome", body="New {{ data.code }}", subject="ignored", etag=created.etag),
            update_mask=mask,
        ),
        metadata=tenant.auth,
    )
    assert (updated.body, updated.subject, updated.description) == ("New {{ data.code }}", created.subject, "keep me")
    assert updated.etag == '"2"'
    stale = rpc_error(
        lambda: templates.UpdateTemplate(
            T.UpdateTemplateRequest(template=T.Template(id="welcome", body="x", etag=created.etag), update_mask=mask),
            metadata=tenant.auth,
        )
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    immutable = rpc_error(
        lambda: templates.UpdateTemplate(
            T.UpdateTemplateRequest(
                template=T.Template(id="welcome", channel="sms"),
                update_mask=field_mask_pb2.FieldMask(paths=["channel"]),
            ),
            metadata=tenant.auth,
        )
    )
    assert set(field_violations(immutable)) == {"update_mask.paths[0]"}
    broken = rpc_error(
        lambda: templates.UpdateTemplate(
            T.UpdateTemplateRequest(template=T.Template(id="welcome", body="{{ unclosed"), update_mask=mask),
            metadata=tenant.auth,
        )
    )
    assert set(field_violations(broken)) == {"body"}


def test_list_pages_by_id_and_filters_by_channel(
    templates: template_pb2_grpc.TemplateServiceStub, tenant: Tenant
) -> None:
    for index in range(5):
        _create(templates, tenant, template_id=f"t{index}", channel="sms" if index % 2 else "email")
    first = templates.ListTemplates(T.ListTemplatesRequest(page_size=2), metadata=tenant.auth)
    second = templates.ListTemplates(
        T.ListTemplatesRequest(page_size=2, page_token=first.next_page_token), metadata=tenant.auth
    )
    third = templates.ListTemplates(
        T.ListTemplatesRequest(page_size=2, page_token=second.next_page_token), metadata=tenant.auth
    )
    assert [t.id for page in (first, second, third) for t in page.templates] == ["t0", "t1", "t2", "t3", "t4"]
    assert third.next_page_token == ""
    sms = templates.ListTemplates(T.ListTemplatesRequest(channel="sms"), metadata=tenant.auth)
    assert [t.id for t in sms.templates] == ["t1", "t3"]
    foreign = rpc_error(
        lambda: templates.ListTemplates(
            T.ListTemplatesRequest(channel="sms", page_token=first.next_page_token), metadata=tenant.auth
        )
    )
    assert set(field_violations(foreign)) == {"page_token"}
    assert set(
        field_violations(
            rpc_error(lambda: templates.ListTemplates(T.ListTemplatesRequest(channel="fax"), metadata=tenant.auth))
        )
    ) == {"channel"}


def test_a_repeated_request_id_replays_the_first_answer(
    templates: template_pb2_grpc.TemplateServiceStub, tenant: Tenant
) -> None:
    request_id = str(uuid.uuid4())
    first = _create(templates, tenant, request_id=request_id)
    assert _create(templates, tenant, request_id=request_id) == first
    changed = rpc_error(lambda: _create(templates, tenant, request_id=request_id, body="other"))
    assert set(field_violations(changed)) == {"request_id"}


async def test_a_tenant_has_at_most_1000_templates(
    templates: template_pb2_grpc.TemplateServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions.begin() as session:
        await session.execute(
            insert(Template),
            [{"tenant_id": tenant.id, "id": f"bulk-{index:04d}", "channel": "sms"} for index in range(999)],
        )
    _create(templates, tenant, template_id="the-1000th")
    error = rpc_error(lambda: _create(templates, tenant, template_id="one-too-many"))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(error) == "TEMPLATE_QUOTA_EXCEEDED"


def test_a_template_a_flow_names_cannot_be_deleted_until_the_flow_is_gone(
    templates: template_pb2_grpc.TemplateServiceStub, flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant
) -> None:
    created = _create(templates, tenant)
    graph = flow_pb2.FlowGraph(
        nodes=[
            flow_pb2.GraphNode(id=n["id"], type=n["type"], config=dict_to_struct(n["config"]))
            for n in MAIL_GRAPH["nodes"]
        ],
        edges=[flow_pb2.GraphEdge(id="e", source="entry", target="mail")],
    )
    flow = flows.CreateFlow(
        flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="uses welcome"), graph=graph), metadata=tenant.auth
    )
    in_use = rpc_error(lambda: templates.DeleteTemplate(T.DeleteTemplateRequest(id="welcome"), metadata=tenant.auth))
    assert in_use.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(in_use) == "TEMPLATE_IN_USE"
    assert flow.id in (in_use.details() or "")

    flows.DeleteFlow(flow_pb2.DeleteFlowRequest(id=flow.id), metadata=tenant.auth)
    stale = rpc_error(
        lambda: templates.DeleteTemplate(T.DeleteTemplateRequest(id="welcome", etag='"9"'), metadata=tenant.auth)
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    templates.DeleteTemplate(T.DeleteTemplateRequest(id="welcome", etag=created.etag), metadata=tenant.auth)
    gone = rpc_error(lambda: templates.GetTemplate(T.GetTemplateRequest(id="welcome"), metadata=tenant.auth))
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    # And a graph naming it is invalid again.
    checked = flows.ValidateFlowGraph(flow_pb2.ValidateFlowGraphRequest(graph=graph), metadata=tenant.auth)
    assert [(v.field, v.reason) for v in checked.violations] == [("nodes[1].config.template_id", "UNKNOWN_TEMPLATE")]


def test_a_channel_node_needs_a_template_of_its_own_channel(
    templates: template_pb2_grpc.TemplateServiceStub, flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant
) -> None:
    _create(templates, tenant, channel="sms")
    graph = flow_pb2.FlowGraph(
        nodes=[
            flow_pb2.GraphNode(id=n["id"], type=n["type"], config=dict_to_struct(n["config"]))
            for n in MAIL_GRAPH["nodes"]
        ],
        edges=[flow_pb2.GraphEdge(id="e", source="entry", target="mail")],
    )
    error = rpc_error(
        lambda: flows.CreateFlow(
            flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="wrong channel"), graph=graph), metadata=tenant.auth
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is for sms" in field_violations(error)["nodes[1].config.template_id"]


def _render(
    templates: template_pb2_grpc.TemplateServiceStub, tenant: Tenant, context: dict[str, Any], **which: Any
) -> T.RenderTemplateResponse:
    rendered: T.RenderTemplateResponse = templates.RenderTemplate(
        T.RenderTemplateRequest(context=dict_to_struct(context), **which), metadata=tenant.auth
    )
    return rendered


def test_a_preview_renders_a_stored_or_an_unsaved_template_as_a_send_would(
    templates: template_pb2_grpc.TemplateServiceStub, tenant: Tenant
) -> None:
    _create(templates, tenant, subject="Hi\n{{ customer.attributes.first_name }}", html_body="<i>{{ data.n }}</i>")
    context = {"customer": {"attributes": {"first_name": "Ada"}}, "data": {"code": "X1", "n": 3}}
    stored = _render(templates, tenant, context, template_id="welcome")
    assert (stored.subject, stored.body, stored.html_body) == ("Hi Ada", "Your code: X1", "<i>3</i>")
    unsaved = _render(templates, tenant, {"n": 2}, template=T.Template(body="{{ n * 21 }}"))
    assert (unsaved.subject, unsaved.body) == ("", "42")


@pytest.mark.parametrize(
    ("body", "context", "expected"),
    [
        ("{{ customer.name }}", {}, "is undefined"),
        ("{{ ''.__class__.__mro__ }}", {}, "unsafe"),
        ("{{ cycler.__init__.__globals__ }}", {}, "unsafe"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", {}, "budget"),
    ],
)
def test_a_preview_that_fails_names_the_part_and_why(
    templates: template_pb2_grpc.TemplateServiceStub, tenant: Tenant, body: str, context: dict[str, Any], expected: str
) -> None:
    error = rpc_error(lambda: _render(templates, tenant, context, template=T.Template(body=body)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(error)
    assert list(violations) == ["body"]
    assert violations["body"].startswith("does not render: ")
    assert expected in violations["body"]


def test_a_preview_names_exactly_one_template_and_bounds_its_context(
    templates: template_pb2_grpc.TemplateServiceStub, tenant: Tenant
) -> None:
    _create(templates, tenant)
    both = rpc_error(lambda: _render(templates, tenant, {}, template_id="welcome", template=T.Template(body="x")))
    neither = rpc_error(lambda: _render(templates, tenant, {}))
    assert set(field_violations(both)) == set(field_violations(neither)) == {"template_id"}
    huge = rpc_error(lambda: _render(templates, tenant, {"blob": "x" * 70_000}, template_id="welcome"))
    assert set(field_violations(huge)) == {"context"}
    deep = rpc_error(lambda: _render(templates, tenant, nested(21), template_id="welcome"))
    assert set(field_violations(deep)) == {"context"}
    missing = rpc_error(lambda: _render(templates, tenant, {}, template_id="nope"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
