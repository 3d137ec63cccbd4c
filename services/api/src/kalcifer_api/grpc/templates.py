"""`kalcifer.v1.TemplateService`: message templates, and previews of them (SPEC 7)."""

from __future__ import annotations

from typing import Any

from google.protobuf.empty_pb2 import Empty
from kalcifer.v1 import template_pb2, template_pb2_grpc
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.pagination import PageCursor, decode_page_token, encode_page_token, page_size_of
from kalcifer_common.rpc.errors import map_errors
from kalcifer_common.sandbox import ExpressionSandbox
from kalcifer_common.structs import struct_to_dict
from kalcifer_common.templates import TEMPLATE_PARTS
from kalcifer_common.timestamps import to_timestamp

from kalcifer_api.domain.marketing_common import etag_of, masked_fields, non_finite_path
from kalcifer_api.domain.templates import (
    TEMPLATE_FIELDS,
    TemplateDefinition,
    TemplateRecord,
    channel_violations,
    preview,
    preview_context_violations,
    template_id_violations,
    validated_definition,
)
from kalcifer_api.repo.marketing_base import Reply
from kalcifer_api.repo.templates import TemplateRepository


def template_to_proto(template: TemplateRecord) -> template_pb2.Template:
    """Domain -> wire."""
    return template_pb2.Template(
        id=template.id,
        channel=template.channel,
        subject=template.subject,
        body=template.body,
        html_body=template.html_body,
        description=template.description,
        etag=etag_of(template.revision),
        create_time=to_timestamp(template.create_time),
        update_time=to_timestamp(template.update_time),
    )


async def _definition_of(
    sandbox: ExpressionSandbox,
    template: template_pb2.Template,
    fields: frozenset[str] | None = None,
    also: list[FieldViolation] | None = None,
) -> TemplateDefinition:
    return await validated_definition(
        sandbox,
        subject=template.subject,
        body=template.body,
        html_body=template.html_body,
        description=template.description,
        fields=fields,
        also=also,
    )


def _empty(_: None) -> Empty:
    return Empty()


@map_errors
class TemplateServicer(template_pb2_grpc.TemplateServiceServicer):
    """Templates are compiled (on write) and rendered (previews) only in the API's expression sandbox."""

    def __init__(self, templates: TemplateRepository, sandbox: ExpressionSandbox) -> None:
        self._templates = templates
        self._sandbox = sandbox

    def _reply(self, method: str, request: Any) -> Reply[TemplateRecord, template_pb2.Template]:
        return Reply(method, request, template_pb2.Template, template_to_proto)

    async def CreateTemplate(self, request: template_pb2.CreateTemplateRequest, context: Any) -> template_pb2.Template:
        template = request.template
        found = template_id_violations(template.id) + channel_violations(template.channel)
        definition = await _definition_of(self._sandbox, template, also=found)
        return await self._templates.create(
            template.id, template.channel, definition, self._reply("CreateTemplate", request)
        )

    async def GetTemplate(self, request: template_pb2.GetTemplateRequest, context: Any) -> template_pb2.Template:
        found = template_id_violations(request.id)
        if found:
            raise InvalidArgument(found)
        return template_to_proto(await self._templates.get(request.id))

    async def ListTemplates(
        self, request: template_pb2.ListTemplatesRequest, context: Any
    ) -> template_pb2.ListTemplatesResponse:
        found = channel_violations(request.channel, required=False)
        if found:
            raise InvalidArgument(found)
        limit = page_size_of(request.page_size)
        query = {"list": "templates", "channel": request.channel}
        rows = await self._templates.list_page(
            channel=request.channel, limit=limit, after=decode_page_token(request.page_token, query=query)
        )
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = encode_page_token(PageCursor(last.id, last.id), query=query)
        return template_pb2.ListTemplatesResponse(
            templates=[template_to_proto(row) for row in rows[:limit]], next_page_token=token
        )

    async def UpdateTemplate(self, request: template_pb2.UpdateTemplateRequest, context: Any) -> template_pb2.Template:
        template = request.template
        found = template_id_violations(template.id)
        fields = masked_fields(list(request.update_mask.paths), TEMPLATE_FIELDS)
        definition = await _definition_of(self._sandbox, template, fields, also=found)
        return await self._templates.update(
            template.id, definition, fields, template.etag, self._reply("UpdateTemplate", request)
        )

    async def DeleteTemplate(self, request: template_pb2.DeleteTemplateRequest, context: Any) -> Empty:
        found = template_id_violations(request.id)
        if found:
            raise InvalidArgument(found)
        return await self._templates.delete(request.id, request.etag, Reply("DeleteTemplate", request, Empty, _empty))

    async def RenderTemplate(
        self, request: template_pb2.RenderTemplateRequest, context: Any
    ) -> template_pb2.RenderTemplateResponse:
        """A stored template (template_id) or an unsaved one (template), rendered over `context` in the sandbox."""
        inline = request.HasField("template")
        if inline == bool(request.template_id):
            raise InvalidArgument.single("template_id", "give exactly one of template_id and template")
        variables = struct_to_dict(request.context)
        found = preview_context_violations(variables)
        if path := non_finite_path(variables, "context"):
            found.append(FieldViolation(path, "must hold only finite numbers"))
        if not inline:
            found += template_id_violations(request.template_id, "template_id")
        if found:
            raise InvalidArgument(found)
        if inline:
            parts = (await _definition_of(self._sandbox, request.template, frozenset(TEMPLATE_PARTS))).parts()
        else:
            parts = (await self._templates.get(request.template_id)).parts()
        rendered = await preview(self._sandbox, parts, variables)
        return template_pb2.RenderTemplateResponse(
            subject=rendered.subject, body=rendered.body, html_body=rendered.html_body
        )
