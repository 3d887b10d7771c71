"""Error translation: domain errors become gRPC codes with google.rpc details; anything
else becomes INTERNAL without leaking its text."""

from __future__ import annotations

import grpc
from google.rpc import code_pb2, error_details_pb2

from paymesh.platform import errors


def unpack(status, message_type):
    found = []
    for detail in status.details:
        message = message_type()
        if detail.Unpack(message):
            found.append(message)
    return found


def test_invalid_argument_names_each_field_and_reason():
    error = errors.InvalidArgument(
        [
            errors.FieldViolation("card.number", "incorrect_number", "not a valid card number"),
            errors.FieldViolation("card.exp_year", "invalid_expiry_year", "in the past"),
        ]
    )

    status = errors.to_status_proto(error)

    assert status.code == code_pb2.INVALID_ARGUMENT
    [info] = unpack(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("incorrect_number", errors.ERROR_DOMAIN)
    [bad_request] = unpack(status, error_details_pb2.BadRequest)
    assert [(v.field, v.reason) for v in bad_request.field_violations] == [
        ("card.number", "incorrect_number"),
        ("card.exp_year", "invalid_expiry_year"),
    ]


def test_each_domain_error_maps_to_its_grpc_code():
    cases = {
        errors.NotFound("x", reason="resource_missing"): grpc.StatusCode.NOT_FOUND,
        errors.Unauthenticated("x", reason="invalid_api_key"): grpc.StatusCode.UNAUTHENTICATED,
        errors.Conflict("x", reason="idempotency_key_reused"): grpc.StatusCode.ABORTED,
        errors.FailedPrecondition("x", reason="unexpected_state"): (
            grpc.StatusCode.FAILED_PRECONDITION
        ),
        errors.Unavailable("x", reason="psp_unavailable"): grpc.StatusCode.UNAVAILABLE,
    }
    for error, code in cases.items():
        status = errors.to_grpc_status(error)
        assert status.code == code
        assert status.details == "x"
        [info] = unpack(errors.to_status_proto(error), error_details_pb2.ErrorInfo)
        assert info.reason == error.reason


def test_an_unexpected_exception_becomes_internal_without_its_text():
    status = errors.to_grpc_status(RuntimeError("password=hunter2 in a stack"))

    assert status.code == grpc.StatusCode.INTERNAL
    assert status.details == "internal error"
    assert all(b"hunter2" not in value for _, value in status.trailing_metadata)
