"""AMQP_URL's list form: several nodes of a RabbitMQ cluster, tried in turn from the one that
answered last."""

from __future__ import annotations

import asyncio
import socket

import pytest
from pydantic import ValidationError

from paymesh.platform.amqp import Brokers, BrokerUnavailable, broker_urls, open_channel
from paymesh.platform.config import ServiceSettings

A = "amqp://guest:guest@10.0.0.1:5672/%2F"
B = "amqp://guest:guest@10.0.0.2:5673/%2F"
C = "amqp://guest:guest@10.0.0.3:5674/vh"


def test_one_url_or_several_comma_separated():
    assert broker_urls(A) == [A]
    assert broker_urls(f"{A}, {B} ,{C}") == [A, B, C]
    with pytest.raises(ValueError, match="empty"):
        broker_urls(f"{A},,{B}")


def test_settings_refuse_an_address_that_is_not_an_amqp_url(monkeypatch):
    monkeypatch.setenv("AMQP_URL", f"{A},{B}")
    assert ServiceSettings(grpc_port=0, http_port=0).amqp_url == f"{A},{B}"
    for bad in (f"{A},", f"{A},rabbit-b:5672", ""):
        monkeypatch.setenv("AMQP_URL", bad)
        with pytest.raises(ValidationError, match="AMQP_URL"):
            ServiceSettings(grpc_port=0, http_port=0)


def test_the_node_that_answered_last_is_tried_first_then_the_others_in_order():
    brokers = Brokers(f"{A},{B},{C}")
    ports = lambda: [p.port for p in brokers.in_turn()]  # noqa: E731
    assert ports() == [5672, 5673, 5674]
    assert [p.virtual_host for p in brokers.in_turn()] == ["/", "/", "vh"]
    brokers.answered(brokers.in_turn()[1])
    assert ports() == [5673, 5674, 5672]
    brokers.answered(brokers.in_turn()[1])
    assert ports() == [5674, 5672, 5673]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_when_no_node_answers_the_error_names_each():
    first, second = closed_port(), closed_port()
    brokers = Brokers(
        f"amqp://guest:guest@127.0.0.1:{first}/%2F,amqp://guest:guest@127.0.0.1:{second}/%2F"
    )

    async def set_up(_channel):
        raise AssertionError("no channel to set up")

    with pytest.raises(BrokerUnavailable) as raised:
        asyncio.run(open_channel(brokers, set_up, lambda _connection: None))
    assert f"127.0.0.1:{first}" in str(raised.value)
    assert f"127.0.0.1:{second}" in str(raised.value)
