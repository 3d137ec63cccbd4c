"""`OutboundClient`: one HTTP request to a tenant's endpoint, checked, pinned, bounded in time and size.

The host is resolved and checked by `OutboundPolicy`; the request then goes to the checked address (the URL's
host travels in `Host` and, for https, as the TLS server name, so certificates are verified against it as usual).
Redirects are not followed (a 3xx is an answer like any other), proxies from the environment are ignored, the
whole request (resolution, connection, answer) has one deadline, and an answer longer than the cap is refused
while it streams, never buffered whole.

Every way of getting no answer (a refused address, a name that does not resolve, a refused or reset connection, a
TLS failure, the deadline) is told to the tenant in the same words, `no answer from <host>`, and retried alike, so
calls cannot map what listens behind the firewall; the real reason goes to the operator's log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from kalcifer_common.logging import get_logger
from kalcifer_common.outbound_policy import OutboundError, OutboundPolicy

_log = get_logger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}


class _NoAnswer(Exception):
    """A transport failure, before it is told to the tenant as `no answer from <host>`."""


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    """An answer: its status, headers and (capped) body."""

    status: int
    headers: httpx.Headers
    body: bytes


class OutboundClient:
    """Makes checked requests; one instance (and connection pool) per scheduler process."""

    def __init__(self, policy: OutboundPolicy, *, max_response_bytes: int) -> None:
        self.policy = policy
        self.max_response_bytes = max_response_bytes
        self._http = httpx.AsyncClient(follow_redirects=False, trust_env=False)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None,
        timeout_seconds: float,
        https_only: bool = False,
    ) -> OutboundResponse:
        """One request; raises `OutboundError`: `retryable` for every kind of no answer (all told alike), not for
        a URL that is no http(s) URL, plain http where `https_only` (unless allowlisted), or an oversized answer."""
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL as error:
            raise OutboundError(f"{url[:200]!r} is not a URL: {error}", retryable=False) from error
        if target.scheme not in _DEFAULT_PORTS or not target.host:
            raise OutboundError(f"{url[:200]!r} is not an http:// or https:// URL", retryable=False)
        port = target.port or _DEFAULT_PORTS[target.scheme]
        if https_only and target.scheme == "http" and not self.policy.allows_plain_http(target.host, port):
            raise OutboundError(f"{target.host} must be called over https://", retryable=False)
        try:
            async with asyncio.timeout(timeout_seconds):
                addresses = await self.policy.addresses(target.host, port)
                return await self._send(method, target, addresses[0], headers, content, timeout_seconds)
        except (TimeoutError, _NoAnswer, OutboundError) as error:
            if isinstance(error, OutboundError) and not error.retryable:
                raise  # the endpoint answered (too much): nothing about the network to hide
            # A refused address, a name that does not resolve, a transport failure, the deadline: told alike.
            why = f"no answer within {timeout_seconds:.3g}s" if isinstance(error, TimeoutError) else str(error)
            _log.warning("outbound call got no answer", host=target.host, port=port, reason=why)
            raise OutboundError(f"no answer from {target.host}", retryable=True) from error

    async def _send(
        self,
        method: str,
        target: httpx.URL,
        address: str,
        headers: Mapping[str, str],
        content: bytes | None,
        timeout_seconds: float,
    ) -> OutboundResponse:
        pinned = target.copy_with(host=address)
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        request_headers = {**headers, "Host": target.netloc.decode("ascii")}
        try:
            async with self._http.stream(
                method,
                pinned,
                headers=request_headers,
                content=content,
                timeout=httpx.Timeout(timeout_seconds),
                extensions=extensions,
            ) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_response_bytes:
                    raise self._too_large()
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_response_bytes:
                        raise self._too_large()
                return OutboundResponse(response.status_code, response.headers, bytes(body))
        except httpx.TimeoutException as error:
            raise _NoAnswer(f"no answer within {timeout_seconds:.3g}s") from error
        except httpx.HTTPError as error:
            raise _NoAnswer(f"{type(error).__name__}: {error}") from error

    def _too_large(self) -> OutboundError:
        return OutboundError(f"the answer is larger than {self.max_response_bytes} bytes", retryable=False)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
