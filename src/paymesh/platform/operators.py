"""Operators as the admin RPCs see them: the services' admin servicers accept the `ops`
identity (grpcurl, `paymesh ops-token`) and the back office's (`backoffice`); a write names
the person who asked (`operator`, an email), which the service records in its audit row
(actor `operator`, the email in the details)."""

from __future__ import annotations

import re

from paymesh.platform.merchant_input import id_shaped
from paymesh.platform.problems import InvalidArgument

ADMIN_IDENTITIES = frozenset({"ops", "backoffice"})
OPERATOR_ACTOR = "operator"
MAX_EMAIL_LENGTH = 254
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def operator_email(value: str, required: bool, field: str = "operator") -> str:
    """The operator's email ('' when none was given and none is required). Never echoed in
    an error: a caller may have put anything there."""
    if not value:
        if required:
            raise InvalidArgument.for_field(field, "missing", f"{field} is required")
        return ""
    if len(value) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(value):
        raise InvalidArgument.for_field(field, "invalid_email", f"{field} must be an email")
    return value


def actor_and_details(operator: str, default_actor: str) -> tuple[str, dict[str, str]]:
    """Who an audit row names: the operator (their email in its details), or, without one,
    the service identity that called."""
    if operator:
        return OPERATOR_ACTOR, {"operator": operator}
    return default_actor, {}


def filter_id(value: str, prefix: str, field: str) -> str:
    """A list's filter by an id: '' when unset; one that is not an id of its kind is invalid
    input named by `field` (it could match nothing), never echoed."""
    if not value:
        return ""
    if not id_shaped(value, prefix):
        raise InvalidArgument.for_field(field, "invalid_id", f"{field} must be a {prefix}… id")
    return value
