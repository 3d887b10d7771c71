"""The server interceptor over an in-process grpc.aio server (grpc_testing cannot host aio
servicers): domain errors keep their code and details, unknown errors become INTERNAL, and
every call is counted by service, method and code."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paymesh.platform.errors import InvalidArgument, NotFound
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
        return gateway_pb2.PaymentIntent(id=request.id, amount=100)


def call(request_id: str):
    async def scenario():
        server = grpc.aio.server(interceptors=[ServerInterceptor("unit")])
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                try:
                    return await stub.GetPaymentIntent(
                        gateway_pb2.GetPaymentIntentRequest(id=request_id), timeout=5
                    )
                except grpc.aio.AioRpcError as error:
                    return error
        finally:
            await server.stop(None)

    return asyncio.run(scenario())


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
