"""Small conversions between database rows and protobuf messages, shared by servicers."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from paymesh.platform.problems import InvalidArgument, NotFound


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    result = Timestamp()
    result.FromDatetime(value)
    return result


# How Envoy's gRPC-JSON transcoder prints every answer (envoy/envoy.yaml's print_options, a
# unit test holds them equal): snake_case names, fields at their zero value printed. Whatever
# the options, int64 is a string of digits and a Timestamp RFC 3339 (the proto3 JSON mapping).
# What the services print for merchants themselves (events) is printed the same way, by
# api_json.
ENVOY_PRINT_OPTIONS = {
    "add_whitespace": False,
    "always_print_primitive_fields": True,
    "preserve_proto_field_names": True,
}
# Each option as Python's json_format names it (add_whitespace: no dict has any).
_AS_PYTHON = {
    "always_print_primitive_fields": "always_print_fields_with_no_presence",
    "preserve_proto_field_names": "preserving_proto_field_name",
    "always_print_enums_as_ints": "use_integers_for_enums",
}
_PRINT: dict[str, Any] = {
    _AS_PYTHON[k]: v for k, v in ENVOY_PRINT_OPTIONS.items() if k in _AS_PYTHON
}


def api_json(message: Message) -> dict[str, Any]:
    """The message as the REST API answers it (see ENVOY_PRINT_OPTIONS)."""
    return MessageToDict(message, **_PRINT)


def json_timestamp(value: datetime) -> str:
    """A moment as the REST API writes one: RFC 3339 in UTC, 0, 3, 6 or 9 decimals."""
    stamp = timestamp(value)
    assert stamp is not None
    return stamp.ToJsonString()


# Every id is a prefix and ASCII letters, digits or underscores, at most 40 characters (the
# width of the id columns).
MAX_ID_LENGTH = 40
_ID_CHARACTERS = re.compile(r"[A-Za-z0-9_]+")


def require_id(value: str, prefix: str, resource: str, field: str = "id") -> str:
    """A missing, over-long or oddly written id is invalid input, named by `field`; an id of
    another kind cannot exist, so it is not found. No message repeats the value: a caller may
    have put anything there, a card number included."""
    if not value:
        raise InvalidArgument.for_field(field, "missing", f"{field} is required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument.for_field(
            field, "too_long", f"{field} must be at most {MAX_ID_LENGTH} characters"
        )
    if not _ID_CHARACTERS.fullmatch(value):
        raise InvalidArgument.for_field(
            field, "invalid_characters", f"{field} may hold only ASCII letters, digits and _"
        )
    if not value.startswith(prefix):
        raise NotFound(f"no such {resource}", reason="resource_missing")
    return value


def optional_datetime(message: Message, field: str) -> datetime | None:
    """A Timestamp field of a request as an aware datetime (None when unset); one outside
    the years 1-9999 is invalid input named by `field`."""
    if not message.HasField(field):
        return None
    try:
        stamp: Timestamp = getattr(message, field)
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.for_field(
            field, "invalid_timestamp", f"{field} is out of range"
        ) from None


def required_datetime(message: Message, field: str) -> datetime:
    value = optional_datetime(message, field)
    if value is None:
        raise InvalidArgument.for_field(field, "missing", f"{field} is required")
    return value


def page_limit(limit: int) -> int:
    """A list's `limit`: 10 when unset, else 1 to 100."""
    limit = limit or 10
    if not 1 <= limit <= 100:
        raise InvalidArgument.for_field("limit", "invalid_limit", "limit must be 1 to 100")
    return limit
