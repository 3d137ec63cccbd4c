"""The one table from domain errors to gRPC statuses, and the guarantee that no handler answers UNKNOWN."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import empty_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from kalcifer_common import errors
from kalcifer_common.rpc.errors import WRAPPED_MARKER, answerable, map_errors, relayed, status_for, status_proto_for
from sqlalchemy.exc import DBAPIError


def _proto(status: grpc.Status) -> status_pb2.Status:
    for key, value in status.trailing_metadata:
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no rich status in trailing metadata")


def _unpack(status: status_pb2.Status, detail_type: type[Any]) -> Any:
    detail = detail_type()
    assert len(status.details) == 1
    assert status.details[0].Unpack(detail)
    return detail


def test_invalid_argument_carries_every_field_violation() -> None:
    error = errors.InvalidArgument(
        [errors.FieldViolation("nodes[0].type", "unknown"), errors.FieldViolation("edges[1].target", "missing")]
    )
    status = status_for(error)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    violations = _unpack(_proto(status), error_details_pb2.BadRequest).field_violations
    assert [(v.field, v.description) for v in violations] == [
        ("nodes[0].type", "unknown"),
        ("edges[1].target", "missing"),
    ]


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (
            errors.FailedPrecondition("FLOW_NOT_DRAFT", "flow is active"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "FLOW_NOT_DRAFT",
        ),
        (errors.AlreadyExists("in flow", reason="ALREADY_IN_FLOW"), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_IN_FLOW"),
        (errors.ResourceExhausted("FREQUENCY_CAPPED", "cap"), grpc.StatusCode.RESOURCE_EXHAUSTED, "FREQUENCY_CAPPED"),
        (errors.Unauthenticated("no key"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    ],
)
def test_reasoned_errors_carry_error_info(error: errors.KalciferError, code: grpc.StatusCode, reason: str) -> None:
    status = status_for(error)
    assert status.code == code
    info = _unpack(_proto(status), error_details_pb2.ErrorInfo)
    assert info.reason == reason
    assert info.domain == "kalcifer.dev"


def test_not_found_and_etag_mismatch_name_the_resource() -> None:
    not_found = status_for(errors.NotFound("flow", "f-1"))
    assert not_found.code == grpc.StatusCode.NOT_FOUND
    assert _unpack(_proto(not_found), error_details_pb2.ResourceInfo).resource_name == "f-1"
    aborted = status_for(errors.EtagMismatch("flow", "f-1"))
    assert aborted.code == grpc.StatusCode.ABORTED


# gRPC clients refuse trailing metadata over 8 KiB (some calls) and 16 KiB (all), losing the real status.
CLIENT_METADATA_SOFT_LIMIT = 8 * 1024


def _metadata_bytes(status: grpc.Status) -> int:
    """The size of the status on the wire: grpc-message percent-encoded, grpc-status-details-bin in base64."""
    encoded_message = sum(1 if 0x20 <= byte < 0x7F and byte != 0x25 else 3 for byte in status.details.encode())
    details = sum(len(value) for key, value in status.trailing_metadata if key == "grpc-status-details-bin")
    return encoded_message + (details * 4 + 2) // 3


@pytest.mark.parametrize(
    "error",
    [
        # An id that is no UUID is quoted back: found by the fuzzer with a 300 000-character id (GetFlow).
        errors.InvalidArgument.single("id", f"{'x' * 300_000!r} is not a valid id (expected a UUID)"),
        # One violation per bad item: found with a thousand bad tags (AddCustomerTags).
        errors.InvalidArgument(
            [
                errors.FieldViolation(f"tags[{i}]", f"{chr(0x202E) * 40!r} must be at most 100 characters")
                for i in range(1000)
            ]
        ),
        errors.NotFound("customer", "\U0001f600" * 10_000),
        errors.FailedPrecondition("FLOW_NOT_DRAFT", "x" * 100_000, metadata={"flow_id": "y" * 100_000}),
    ],
)
def test_a_status_stays_within_what_clients_accept_whatever_the_request_quoted(error: errors.KalciferError) -> None:
    status = status_for(error)
    assert _metadata_bytes(status) < CLIENT_METADATA_SOFT_LIMIT - 1024  # room for the other headers


def test_violations_left_out_of_a_status_are_counted() -> None:
    error = errors.InvalidArgument([errors.FieldViolation(f"tags[{i}]", "is too long " * 5) for i in range(1000)])
    violations = _unpack(_proto(status_for(error)), error_details_pb2.BadRequest).field_violations
    assert violations[0].field == "tags[0]"
    assert violations[-1].description == f"{1000 - (len(violations) - 1)} more violations not shown"


def test_unexpected_exceptions_are_internal_never_unknown() -> None:
    status = status_for(ZeroDivisionError("boom"))
    assert status.code == grpc.StatusCode.INTERNAL
    assert "boom" not in status.details  # internals stay in our logs
    assert _proto(status).code == code_pb2.INTERNAL


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        DBAPIError("connect", None, asyncpg.exceptions.CannotConnectNowError("the database system is starting up")),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    ],
    ids=["shutting-down", "admin-shutdown", "refused", "through-sqlalchemy", "deadlock"],
)
def test_a_database_down_or_restarting_is_unavailable_not_a_bug(error: Exception) -> None:
    # An API call while PostgreSQL restarted answered INTERNAL (make chaos): callers must be told to retry.
    status = status_for(error)
    assert status.code == grpc.StatusCode.UNAVAILABLE
    assert _proto(status).code == code_pb2.UNAVAILABLE


def test_a_database_error_that_is_a_bug_stays_internal() -> None:
    assert status_for(asyncpg.exceptions.UndefinedColumnError("no such column")).code == grpc.StatusCode.INTERNAL


def test_not_implemented_is_unimplemented() -> None:
    assert status_for(NotImplementedError()).code == grpc.StatusCode.UNIMPLEMENTED


def test_every_kalcifer_error_has_a_specific_code() -> None:
    leaves = [
        errors.NotFound,
        errors.AlreadyExists,
        errors.InvalidArgument,
        errors.FailedPrecondition,
        errors.EtagMismatch,
        errors.ResourceExhausted,
        errors.Unauthenticated,
        errors.Unavailable,
        errors.Relayed,
    ]
    assert set(errors.KalciferError.__subclasses__()) == set(leaves)
    samples: list[errors.KalciferError] = [
        errors.NotFound("a", "b"),
        errors.AlreadyExists("x"),
        errors.InvalidArgument.single("f", "bad"),
        errors.FailedPrecondition("R", "m"),
        errors.EtagMismatch("a", "b"),
        errors.ResourceExhausted("R", "m"),
        errors.Unauthenticated("m"),
        errors.Unavailable("m"),
        errors.Relayed(grpc.StatusCode.OUT_OF_RANGE.value[0], "m", b""),
    ]
    codes = {status_for(e).code for e in samples}
    assert grpc.StatusCode.UNKNOWN not in codes
    assert grpc.StatusCode.INTERNAL not in codes
    assert len(codes) == len(samples)


# --- through a real in-process server -----------------------------------------------------------------------------


class _Raising:
    """A servicer whose method raises whatever the request names."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def Explode(self, request: Any, context: Any) -> Any:
        raise self.error


@pytest.fixture
async def channel_for() -> AsyncIterator[Any]:
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []

    async def start(error: BaseException) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        servicer = map_errors(type("Raising", (_Raising,), {}))(error)
        handler = grpc.method_handlers_generic_handler(
            "test.Raising",
            {
                "Explode": grpc.unary_unary_rpc_method_handler(
                    servicer.Explode,
                    request_deserializer=empty_pb2.Empty.FromString,
                    response_serializer=empty_pb2.Empty.SerializeToString,
                )
            },
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([handler])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return channel.unary_unary(
            "/test.Raising/Explode",
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )

    yield start
    for channel in channels:
        await channel.close(None)
    for server in servers:
        await server.stop(0)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (KeyError("x"), grpc.StatusCode.INTERNAL),
        (ValueError("x"), grpc.StatusCode.INTERNAL),
        (NotImplementedError(), grpc.StatusCode.UNIMPLEMENTED),
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), grpc.StatusCode.UNAVAILABLE),
        (errors.InvalidArgument.single("name", "must not be empty"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("flow", "x"), grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_handlers_answer_the_mapped_code_over_the_wire(
    channel_for: Any, error: BaseException, code: grpc.StatusCode
) -> None:
    call = await channel_for(error)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(call(empty_pb2.Empty()), 10)
    assert raised.value.code() == code


async def test_every_rpc_of_every_service_is_wrapped() -> None:
    from kalcifer_api.app import Collaborators, tenant_scoped_bindings
    from kalcifer_api.engine_client import EngineClient
    from kalcifer_api.grpc.tenants import TenantServicer
    from kalcifer_api.scheduler_client import SchedulerClient
    from kalcifer_common.sandbox import ExpressionSandbox
    from kalcifer_common.secrets import SecretBox
    from kalcifer_common.settings import ApiSettings
    from sqlalchemy.ext.asyncio import async_sessionmaker

    # Only the servicer classes matter here: an unbound session factory and idle channels are never used.
    # Async, so the channels are made on the running loop (a loop-less main thread has none after other tests).
    using = Collaborators(
        engine=EngineClient(ApiSettings()),
        scheduler=SchedulerClient(ApiSettings()),
        sandbox=ExpressionSandbox(),
        secrets=SecretBox([]),
    )
    bindings = tenant_scoped_bindings(async_sessionmaker(), using)
    await using.engine.close()
    await using.scheduler.close()
    servicers: list[Any] = [TenantServicer, *(type(b.servicer) for b in bindings)]
    for servicer in servicers:
        rpc_methods = [name for name in dir(servicer) if name[:1].isupper()]
        assert rpc_methods, servicer
        for name in rpc_methods:
            assert getattr(getattr(servicer, name), WRAPPED_MARKER, False), f"{servicer.__name__}.{name} is not wrapped"


def _aio_error(code: grpc.StatusCode, details: bytes = b"") -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", details)) if details else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details="from the engine", debug_error_string="")


def test_an_answer_about_the_request_is_relayed_with_its_details() -> None:
    original = status_for(errors.InvalidArgument.single("nodes[3].config.duration", '"30" is not a duration'))
    details = dict(original.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(details, bytes)
    relayed_status = status_for(relayed(_aio_error(grpc.StatusCode.INVALID_ARGUMENT, details)))
    assert relayed_status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert relayed_status.details == "from the engine"
    proto = status_pb2.Status.FromString(dict(relayed_status.trailing_metadata)["grpc-status-details-bin"])
    bad_request = error_details_pb2.BadRequest()
    assert proto.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "nodes[3].config.duration"


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_an_unreachable_dependency_is_unavailable(code: grpc.StatusCode) -> None:
    assert status_for(relayed(_aio_error(code))).code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN])
def test_a_broken_internal_call_is_our_bug_not_the_callers(code: grpc.StatusCode) -> None:
    assert status_for(relayed(_aio_error(code))).code == grpc.StatusCode.INTERNAL


def test_one_item_of_a_batch_is_answered_as_a_whole_call_would_be() -> None:
    # A failed call to another service inside one item is judged like a failed call (relayed), not as a bug.
    from_scheduler = answerable(_aio_error(grpc.StatusCode.UNAVAILABLE), "StartInstances")
    assert status_proto_for(from_scheduler).code == code_pb2.UNAVAILABLE
    assert status_proto_for(answerable(_aio_error(grpc.StatusCode.NOT_FOUND), "StartInstances")).code == (
        code_pb2.NOT_FOUND
    )
    assert status_proto_for(answerable(RuntimeError("a bug"), "StartInstances")).code == code_pb2.INTERNAL
    refusal = errors.NotFound("flow", "flows/x")
    assert answerable(refusal, "StartInstances") is refusal
