"""Domain errors and their one translation to gRPC status codes with google.rpc details.

Handlers raise these; the server interceptor turns them into a status with
`google.rpc.ErrorInfo` (a snake_case reason) and, for invalid input, `google.rpc.BadRequest`
field violations. Any other exception becomes INTERNAL with a generic message, so internal
text never reaches a caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "paymesh.dev"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    reason: str
    description: str


@dataclass(eq=False)  # exceptions compare and hash by identity
class PaymeshError(Exception):
    """Base of every error a caller may see. `reason` is a stable snake_case identifier."""

    message: str
    reason: str = "error"
    metadata: dict[str, str] = field(default_factory=dict)

    code = grpc.StatusCode.UNKNOWN

    def __str__(self) -> str:
        return self.message


class InvalidArgument(PaymeshError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation], reason: str = "invalid_request"):
        fields = ", ".join(v.field for v in violations)
        super().__init__(message=f"invalid request: {fields}", reason=reason)
        self.violations = violations

    @classmethod
    def for_field(cls, field_name: str, reason: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field_name, reason, description)])


class NotFound(PaymeshError):
    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(PaymeshError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(PaymeshError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Conflict(PaymeshError):
    code = grpc.StatusCode.ABORTED


class FailedPrecondition(PaymeshError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(PaymeshError):
    code = grpc.StatusCode.UNAVAILABLE


class ReplayedError(PaymeshError):
    """An error answered before under the same idempotency key, replayed as it was."""

    def __init__(self, status: status_pb2.Status):
        super().__init__(message=status.message, reason="replayed")
        self.status = status
        self.code = next(c for c in grpc.StatusCode if c.value[0] == status.code)


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status_proto(error: Exception) -> status_pb2.Status:
    """The google.rpc.Status a caller receives for `error`."""
    if isinstance(error, ReplayedError):
        return error.status
    if not isinstance(error, PaymeshError):
        return status_pb2.Status(
            code=code_pb2.INTERNAL,
            message="internal error",
            details=[_pack(error_details_pb2.ErrorInfo(reason="internal", domain=ERROR_DOMAIN))],
        )
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
            )
        )
    ]
    if isinstance(error, InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, reason=v.reason, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)


def to_grpc_status(error: Exception) -> grpc.Status:
    """`error` as a grpc.Status whose trailing metadata carries the google.rpc details."""
    return rpc_status.to_status(to_status_proto(error))
