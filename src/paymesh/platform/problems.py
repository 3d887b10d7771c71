"""The errors a caller may see, as plain exceptions: a category (the class), a stable
snake_case `reason`, a message and, for bad input, the fields at fault. No transport here:
`paymesh.platform.errors` maps each category to a gRPC status code at the edge, so domain
code raises these without knowing about gRPC."""

from __future__ import annotations

from dataclasses import dataclass, field

# An error travels in gRPC trailers, which a client refuses beyond 8 KiB: its message names a
# few fields, and `paymesh.platform.errors` sends a bounded number of violations.
MESSAGE_FIELDS = 3


def shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    # When to ask again (a 503 whose outcome is on its way): google.rpc.RetryInfo, and
    # Retry-After through the REST edge. 0: no advice.
    retry_after_seconds: int = 0

    def __str__(self) -> str:
        return self.message


class InvalidArgument(PaymeshError):
    """The request itself is wrong; `violations` name each field at fault."""

    def __init__(self, violations: list[FieldViolation], reason: str | None = None):
        """`reason` defaults to the first violation's: a 400 says what is wrong at once."""
        fields = ", ".join(shortened(v.field, 40) for v in violations[:MESSAGE_FIELDS])
        if len(violations) > MESSAGE_FIELDS:
            fields += f" and {len(violations) - MESSAGE_FIELDS} more"
        super().__init__(
            message=f"invalid request: {fields}", reason=reason or violations[0].reason
        )
        self.violations = violations

    @classmethod
    def for_field(cls, field_name: str, reason: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field_name, reason, description)])


class NotFound(PaymeshError):
    """No such object for this caller (another merchant's object is as good as missing)."""


class Unauthenticated(PaymeshError):
    """No credentials, or bad ones."""


class PermissionDenied(PaymeshError):
    """Known caller, not allowed."""


class Conflict(PaymeshError):
    """The request clashes with another one (an idempotency key in use or reused)."""


class FailedPrecondition(PaymeshError):
    """The object's state does not allow this request."""


class Unavailable(PaymeshError):
    """Nothing was done; the same request may succeed later."""
