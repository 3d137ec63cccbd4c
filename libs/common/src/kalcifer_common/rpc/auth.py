"""Authentication of every call: API keys for tenants, the admin token for TenantService, the internal token
between services.

`AuthInterceptor` authenticates in `intercept_service`, from the call's metadata, before the request body is
read: a caller that fails gets a handler that never decodes the body (its bytes are dropped unparsed) and aborts
with `UNAUTHENTICATED` (with an `ErrorInfo`), so an anonymous caller cannot make the server parse a large or
hostile message. An optional `Admission` (rate limits) then decides on the authenticated caller, as cheaply.
An admitted call runs the service's handler with the caller's `Principal` in a context variable; a body that is no
valid message, or holds U+0000 in any string (`nul_text`), is INVALID_ARGUMENT before the handler runs. A database
error while a key is looked up is `UNAVAILABLE` (retry), never `UNKNOWN`.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf.message import Message

from kalcifer_common import errors
from kalcifer_common.rpc.errors import abort_with
from kalcifer_common.rpc.nul_text import nul_path

if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # the runtime class is not generic
    _ServerInterceptor = grpc.aio.ServerInterceptor


class AuthPolicy(Enum):
    """What a method demands of its caller."""

    PUBLIC = "public"  # health and reflection: operators and load balancers call them without secrets
    API_KEY = "api_key"
    ADMIN = "admin"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a tenant (through one of its API keys), the operator admin, or another Kalcifer service."""

    policy: AuthPolicy
    tenant_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyIdentity:
    """What an API key resolves to."""

    tenant_id: uuid.UUID
    api_key_id: uuid.UUID


ApiKeyLookup = Callable[[str], Awaitable[ApiKeyIdentity | None]]
"""Resolves a SHA-256 hex digest of a raw key to its tenant, or None when unknown or revoked."""

Admission = Callable[[Principal], Awaitable["errors.KalciferError | None"]]
"""Decides, after authentication and still before the body is read, whether the caller's call goes on: None, or
the error to refuse it with (the API's per-tenant rate limits)."""

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("kalcifer_principal", default=None)

PUBLIC_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


def current_principal() -> Principal:
    """The authenticated caller of the RPC being handled."""
    principal = _principal.get()
    if principal is None:
        raise errors.Unauthenticated("no authenticated caller")
    return principal


def current_tenant_id() -> uuid.UUID:
    """The tenant of the RPC being handled; every tenant-scoped repository call takes it."""
    principal = current_principal()
    if principal.tenant_id is None:
        raise errors.Unauthenticated("this call needs a tenant API key")
    return principal.tenant_id


def hash_api_key(raw_key: str) -> str:
    """SHA-256 of the raw key, lowercase hex: the only form in which keys are stored."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of an `authorization: Bearer <token>` header; the scheme word is case-insensitive."""
    values = [v for k, v in (metadata or ()) if k.lower() == "authorization"]
    if not values:
        raise errors.Unauthenticated("missing authorization metadata: send 'authorization: Bearer <key>'")
    if len(values) > 1:
        raise errors.Unauthenticated("more than one authorization header")
    value = values[0]
    header = value.decode() if isinstance(value, bytes) else value
    parts = header.strip().split()
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
        raise errors.Unauthenticated("malformed authorization metadata: expected 'Bearer <key>'")
    return parts[1]


class ApiKeyCache:
    """A small TTL cache in front of the key lookup, bounded in size.

    Revocation must be effective within a few seconds on every replica: entries live `ttl_seconds`, after
    which the database is asked again. Unknown keys are cached too, so guessing costs no database round trip.
    """

    def __init__(self, lookup: ApiKeyLookup, *, ttl_seconds: float = 2.0, max_entries: int = 10_000) -> None:
        self._lookup = lookup
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, ApiKeyIdentity | None]] = OrderedDict()

    async def resolve(self, key_hash: str) -> ApiKeyIdentity | None:
        """The identity of a key hash, from the cache while fresh."""
        now = time.monotonic()
        cached = self._entries.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        identity = await self._lookup(key_hash)
        self._entries[key_hash] = (now + self._ttl, identity)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return identity


class AuthInterceptor(_ServerInterceptor):
    """Applies one `AuthPolicy` per service (by full service name); services not listed are refused."""

    def __init__(
        self,
        *,
        policies: Mapping[str, AuthPolicy],
        admin_token: str = "",
        internal_token: str = "",
        api_keys: ApiKeyCache | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._policies = {**dict.fromkeys(PUBLIC_SERVICES, AuthPolicy.PUBLIC), **policies}
        self._admission = admission
        self._admin_token = admin_token
        self._internal_token = internal_token
        self._api_keys = api_keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method: str = handler_call_details.method
        service = method.lstrip("/").rsplit("/", 1)[0]
        policy = self._policies.get(service)
        if policy is AuthPolicy.PUBLIC:
            return await continuation(handler_call_details)
        try:
            principal = await self._authenticate(policy, handler_call_details.invocation_metadata)
        except errors.KalciferError as error:
            return _refusal(error)
        if self._admission is not None and (refused := await self._admission(principal)) is not None:
            return _refusal(refused)
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary is None:
            # Every tenant-facing RPC of ours is unary; refuse anything else rather than let it pass unchecked.
            return grpc.unary_unary_rpc_method_handler(_refuse_streaming)
        behaviour = cast(Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]], handler.unary_unary)
        return grpc.unary_unary_rpc_method_handler(
            _as(principal, behaviour),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    async def _authenticate(self, policy: AuthPolicy | None, metadata: Any) -> Principal:
        if policy is None:
            raise errors.Unauthenticated("this service accepts no callers")
        token = bearer_token(metadata)
        if policy is AuthPolicy.ADMIN:
            if not self._admin_token or not hmac.compare_digest(token.encode(), self._admin_token.encode()):
                raise errors.Unauthenticated("this call needs the operator admin token")
            return Principal(policy)
        if policy is AuthPolicy.INTERNAL:
            if not self._internal_token or not hmac.compare_digest(token.encode(), self._internal_token.encode()):
                raise errors.Unauthenticated("this call needs the internal service token")
            return Principal(policy)
        if self._api_keys is None:
            raise errors.Unauthenticated("API keys are not accepted here")
        try:
            identity = await self._api_keys.resolve(hash_api_key(token))
        except Exception as error:
            raise errors.Unavailable("cannot check the API key right now; retry") from error
        if identity is None:
            raise errors.Unauthenticated("unknown or revoked API key")
        return Principal(policy, tenant_id=identity.tenant_id, api_key_id=identity.api_key_id)


def _as(
    principal: Principal, behaviour: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    """`behaviour` run with `principal` as the caller."""

    async def authenticated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, _Refused):
            await abort_with(context, request.error)
        token = _principal.set(principal)
        try:
            return await behaviour(request, context)
        finally:
            _principal.reset(token)

    return authenticated


@dataclass(frozen=True, slots=True)
class _Refused:
    """What `_tolerant` decodes a body to when the handler must answer `error` instead of running."""

    error: errors.KalciferError


_UNDECODABLE = _Refused(errors.InvalidArgument.single("request", "is not a valid protobuf message of this method"))


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, answering a `_Refused` instead of raising (gRPC would answer INTERNAL for the raise), and
    for a message with U+0000 in any string (which no column can store: `nul_text`)."""
    if deserializer is None:
        return None

    def decode(body: bytes) -> Any:
        try:
            message = deserializer(body)
            # U+0000 is the byte 0 in UTF-8: a body without one cannot hold it, and most skip the walk.
            path = nul_path(message) if b"\x00" in body and isinstance(message, Message) else None
        except Exception:  # noqa: BLE001 - DecodeError, RecursionError on absurd nesting, ...
            return _UNDECODABLE
        if path is not None:
            return _Refused(errors.InvalidArgument.single(path, "must not contain the NUL character (U+0000)"))
        return message

    return decode


def _refusal(error: errors.KalciferError) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler that drops the request's bytes undecoded and aborts with `error`."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort_with(context, error)

    return grpc.unary_unary_rpc_method_handler(refuse, request_deserializer=_undecoded)


def _undecoded(body: bytes) -> None:
    return None


async def _refuse_streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "streaming methods are not offered")
