"""`OutboundClient`: one HTTP request to a tenant's endpoint, checked, pinned, bounded in time and size.

The host is resolved and checked by `OutboundPolicy`; the request then goes to the checked address (the URL's
host travels in `Host` and, for https, as the TLS server name, so certificates are verified against it as usual).
Redirects are not followed (a 3xx is an answer like any other), proxies from the environment are ignored, the
whole request (resolution, connection, answer) has one deadline, and an answer longer than the cap is refused
while it streams, never buffered whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from kalcifer_scheduler.outbound.policy import OutboundError, OutboundPolicy, OutboundRefused

_DEFAULT_PORTS = {"http": 80, "https": 443}


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
        self, method: str, url: str, *, headers: Mapping[str, str], content: bytes | None, timeout_seconds: float
    ) -> OutboundResponse:
        """One request; raises `OutboundRefused` (never retry) or `OutboundError` (`retryable` says)."""
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL as error:
            raise OutboundRefused(f"{url[:200]!r} is not a URL: {error}") from error
        if target.scheme not in _DEFAULT_PORTS or not target.host:
            raise OutboundRefused(f"{url[:200]!r} is not an http:// or https:// URL")
        port = target.port or _DEFAULT_PORTS[target.scheme]
        try:
            async with asyncio.timeout(timeout_seconds):
                addresses = await self.policy.addresses(target.host, port)
                return await self._send(method, target, addresses[0], headers, content, timeout_seconds)
        except TimeoutError as error:
            raise OutboundError(f"no answer within {timeout_seconds:.3g}s", retryable=True) from error

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
            raise OutboundError(f"no answer within {timeout_seconds:.3g}s", retryable=True) from error
        except httpx.HTTPError as error:
            raise OutboundError(f"{target.host}: {type(error).__name__}: {error}", retryable=True) from error

    def _too_large(self) -> OutboundError:
        return OutboundError(f"the answer is larger than {self.max_response_bytes} bytes", retryable=False)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
