"""Where outbound calls may go (SPEC 6.10): public addresses only, unless the operator allowlisted the target.

A tenant chooses the URLs its flows call, so a URL is hostile until its *resolved* addresses are checked:
loopback, private, link-local (cloud metadata at 169.254.169.254 included), shared, multicast and reserved
addresses are refused, and so is a host with any such address among its answers. The caller then connects to a
checked address (`OutboundClient` pins it), so a DNS answer that changes between check and connect cannot move the
call. `OUTBOUND_ALLOWLIST` lifts the refusal: comma-separated hosts (`hooks.internal`), `host:port`
(`127.0.0.1:8080`) or CIDRs (`10.20.0.0/16`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class OutboundError(Exception):
    """A call that did not get an answer; `retryable` says whether another attempt may get one."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class OutboundRefused(OutboundError):
    """The target is not a place calls may go. Its message is for the operator's log: the tenant is told what an
    unreachable host tells (`OutboundClient`), so refusals are no oracle of what lies behind the firewall."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class OutboundPolicy:
    """The allowlist, parsed; `addresses` answers where a host may be called."""

    hosts: frozenset[str] = frozenset()
    host_ports: frozenset[tuple[str, int]] = frozenset()
    networks: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def parse(cls, allowlist: str) -> OutboundPolicy:
        """Read `OUTBOUND_ALLOWLIST`; raises `ValueError` naming an entry that is none of host, host:port, CIDR."""
        hosts: set[str] = set()
        host_ports: set[tuple[str, int]] = set()
        networks: list[IPNetwork] = []
        for raw in allowlist.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            host, colon, port = entry.rpartition(":")
            if colon and port.isdigit() and host and "/" not in host:
                host_ports.add((host.strip("[]"), int(port)))
            elif "/" not in entry and ":" not in entry:
                hosts.add(entry)
            else:
                raise ValueError(f"OUTBOUND_ALLOWLIST entry {raw.strip()!r} is not a host, host:port or CIDR")
        return cls(frozenset(hosts), frozenset(host_ports), tuple(networks))

    def _listed(self, host: str, port: int) -> bool:
        name = host.lower().strip("[]")
        return name in self.hosts or (name, port) in self.host_ports

    def allows_plain_http(self, host: str, port: int) -> bool:
        """Whether `host:port` is allowlisted by name, by `host:port`, or (an address literal) by CIDR: the only
        destinations a webhook node type may call over plain http."""
        if self._listed(host, port):
            return True
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def _address_allowed(self, address: IPAddress) -> bool:
        return _public(address) or any(address in network for network in self.networks)

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses of `host` a call to `host:port` may connect to, in resolver order; raises
        `OutboundRefused` (a refused address, naming it) or a retryable `OutboundError` (the name did not resolve)."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as error:
            raise OutboundError(f"{host} does not resolve: {error}", retryable=True) from error
        found: list[str] = []
        for info in infos:
            address = str(info[4][0]).split("%", 1)[0]
            if address not in found:
                found.append(address)
        if not found:
            raise OutboundError(f"{host} has no address", retryable=True)
        if self._listed(host, port):
            return found
        for address in found:
            if not self._address_allowed(ipaddress.ip_address(address)):
                raise OutboundRefused(
                    f"{host} resolves to {address}, a loopback, private, link-local or reserved address; "
                    "calls go there only when OUTBOUND_ALLOWLIST lists it"
                )
        return found
