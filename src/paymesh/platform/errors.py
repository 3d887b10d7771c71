"""The one translation of errors to gRPC status codes with google.rpc details.

Handlers raise the categories of `paymesh.platform.problems`; the server interceptor turns
them into a status with `google.rpc.ErrorInfo` (a snake_case reason) and, for invalid input,
`google.rpc.BadRequest` field violations. Any other exception becomes INTERNAL with a
generic message, so internal text never reaches a caller.
"""

from __future__ import annotations

from collections import namedtuple

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from paymesh.platform.masking import redact_pans
from paymesh.platform.problems import (  # noqa: F401 - the categories, re-exported
    Conflict,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PaymeshError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    shortened,
)

ERROR_DOMAIN = "paymesh.dev"
# Enough to fix a request: gRPC clients refuse trailers over 8 KiB (at random between their
# soft and hard limits), and details travel base64-encoded, so violations get a byte budget.
MAX_VIOLATIONS = 20
VIOLATIONS_BUDGET_BYTES = 3000

# Each category of error and the gRPC status code it travels as.
CODES: dict[type[PaymeshError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Conflict: grpc.StatusCode.ABORTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def grpc_code(error: PaymeshError) -> grpc.StatusCode:
    if isinstance(error, ReplayedError):
        return error.code
    for category in type(error).__mro__:
        if category in CODES:
            return CODES[category]
    return grpc.StatusCode.UNKNOWN


class ReplayedError(PaymeshError):
    """An error answered before under the same idempotency key, replayed as it was."""

    def __init__(self, status: status_pb2.Status):
        super().__init__(message=status.message, reason="replayed")
        self.status = status
        self.code = next(c for c in grpc.StatusCode if c.value[0] == status.code)


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _within_budget(violations: list[FieldViolation]) -> list[FieldViolation]:
    kept: list[FieldViolation] = []
    spent = 0
    for violation in violations[:MAX_VIOLATIONS]:
        spent += len(shortened(violation.field, 100).encode())
        spent += len(shortened(violation.description, 200).encode())
        if kept and spent > VIOLATIONS_BUDGET_BYTES:
            break
        kept.append(violation)
    return kept


def to_status_proto(error: Exception, request_id: str = "") -> status_pb2.Status:
    """The google.rpc.Status a caller receives for `error`: ErrorInfo, RequestInfo when the
    request has an id, and BadRequest when fields are at fault. A card number that the caller
    put in an id or a field name is masked here, whatever the message says."""
    request_info = (
        [_pack(error_details_pb2.RequestInfo(request_id=redact_pans(request_id)))]
        if request_id
        else []
    )
    if isinstance(error, ReplayedError):
        status = status_pb2.Status()
        status.CopyFrom(error.status)
        kept = [d for d in status.details if not d.Is(error_details_pb2.RequestInfo.DESCRIPTOR)]
        del status.details[:]
        status.details.extend([*kept, *request_info])
        return status
    if not isinstance(error, PaymeshError):
        return status_pb2.Status(
            code=code_pb2.INTERNAL,
            message="internal error",
            details=[
                _pack(error_details_pb2.ErrorInfo(reason="internal", domain=ERROR_DOMAIN)),
                *request_info,
            ],
        )
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
            )
        ),
        *request_info,
    ]
    if error.retry_after_seconds:
        delay = duration_pb2.Duration(seconds=error.retry_after_seconds)
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if isinstance(error, InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=redact_pans(shortened(v.field, 100)),
                            reason=v.reason,
                            description=redact_pans(shortened(v.description, 200)),
                        )
                        for v in _within_budget(error.violations)
                    ]
                )
            )
        )
    return status_pb2.Status(
        code=grpc_code(error).value[0], message=redact_pans(error.message), details=details
    )


class _Status(namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    pass


def to_grpc_status(error: Exception, request_id: str = "") -> grpc.Status:
    """`error` as a grpc.Status whose trailing metadata carries the google.rpc details, and
    `retry-after` (Envoy answers it as the HTTP header) when the error advises a delay."""
    status = rpc_status.to_status(to_status_proto(error, request_id))
    delay = error.retry_after_seconds if isinstance(error, PaymeshError) else 0
    if not delay:
        return status
    metadata = (*status.trailing_metadata, ("retry-after", str(delay)))
    return _Status(status.code, status.details, metadata)


def error_info_of(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """The google.rpc.ErrorInfo reason and metadata another paymesh service sent with an
    error ("" and {} if none)."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info.reason, dict(info.metadata)
    return "", {}


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The google.rpc.ErrorInfo reason another paymesh service sent with an error, if any."""
    return error_info_of(error)[0]
