"""Small conversions between database rows and protobuf messages, shared by servicers."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from paymesh.platform.errors import InvalidArgument, NotFound


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    result = Timestamp()
    result.FromDatetime(value)
    return result


def require_id(value: str, prefix: str, resource: str, field: str = "id") -> str:
    """A missing id is invalid input; an id of the wrong shape cannot exist, so it is not found."""
    if not value:
        raise InvalidArgument.for_field(field, "missing", f"{field} is required")
    if not value.startswith(prefix) or len(value) > 64:
        raise NotFound(f"no such {resource}: {value!r}", reason="resource_missing")
    return value
