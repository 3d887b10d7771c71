"""How the PSP connectors read every way an HTTP call can fail, against a real local socket
that answers as told: only a call that never left this process is `NotProcessed`; anything
after the request went out, and any answer we cannot read, is an `OutcomeUnknown`."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from gateway_svc.domain.outcomes import (
    AuthenticationFailed,
    Authorization,
    CustomerActionRequired,
    NotProcessed,
    OutcomeUnknown,
    PspDeclined,
)
from gateway_svc.psp.connectors import SandboxConnector, StripeConnector, _env_proxy

pytestmark = pytest.mark.integration


def http_answer(status: str, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(body), body)


OK = http_answer("200 OK", b'{"id": "ch_1", "status": "authorized"}')


async def serving(answer: bytes | None, hang: bool = False):
    """A server that reads one request and sends `answer` (None: closes without a word)."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.read(65536))
        if hang:
            await asyncio.sleep(30)
        if answer is not None:
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], requests


def authorize(connector):
    return connector.authorize(
        card="card_1", amount=100, currency="usd", capture=False, idempotency_key="k1"
    )


def run_against(answer: bytes | None, connector_class=SandboxConnector, hang: bool = False):
    async def main():
        server, port, requests = await serving(answer, hang)
        if connector_class is StripeConnector:
            connector = StripeConnector(f"http://127.0.0.1:{port}", "sk_test_x", timeout=0.5)
        else:
            connector = SandboxConnector(f"http://127.0.0.1:{port}", timeout=0.5)
        try:
            return await authorize(connector), requests
        except Exception as error:  # noqa: BLE001 - the outcome is what the test reads
            return error, requests
        finally:
            await connector.close()
            server.close()

    return asyncio.run(main())


def test_a_connection_refused_never_left_this_process():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there

    async def main():
        connector = SandboxConnector(f"http://127.0.0.1:{port}", timeout=0.5)
        try:
            with pytest.raises(NotProcessed):
                await authorize(connector)
        finally:
            await connector.close()

    asyncio.run(main())


def test_an_answer_that_never_comes_is_unknown():
    outcome, requests = run_against(None, hang=True)
    assert isinstance(outcome, OutcomeUnknown) and len(requests) == 1


def test_a_connection_closed_after_the_request_is_unknown():
    outcome, requests = run_against(None)
    assert isinstance(outcome, OutcomeUnknown) and len(requests) == 1


def test_a_5xx_is_nothing_at_the_sandbox_and_unknown_at_stripe():
    answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    assert isinstance(run_against(answer)[0], NotProcessed)
    assert isinstance(run_against(answer, StripeConnector)[0], OutcomeUnknown)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 6\r\n\r\n<html>",
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["empty", "not-json", "redirect"],
)
def test_an_answer_that_cannot_be_read_is_unknown_and_no_redirect_is_followed(answer):
    outcome, requests = run_against(answer)
    assert isinstance(outcome, OutcomeUnknown)
    assert len(requests) == 1


def test_a_decline_and_an_authorization_are_read_as_such():
    error = b'{"code": "card_declined", "decline_code": "insufficient_funds", "type": "soft"}'
    declined, _ = run_against(http_answer("402 Payment Required", b'{"error": %s}' % error))
    assert isinstance(declined, PspDeclined) and declined.decline_code == "insufficient_funds"
    authorized, _ = run_against(OK)
    assert authorized.reference == "ch_1" and not authorized.captured


def stripe_intent(status: str, **fields) -> bytes:
    return http_answer("200 OK", json.dumps({"id": "pi_1", "status": status, **fields}).encode())


PAGE = "https://hooks.stripe.com/3d_secure_2/authenticate/pi_1"


@pytest.mark.parametrize(
    ("connector_class", "answer", "expected"),
    [
        (StripeConnector, stripe_intent("succeeded"), Authorization("pi_1", True)),
        (StripeConnector, stripe_intent("requires_capture"), Authorization("pi_1", False)),
        (
            StripeConnector,
            stripe_intent(
                "requires_action",
                next_action={"type": "redirect_to_url", "redirect_to_url": {"url": PAGE}},
            ),
            CustomerActionRequired("stripe", "pi_1", PAGE),
        ),
        (  # localstripe's: Stripe.js's action with no page, completed by its own call
            StripeConnector,
            stripe_intent(
                "requires_action",
                client_secret="pi_1_secret_x",  # noqa: S106 - a test value
                next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {"stripe_js": ""}},
            ),
            CustomerActionRequired(
                "stripe",
                "pi_1",
                "/v1/payment_intents/pi_1/_authenticate?client_secret=pi_1_secret_x",
            ),
        ),
        (
            StripeConnector,
            stripe_intent(
                "requires_payment_method",
                last_payment_error={"code": "payment_intent_authentication_failure"},
            ),
            AuthenticationFailed(),
        ),
        (StripeConnector, stripe_intent("processing"), OutcomeUnknown("stripe: processing")),
        (
            SandboxConnector,
            http_answer(
                "200 OK",
                b'{"id": "ch_1", "status": "requires_action", "next_action": {"type":'
                b' "redirect_to_url", "redirect_to_url": {"url": "http://sandbox/3ds/ch_1"}}}',
            ),
            CustomerActionRequired("sandbox", "ch_1", "http://sandbox/3ds/ch_1"),
        ),
        (
            SandboxConnector,
            http_answer("200 OK", b'{"id": "ch_1", "status": "failed"}'),
            AuthenticationFailed(),
        ),
    ],
    ids=[
        "stripe-succeeded",
        "stripe-requires-capture",
        "stripe-redirect",
        "localstripe-sdk",
        "stripe-authentication-failed",
        "stripe-processing",
        "sandbox-redirect",
        "sandbox-authentication-failed",
    ],
)
def test_a_payment_is_read_as_what_it_holds_or_what_it_waits_for(connector_class, answer, expected):
    outcome, _ = run_against(answer, connector_class)

    assert type(outcome) is type(expected)
    if isinstance(expected, Authorization):
        assert outcome == expected
    elif isinstance(expected, CustomerActionRequired):
        assert (outcome.psp, outcome.reference) == (expected.psp, expected.reference)
        assert outcome.url.endswith(expected.url)  # localstripe's: on its own API base
    elif isinstance(expected, AuthenticationFailed):
        assert outcome.as_payment_error()["code"] == "payment_intent_authentication_failure"
    else:
        assert not outcome.psp_at_fault  # a payment still moving is no failure of the PSP


def test_a_psp_base_with_a_path_is_refused_at_start():
    async def main():
        with pytest.raises(ValueError):
            SandboxConnector("http://127.0.0.1:1/psp", timeout=1)

    asyncio.run(main())


def test_the_environments_proxy_is_read_once_and_no_proxy_is_honoured(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://egress.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")

    assert _env_proxy("https://api.stripe.com") == "http://egress.internal:3128"
    assert _env_proxy("http://127.0.0.1:8430") is None
