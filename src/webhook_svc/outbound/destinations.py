"""Where webhooks may go (SSRF): only http(s) URLs whose host resolves to public addresses,
unless an operator's allowlist admits the network (`WEBHOOK_ALLOWED_NETWORKS`: `make run`
admits loopback; the production default admits nothing private). A URL is checked when an
endpoint is created or changed, and its addresses again at every connection, since DNS can
change between the two. An IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64, 6to4,
Teredo) is refused for what its IPv4 would be refused for."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

MAX_URL_LENGTH = 2048
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(OSError):
    """A URL or address that webhooks may not go to; the message says why."""


def url_problem(url: str) -> str | None:
    """What is wrong with a URL as a webhook destination before any DNS, or None."""
    if len(url) > MAX_URL_LENGTH:
        return f"url must be at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        return "url is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "url must be an http or https URL"
    if not parts.hostname:
        return "url must name a host"
    if parts.username is not None or parts.password is not None:
        return "url must not hold credentials"
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        return "url must not hold spaces or control characters"
    return None


# NAT64's well-known prefix (RFC 6052): a translator carries the connection to the IPv4 in
# the last 32 bits, so such an address is that IPv4.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def carried_ipv4(address: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address leads to, and how it carries them ("" and [] if
    it carries none): IPv4-mapped and NAT64 (the address is that IPv4), 6to4 (a relay
    reaches it) and Teredo (the server, and the client the last 32 bits name)."""
    if address.ipv4_mapped:
        return "IPv4-mapped", [address.ipv4_mapped]
    if address in NAT64:
        return "NAT64", [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour:
        return "6to4", [address.sixtofour]
    if address.teredo:
        return "Teredo", list(address.teredo)
    return "", []


class AddressPolicy:
    def __init__(self, allowed_networks: Iterable[str] = ()):
        self._allowed = [ipaddress.ip_network(n.strip()) for n in allowed_networks if n.strip()]

    def refusal(self, address: IpAddress) -> str | None:
        """Why an address is refused ("loopback address", "private address …"), or None if
        webhooks may go there. An IPv6 address that carries an IPv4 one is refused for what
        that IPv4 would be refused for."""
        if self._admitted(address):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            how, carried = carried_ipv4(address)
            for ipv4 in carried:
                refusal = self.refusal(ipv4)
                if refusal:
                    return f"{refusal} {ipv4}, carried by {how} {address}"
            if how in ("IPv4-mapped", "NAT64"):
                return None  # the address is that IPv4, which may be reached
        return self._kind_refused(address)

    def _admitted(self, address: IpAddress) -> bool:
        return any(address in network for network in self._allowed)

    @staticmethod
    def _kind_refused(address: IpAddress) -> str | None:
        for kind in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
            if getattr(address, f"is_{kind}"):
                return kind.replace("_", "-") + " address"
        if not address.is_global:
            return "non-public address"
        return None

    async def check_host(self, host: str, port: int) -> None:
        """Resolves `host` and raises DestinationRefused if any of its addresses is refused."""
        self.check_addresses(host, await _addresses(host, port))

    def check_addresses(self, host: str, addresses: Iterable[str]) -> None:
        for text in addresses:
            refusal = self.refusal(ipaddress.ip_address(text.split("%", 1)[0]))
            if refusal:
                raise DestinationRefused(f"{host} resolves to a {refusal}")


async def check_url(policy: AddressPolicy, url: str) -> str | None:
    """What is wrong with a URL as a destination, DNS included, or None."""
    problem = url_problem(url)
    if problem:
        return problem
    parts = urlsplit(url)
    try:
        await policy.check_host(parts.hostname, parts.port or _default_port(parts.scheme))
    except DestinationRefused as refused:
        return f"url is not allowed: {refused}"
    except OSError:
        return "url's host does not resolve"
    return None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing addresses the policy refuses: what is checked is what is
    connected to. (aiohttp does not resolve an IP literal: the sender checks those itself.)"""

    def __init__(self, policy: AddressPolicy):
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        self._policy.check_addresses(host, [r["host"] for r in results])
        return results

    async def close(self) -> None:
        await self._inner.close()


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


async def _addresses(host: str, port: int) -> list[str]:
    if is_ip_literal(host):
        return [host]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]
