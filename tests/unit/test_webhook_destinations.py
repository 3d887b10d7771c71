"""Where merchant webhooks may go, as plain rules: an IPv6 address that carries an IPv4 one
(IPv4-mapped, NAT64, 6to4, Teredo) is judged by the IPv4 it leads to, at creation and at
connection (the resolver's check), under the production default and with an allowlist."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from webhook_svc.outbound.destinations import AddressPolicy, DestinationRefused, GuardedResolver

# Each carries the IPv4 named beside it, refused for the reason named.
CARRYING_PRIVATE = {
    "2002:7f00:1::": ("127.0.0.1", "loopback"),  # 6to4
    "2002:a9fe:a9fe::": ("169.254.169.254", "link-local"),
    "2002:a00:1::": ("10.0.0.1", "private"),
    "2002:c0a8:101:1::5": ("192.168.1.1", "private"),
    "64:ff9b::7f00:1": ("127.0.0.1", "loopback"),  # NAT64, the well-known prefix
    "64:ff9b::a9fe:a9fe": ("169.254.169.254", "link-local"),
    "64:ff9b::a00:1": ("10.0.0.1", "private"),
    "::ffff:7f00:1": ("127.0.0.1", "loopback"),  # IPv4-mapped
    "::ffff:a9fe:a9fe": ("169.254.169.254", "link-local"),
    # Teredo: server 65.54.227.120, client (the last 32 bits XOR 0xffffffff) as named
    "2001:0:4136:e378:8000:63bf:80ff:fffe": ("127.0.0.1", "loopback"),
    "2001:0:4136:e378:8000:63bf:5601:5601": ("169.254.169.254", "link-local"),
    "2001:0:4136:e378:8000:63bf:f5ff:fffe": ("10.0.0.1", "private"),
}


@pytest.mark.parametrize(("address", "carried"), CARRYING_PRIVATE.items())
def test_an_ipv6_address_carrying_a_private_ipv4_is_refused_naming_it(address, carried):
    ipv4, why = carried
    refusal = AddressPolicy().refusal(ipaddress.ip_address(address))

    assert refusal is not None and refusal.startswith(why), refusal
    assert ipv4 in refusal, refusal


@pytest.mark.parametrize(
    "address",
    [
        "2002:808:808::",  # 6to4 of 8.8.8.8
        "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8: a DNS64 network's way to reach 8.8.8.8
        "::ffff:8.8.8.8",
        "8.8.8.8",
        "2606:4700:4700::1111",
    ],
)
def test_an_ipv6_address_carrying_a_public_ipv4_is_allowed_as_that_ipv4_is(address):
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "why"),
    [
        # Teredo is not publicly routable whatever it carries (8.8.8.8 here).
        ("2001:0:808:808:8000:63bf:f7f7:f7f7", "private"),
        # The local-use NAT64 prefix: where it carries an IPv4 is the operator's choice.
        ("64:ff9b:1::808:808", "reserved"),
        ("64:ff9b:1:7f00:1::", "reserved"),
    ],
)
def test_teredo_and_local_use_nat64_stay_refused_even_around_a_public_ipv4(address, why):
    assert AddressPolicy().refusal(ipaddress.ip_address(address)).startswith(why)


def test_an_allowlisted_ipv4_is_allowed_however_it_is_carried():
    policy = AddressPolicy(["127.0.0.0/8"])
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::"):
        assert policy.refusal(ipaddress.ip_address(address)) is None, address
    assert policy.refusal(ipaddress.ip_address("2002:a9fe:a9fe::")).startswith("link-local")


class _Answers:
    """Stands in for aiohttp's resolver: answers every name with the given addresses."""

    def __init__(self, *addresses: str):
        self._addresses = addresses

    async def resolve(self, host, port=0, family=0):
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self._addresses
        ]


def resolved(*addresses: str) -> list[str]:
    """What the connection-time check lets through of a name that resolves to `addresses`."""

    async def resolve():
        resolver = GuardedResolver(AddressPolicy())
        resolver._inner = _Answers(*addresses)
        return [answer["host"] for answer in await resolver.resolve("hooks.example.com", 443)]

    return asyncio.run(resolve())


@pytest.mark.parametrize("address", ["2002:7f00:1::", "2002:a9fe:a9fe::", "64:ff9b::a00:1"])
def test_a_name_resolving_to_a_carried_private_ipv4_is_refused_at_connection(address):
    with pytest.raises(DestinationRefused) as refused:
        resolved("93.184.216.34", address)
    assert "hooks.example.com resolves to a" in str(refused.value)


def test_a_name_resolving_to_a_carried_public_ipv4_is_connected_to():
    addresses = ["2002:808:808::", "64:ff9b::808:808"]
    assert resolved(*addresses) == addresses
