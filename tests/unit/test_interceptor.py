"""The server interceptor over an in-process grpc.aio server (grpc_testing cannot host aio
servicers): domain errors keep their code and details, unknown errors become INTERNAL, and
every call is counted by service, method and code."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy.exc import OperationalError

from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paymesh.platform.errors import FieldViolation, InvalidArgument, NotFound
from paymesh.platform.idempotency.rpc import request_key
from paymesh.platform.interceptors import ServerInterceptor
from paymesh.platform.metrics import REQUESTS


class Servicer(gateway_pb2_grpc.GatewayServiceServicer):
    async def GetPaymentIntent(self, request, context):
        if request.id == "pi_missing":
            raise NotFound("no such payment_intent: 'pi_missing'", reason="resource_missing")
        if request.id == "bad":
            raise InvalidArgument.for_field("id", "invalid", "id is malformed")
        if request.id == "boom":
            raise RuntimeError("secret internal detail")
        if request.id == "pi_many_violations":
            raise InvalidArgument(
                [
                    FieldViolation(f"metadata.{'ü' * 200}{i}", "too_long", "d" * 1000)
                    for i in range(200)
                ]
            )
        if request.id == "pi_db_down":
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
        if request.id == "pi_key":
            return gateway_pb2.PaymentIntent(id=request.id, description=request_key() or "")
        if request.id.startswith("pi_4"):
            raise NotFound(f"no such payment_intent: {request.id!r}", reason="resource_missing")
        return gateway_pb2.PaymentIntent(id=request.id, amount=100)


def call(intent_id: str, metadata=(), raw: bytes | None = None):
    async def scenario():
        server = grpc.aio.server(interceptors=[ServerInterceptor("unit")])
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                raw_call = channel.unary_unary(
                    "/paymesh.gateway.v1.GatewayService/GetPaymentIntent",
                    response_deserializer=gateway_pb2.PaymentIntent.FromString,
                )
                try:
                    if raw is not None:
                        return await raw_call(raw, metadata=metadata, timeout=5)
                    return await stub.GetPaymentIntent(
                        gateway_pb2.GetPaymentIntentRequest(id=intent_id),
                        metadata=metadata,
                        timeout=5,
                    )
                except grpc.aio.AioRpcError as error:
                    return error
        finally:
            await server.stop(None)

    return asyncio.run(scenario())


def details(error: grpc.aio.AioRpcError, kind):
    for detail in rpc_status.from_call(error).details:
        message = kind()
        if detail.Unpack(message):
            return message
    return None


def count(code: str) -> float:
    return REQUESTS.labels("unit", "GetPaymentIntent", code)._value.get()


def test_a_successful_call_passes_through_and_is_counted():
    before = count("OK")

    reply = call("pi_ok")

    assert reply.id == "pi_ok"
    assert count("OK") == before + 1


def test_not_found_keeps_its_code_message_and_reason():
    before = count("NOT_FOUND")

    error = call("pi_missing")

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "pi_missing" in error.details()
    info = error_details_pb2.ErrorInfo()
    assert rpc_status.from_call(error).details[0].Unpack(info)
    assert info.reason == "resource_missing"
    assert count("NOT_FOUND") == before + 1


def test_invalid_input_carries_a_field_violation():
    error = call("bad")

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = error_details_pb2.BadRequest()
    assert rpc_status.from_call(error).details[1].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "id"


@pytest.mark.filterwarnings("ignore")
def test_an_unexpected_exception_is_internal_and_its_text_stays_inside():
    before = count("INTERNAL")

    error = call("boom")

    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"
    assert count("INTERNAL") == before + 1


def test_every_error_names_the_request_it_answers():
    error = call("pi_missing", metadata=(("x-request-id", "req-7f3a"),))

    assert details(error, error_details_pb2.RequestInfo).request_id == "req-7f3a"


def test_a_card_number_the_caller_sent_is_never_echoed():
    error = call("pi_4242424242424242", metadata=(("x-request-id", "4000000000000002"),))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "4242424242424242" not in error.details()
    assert error.details().endswith("************4242'")
    assert details(error, error_details_pb2.RequestInfo).request_id == "************0002"


@pytest.mark.parametrize("bad", ["pi_a\x00b", "pi_\x07", "pi_" + "a" * 5001])
def test_control_characters_and_huge_strings_are_refused_before_the_handler(bad):
    error = call(bad)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violation = details(error, error_details_pb2.BadRequest).field_violations[0]
    assert violation.field == "id"
    assert violation.reason in ("invalid_characters", "too_long")


def test_bytes_that_are_not_the_message_are_invalid_input_not_internal():
    not_utf8 = b"\x0a\x04pi_\xff"  # field 1 (id), 4 bytes, the last not UTF-8

    error = call("", raw=not_utf8)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "class" not in error.details()
    assert details(error, error_details_pb2.BadRequest).field_violations[0].field == "request"


def test_an_error_with_hundreds_of_violations_still_fits_the_trailers():
    """A gRPC client refuses trailers over 8 KiB: such an error must still reach it whole."""
    error = call("pi_many_violations")

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "and 197 more" in error.details()
    assert 1 <= len(details(error, error_details_pb2.BadRequest).field_violations) <= 20
    # Under the soft limit, not merely lucky between the soft and the hard one.
    sent = sum(len(k) + len(v) for k, v in error.trailing_metadata())
    assert sent + len(error.details().encode()) * 3 < 8192


def test_a_database_outage_is_unavailable_not_internal():
    error = call("pi_db_down")

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert details(error, error_details_pb2.ErrorInfo).reason == "database_unavailable"
    assert "SELECT" not in error.details()


def test_a_database_outage_advises_the_same_key_only_to_a_request_that_had_one():
    keyless = call("pi_db_down")
    keyed = call("pi_db_down", metadata=(("idempotency-key", "order-1"),))

    assert "idempotency" not in keyless.details().lower()
    assert "may or may not" in keyless.details()
    assert details(keyless, error_details_pb2.ErrorInfo).reason == "database_unavailable"
    assert "retry with the same Idempotency-Key" in keyed.details()


def test_the_idempotency_key_is_read_once_and_handed_to_the_servicer():
    assert call("pi_key", metadata=(("idempotency-key", "order-7"),)).description == "order-7"
    assert call("pi_key").description == ""


def test_a_bad_idempotency_key_is_refused_only_when_the_servicer_asks_for_it():
    """The servicer authenticates its caller first: nothing of a request is judged before."""
    bad = (("idempotency-key", "k" * 256),)

    refused = call("pi_key", metadata=bad)

    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = error_details_pb2.BadRequest()
    assert rpc_status.from_call(refused).details[1].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "idempotency-key"
    assert call("pi_ok", metadata=bad).id == "pi_ok"
