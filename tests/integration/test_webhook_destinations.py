"""Where deliveries may go, checked where the connection is made: webhook_svc's sender against
a real receiver on loopback, with the production policy (nothing private) and with loopback
admitted. A hostname is resolved and checked at connection time, so a name that pointed at a
public address when the endpoint was created and at a private one now is still refused."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.receiver import Script, running_receiver
from webhook_svc.outbound.destinations import AddressPolicy, check_url
from webhook_svc.outbound.sender import Sender

pytestmark = pytest.mark.integration


def post(policy: AddressPolicy, url: str):
    async def send():
        sender = Sender(policy, timeout_seconds=2, user_agent="test")
        try:
            return await sender.post(url, b"{}", {"webhook-id": "evt_x"})
        finally:
            await sender.close()

    return asyncio.run(send())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_destination_is_refused_at_connection_unless_admitted(host):
    with running_receiver() as receiver:
        url = receiver.url("/hook", host=host)
        answer = post(AddressPolicy(), url)
        assert answer.status is None and answer.error.startswith("destination_refused"), answer
        assert receiver.requests == []  # nothing reached it
        assert post(AddressPolicy(["127.0.0.0/8", "::1/128"]), url).status == 200
        assert len(receiver.requests) == 1


def test_a_redirect_is_not_followed():
    with running_receiver() as receiver:
        receiver.scripts["/moved"] = Script(statuses=[302], headers={"Location": "/elsewhere"})
        assert post(AddressPolicy(["127.0.0.0/8"]), receiver.url("/moved")).status == 302
        assert [r.path for r in receiver.requests] == ["/moved"]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
        "http://224.0.0.1/x",
        # IPv6 addresses that lead to a private IPv4: 6to4, NAT64, IPv4-mapped, Teredo
        "http://[2002:7f00:1::]/x",
        "http://[2002:a9fe:a9fe::]/latest/meta-data",
        "http://[2002:a00:1::]/x",
        "http://[64:ff9b::a9fe:a9fe]/x",
        "http://[64:ff9b:1::a00:1]/x",
        "http://[::ffff:a00:1]/x",
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x",
    ],
)
def test_private_and_reserved_addresses_are_refused_at_creation(url):
    problem = asyncio.run(check_url(AddressPolicy(), url))
    assert problem and "not allowed" in problem


@pytest.mark.parametrize(
    "url", ["http://[2002:808:808::]/x", "https://[64:ff9b::808:808]:8443/x", "http://8.8.8.8/x"]
)
def test_an_ipv6_address_leading_to_a_public_ipv4_is_accepted_at_creation(url):
    assert asyncio.run(check_url(AddressPolicy(), url)) is None


@pytest.mark.parametrize(
    ("host", "ipv4"),
    [("[2002:7f00:1::]", "127.0.0.1"), ("[64:ff9b::7f00:1]", "127.0.0.1")],
)
def test_an_ipv6_literal_leading_to_loopback_is_refused_at_connection(host, ipv4):
    """Nothing is sent, and the error names what it leads to (before, a 6to4 literal was
    connected to: whatever relays 2002::/16 here would have carried it to 127.0.0.1)."""
    with running_receiver() as receiver:
        answer = post(AddressPolicy(), receiver.url("/hook", host=host))
        assert answer.status is None and answer.error.startswith("destination_refused"), answer
        assert ipv4 in answer.error
        assert receiver.requests == []
