"""What every request must be before a handler sees it, whoever sent it (Envoy's edge filter
checks REST requests the same way; this covers gRPC callers): decodable protobuf, and
strings that are text of a bounded length, so that no handler or database ever meets a NUL,
a control character or a megabyte where it expects a name. Each service's own rules
(lengths of particular fields, formats) come after this and are tighter."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from paymesh.platform.problems import FieldViolation, InvalidArgument

MAX_STRING = 5000
# Control characters other than tab, line feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Undecodable:
    """Stands in for a request whose bytes are not the message (e.g. a string not UTF-8)."""


def lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """`deserialize` that returns Undecodable instead of failing inside gRPC, where the
    failure would become an INTERNAL status that names a Python class."""

    def decode(data: bytes) -> Any:
        if deserialize is None:  # gRPC hands a handler without one the bytes as they came
            return data
        try:
            return deserialize(data)
        except DecodeError:
            return Undecodable()

    return decode


def check_request(request: object) -> None:
    if isinstance(request, Undecodable):
        raise InvalidArgument.for_field(
            "request", "invalid_encoding", "not valid protobuf: strings must be UTF-8"
        )
    if isinstance(request, Message):
        violations = string_violations(request)
        if violations:
            raise InvalidArgument(violations)


def _text_violation(field: str, value: str) -> FieldViolation | None:
    if len(value) > MAX_STRING:
        return FieldViolation(field, "too_long", f"{field} must be at most {MAX_STRING} characters")
    if _CONTROL.search(value):
        return FieldViolation(
            field, "invalid_characters", f"{field} must be text without control characters"
        )
    return None


def string_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_STRING:
            for index, text in enumerate(value if repeated else [value]):
                found = _text_violation(f"{name}[{index}]" if repeated else name, text)
                if found:
                    violations.append(found)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                violations += _map_violations(name, field, value)
            elif repeated:
                for index, item in enumerate(value):
                    violations += string_violations(item, f"{name}[{index}].")
            else:
                violations += string_violations(value, f"{name}.")
    return violations


def _map_violations(
    name: str, field: FieldDescriptor, entries: Mapping[Any, Any]
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    assert field.message_type is not None  # a map field's type is its entry message
    value_field = field.message_type.fields_by_name["value"]
    for key, value in entries.items():
        if isinstance(key, str):
            found = _text_violation(f"{name} key", key)
            if found:
                violations.append(found)
                continue
        if value_field.type == FieldDescriptor.TYPE_STRING:
            found = _text_violation(f"{name}.{key}", value)
            if found:
                violations.append(found)
        elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
            violations += string_violations(value, f"{name}.{key}.")
    return violations
