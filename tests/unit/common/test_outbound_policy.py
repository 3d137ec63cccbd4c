"""Where outbound calls may go (SPEC 6.10): resolved addresses are checked; OUTBOUND_ALLOWLIST lifts the refusal."""

from __future__ import annotations

import pytest
from kalcifer_common.outbound_policy import OutboundError, OutboundPolicy, OutboundRefused

REFUSED = [
    "127.0.0.1",  # loopback
    "127.8.9.10",
    "10.1.2.3",  # private
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local: cloud metadata
    "100.64.0.1",  # shared (carrier-grade NAT)
    "0.0.0.0",
    "224.0.0.1",  # multicast
    "::1",
    "fe80::1",
    "fd00:ec2::254",  # unique-local: a metadata address
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
]


@pytest.mark.parametrize("address", REFUSED)
async def test_a_non_public_address_is_refused_naming_it_and_the_setting_for_the_operator(address: str) -> None:
    with pytest.raises(OutboundRefused) as refused:
        await OutboundPolicy.parse("").addresses(address, 443)
    assert address in str(refused.value)
    assert "OUTBOUND_ALLOWLIST" in str(refused.value)
    assert refused.value.retryable  # like any unreachable host (the client tells the tenant no more than that)


async def test_a_name_is_checked_on_what_it_resolves_to() -> None:
    with pytest.raises(OutboundRefused, match="localhost resolves to"):
        await OutboundPolicy.parse("").addresses("localhost", 80)


async def test_a_public_address_is_allowed() -> None:
    assert await OutboundPolicy.parse("").addresses("93.184.216.34", 443) == ["93.184.216.34"]


@pytest.mark.parametrize(
    ("allowlist", "host", "port"),
    [
        ("127.0.0.1", "127.0.0.1", 8080),  # an address: any port
        ("10.0.0.0/8", "10.20.30.40", 443),  # a CIDR
        ("localhost", "localhost", 9000),  # a host: any port, whatever it resolves to
        ("127.0.0.1:8080, other.example", "127.0.0.1", 8080),  # host:port, spaces around entries
        ("[::1]:8443", "::1", 8443),
    ],
)
async def test_the_allowlist_lets_listed_targets_through(allowlist: str, host: str, port: int) -> None:
    assert await OutboundPolicy.parse(allowlist).addresses(host, port)


@pytest.mark.parametrize(
    ("allowlist", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8081),  # another port of a host:port entry
        ("127.0.0.1", "127.0.0.2", 80),  # another loopback address
        ("10.0.0.0/16", "10.1.0.1", 80),  # outside the CIDR
        ("other.example", "localhost", 80),
    ],
)
async def test_the_allowlist_lets_nothing_else_through(allowlist: str, host: str, port: int) -> None:
    with pytest.raises(OutboundRefused):
        await OutboundPolicy.parse(allowlist).addresses(host, port)


@pytest.mark.parametrize(
    ("allowlist", "host", "port", "allowed"),
    [
        ("hooks.internal", "hooks.internal", 80, True),
        ("127.0.0.1:8080", "127.0.0.1", 8080, True),
        ("127.0.0.1:8080", "127.0.0.1", 80, False),
        ("10.0.0.0/8", "10.1.2.3", 80, True),
        ("10.0.0.0/8", "hooks.internal", 80, False),  # a name is not judged by what it might resolve to
        ("", "crm.example.com", 80, False),
    ],
)
def test_plain_http_is_for_allowlisted_destinations_only(allowlist: str, host: str, port: int, allowed: bool) -> None:
    assert OutboundPolicy.parse(allowlist).allows_plain_http(host, port) is allowed


@pytest.mark.parametrize("entry", ["http://x.example", "10.0.0.0/33", "host:port", "a/b"])
def test_a_malformed_allowlist_entry_is_refused_at_start(entry: str) -> None:
    with pytest.raises(ValueError, match="OUTBOUND_ALLOWLIST entry"):
        OutboundPolicy.parse(f"ok.example,{entry}")


async def test_a_name_that_does_not_resolve_may_be_retried() -> None:
    with pytest.raises(OutboundError) as failed:
        await OutboundPolicy.parse("").addresses("no-such-host.invalid", 443)
    assert failed.value.retryable
    assert not isinstance(failed.value, OutboundRefused)
