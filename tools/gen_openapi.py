"""Generates the merchants' OpenAPI 3 document from the compiled descriptor set.

    python tools/gen_openapi.py build/paymesh.pb build/openapi.json

Every REST route comes from a `google.api.http` rule (additional bindings included), and
every schema follows what Envoy's gRPC-JSON transcoder does with paymesh's settings: proto
field names (snake_case), int64 as a string in responses and as a JSON number or that
string in requests, enums as their names, maps as objects, well-known types in their proto3
JSON form. Errors are the common envelope (google.rpc.Status JSON). Only the protobuf
runtime is needed, so the Dockerfile's descriptor stage can run it too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2

F = descriptor_pb2.FieldDescriptorProto

ERROR_DOMAIN = "paymesh.dev"
BEARER = "bearerAuth"
# The transcoder answers these; the messages and reasons are in the README.
ERROR_STATUSES = {
    "400": "Invalid request: malformed JSON, an unknown field or a bad value (BadRequest "
    "names the fields).",
    "401": "Missing, unknown or revoked API key.",
    "404": "No such object for this merchant, or no such route.",
    "405": "The path exists but not with this method.",
    "409": "Conflict: the object's state, or an idempotency key reused with other parameters.",
    "413": "The request body is over the size limit.",
    "429": "Too many requests: retry later.",
    "431": "The request headers are over the size limit.",
    "503": "A dependency (a PSP, the vault) is unavailable; nothing was done unless the "
    "reason says so.",
}
HTTP_VERBS = ("get", "put", "post", "delete", "patch")

_INT32 = {F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32}
_UINT32 = {F.TYPE_UINT32, F.TYPE_FIXED32}
_INT64 = {F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64}
_UINT64 = {F.TYPE_UINT64, F.TYPE_FIXED64}

# Well-known types in proto3 JSON (direction-independent ones; the int64 wrappers are below).
_WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "required": ["@type"],
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.DoubleValue": {"type": "number", "format": "double"},
    "google.protobuf.FloatValue": {"type": "number", "format": "float"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "minimum": 0},
}
_WRAPPED_64 = {
    "google.protobuf.Int64Value": F.TYPE_INT64,
    "google.protobuf.UInt64Value": F.TYPE_UINT64,
}


class Descriptors:
    """The messages, enums and comments of a FileDescriptorSet, by full name."""

    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]):
        self.files = files
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[str, str] = {}
        for file in files:
            located = {
                tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location
            }
            prefix = f".{file.package}" if file.package else ""
            for i, enum in enumerate(file.enum_type):
                self._enum(f"{prefix}.{enum.name}", enum, located, (5, i))
            for i, message in enumerate(file.message_type):
                self._message(f"{prefix}.{message.name}", message, located, (4, i))
            for i, service in enumerate(file.service):
                name = f"{prefix}.{service.name}"
                self._comment(name, located, (6, i))
                for j, method in enumerate(service.method):
                    self._comment(f"{name}.{method.name}", located, (6, i, 2, j))

    def _comment(self, name: str, located: dict, path: tuple) -> None:
        text = located.get(path, "").strip()
        if text:
            self.comments[name] = " ".join(line.strip() for line in text.splitlines())

    def _enum(self, name, enum, located, path) -> None:
        self.enums[name] = enum
        self._comment(name, located, path)

    def _message(self, name, message, located, path) -> None:
        self.messages[name] = message
        self._comment(name, located, path)
        for i, field in enumerate(message.field):
            self._comment(f"{name}.{field.name}", located, (*path, 2, i))
        for i, nested in enumerate(message.nested_type):
            self._message(f"{name}.{nested.name}", nested, located, (*path, 3, i))
        for i, enum in enumerate(message.enum_type):
            self._enum(f"{name}.{enum.name}", enum, located, (*path, 4, i))

    def services(self):
        """(full service name, service) of every service, in file order."""
        for file in self.files:
            for service in file.service:
                yield f"{file.package}.{service.name}", service


def http_rules(method: descriptor_pb2.MethodDescriptorProto) -> list:
    if not method.options.HasExtension(annotations_pb2.http):
        return []
    rule = method.options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def rule_verb_and_path(rule) -> tuple[str, str]:
    """The HTTP method and path template of one HttpRule (`custom` kinds included)."""
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        return rule.custom.kind.lower(), rule.custom.path
    return kind, getattr(rule, kind)


_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")


def openapi_path(template: str) -> tuple[str, list[str]]:
    """`/v1/{name=things/*}:verb` → (`/v1/{name}:verb`, ["name"])."""
    names = _VARIABLE.findall(template)
    return _VARIABLE.sub(lambda m: "{" + m.group(1) + "}", template), names


class Generator:
    def __init__(self, descriptors: Descriptors):
        self.d = descriptors
        self.schemas: dict[str, Any] = {}
        self.outputs: set[str] = set()
        for _, service in descriptors.services():
            for method in service.method:
                if http_rules(method):
                    self._reachable(method.output_type.lstrip("."), self.outputs)

    # --- schemas -------------------------------------------------------------------------

    def field_type(self, field, output: bool) -> dict[str, Any]:
        """The schema of one value of a field (not its repetition)."""
        t = field.type
        if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            return {"type": "number", "format": "double" if t == F.TYPE_DOUBLE else "float"}
        if t in _INT32:
            return {"type": "integer", "format": "int32"}
        if t in _UINT32:
            return {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1}
        if t in _INT64 or t in _UINT64:
            return self._int64(t in _UINT64, output)
        if t == F.TYPE_BOOL:
            return {"type": "boolean"}
        if t == F.TYPE_STRING:
            return {"type": "string"}
        if t == F.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        if t == F.TYPE_ENUM:
            enum = self.d.enums[field.type_name]
            return {"type": "string", "enum": [value.name for value in enum.value]}
        return self.message_ref(field.type_name.lstrip("."), output)

    @staticmethod
    def _int64(unsigned: bool, output: bool) -> dict[str, Any]:
        if output:  # the transcoder prints 64-bit integers as strings
            return {
                "type": "string",
                "format": "int64",
                "pattern": r"^[0-9]+$" if unsigned else r"^-?[0-9]+$",
            }
        number: dict[str, Any] = {"type": "integer", "format": "int64"}
        if unsigned:
            number["minimum"] = 0
        # A request may send back what an answer printed (the edge takes either spelling).
        digits = {
            "type": "string",
            "format": "int64",
            "pattern": r"^(0|[1-9][0-9]*)$" if unsigned else r"^-?(0|[1-9][0-9]*)$",
        }
        return {"oneOf": [number, digits]}

    def field_schema(self, message_name: str, field, output: bool) -> dict[str, Any]:
        entry = self._map_entry(field)
        if entry is not None:
            value = next(f for f in entry.field if f.number == 2)
            schema = {"type": "object", "additionalProperties": self.field_type(value, output)}
        elif field.label == F.LABEL_REPEATED:
            schema = {"type": "array", "items": self.field_type(field, output)}
        else:
            schema = self.field_type(field, output)
        description = self.d.comments.get(f".{message_name}.{field.name}")
        if description:
            schema = {"allOf": [schema]} if "$ref" in schema else dict(schema)
            schema["description"] = description
        return schema

    def _map_entry(self, field):
        if field.type != F.TYPE_MESSAGE or field.label != F.LABEL_REPEATED:
            return None
        entry = self.d.messages.get(field.type_name)
        return entry if entry is not None and entry.options.map_entry else None

    def message_schema(
        self, name: str, output: bool, leave_out: set[str] = frozenset()
    ) -> dict[str, Any]:
        message = self.d.messages[f".{name}"]
        properties = {
            field.name: self.field_schema(name, field, output)
            for field in message.field
            if field.name not in leave_out
        }
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if output:
            # always_print_primitive_fields: every scalar, repeated and map field is printed.
            printed = [
                f.name
                for f in message.field
                if f.name not in leave_out
                and (f.type != F.TYPE_MESSAGE or f.label == F.LABEL_REPEATED)
                and not f.HasField("oneof_index")
            ]
            if printed:
                schema["required"] = printed
        else:
            required = [
                f.name
                for f in message.field
                if f.name not in leave_out
                and field_behavior_pb2.REQUIRED
                in f.options.Extensions[field_behavior_pb2.field_behavior]
            ]
            if required:
                schema["required"] = required
            # The edge refuses unknown fields (a typo must never move money).
            schema["additionalProperties"] = False
        description = self.d.comments.get(f".{name}")
        if description:
            schema["description"] = description
        return schema

    def message_ref(self, name: str, output: bool) -> dict[str, Any]:
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name in _WRAPPED_64:
            return self._int64(_WRAPPED_64[name] == F.TYPE_UINT64, output)
        # A message both sent and received has two forms (64-bit integers, required fields).
        key = name if output or name not in self.outputs else f"{name}.Input"
        if key not in self.schemas:
            self.schemas[key] = {}  # a placeholder stops recursion
            self.schemas[key] = self.message_schema(name, output)
        return {"$ref": f"#/components/schemas/{key}"}

    def _reachable(self, name: str, seen: set[str]) -> set[str]:
        """The messages a message's JSON may contain, itself included."""
        message = self.d.messages.get(f".{name}")
        if message is None or name in seen:
            return seen
        seen.add(name)
        for field in message.field:
            if field.type == F.TYPE_MESSAGE:
                self._reachable(field.type_name[1:], seen)
        return seen

    def leaf_fields(self, name: str, prefix: str = "", seen: tuple = ()):
        """(dotted name, field) of every non-map field reachable from a message, as the
        transcoder reads query parameters; message fields are walked into."""
        message = self.d.messages[f".{name}"]
        for field in message.field:
            dotted = f"{prefix}{field.name}"
            if self._map_entry(field) is not None:
                continue
            if field.type == F.TYPE_MESSAGE:
                nested = field.type_name[1:]
                if nested in _WELL_KNOWN or nested in _WRAPPED_64:
                    yield dotted, name, field
                elif field.label != F.LABEL_REPEATED and nested not in seen:
                    yield from self.leaf_fields(nested, f"{dotted}.", (*seen, name))
                continue
            yield dotted, name, field

    def field_at(self, name: str, dotted: str):
        """The field a dotted path names, and the message that holds it."""
        *parents, last = dotted.split(".")
        for part in parents:
            field = next(f for f in self.d.messages[f".{name}"].field if f.name == part)
            name = field.type_name[1:]
        return name, next(f for f in self.d.messages[f".{name}"].field if f.name == last)

    # --- the document --------------------------------------------------------------------

    def operation(self, service: str, method, rule, verb: str, path_vars: list[str]) -> dict:
        request = method.input_type.lstrip(".")
        response = method.output_type.lstrip(".")
        full_method = f"{service}.{method.name}"
        parameters: list[dict[str, Any]] = []
        for var in path_vars:
            owner, field = self.field_at(request, var)
            parameters.append(
                {
                    "name": var,
                    "in": "path",
                    "required": True,
                    "schema": self.field_type(field, output=False),
                    **self._described(owner, field),
                }
            )
        top_level_path = {var.split(".")[0] for var in path_vars}
        body_field = rule.body
        if body_field != "*":
            # Every field neither in the path nor the body is a query parameter.
            for dotted, owner, field in self.leaf_fields(request):
                if dotted in path_vars or dotted.split(".")[0] == body_field:
                    continue
                schema = self.field_type(field, output=False)
                if field.label == F.LABEL_REPEATED:
                    schema = {"type": "array", "items": schema}
                parameters.append(
                    {
                        "name": dotted,
                        "in": "query",
                        "required": False,
                        "schema": schema,
                        **({"style": "form", "explode": True} if "items" in schema else {}),
                        **self._described(owner, field),
                    }
                )
        if verb != "get":
            parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})
        parameters.append({"$ref": "#/components/parameters/RequestId"})

        operation: dict[str, Any] = {
            "operationId": full_method,
            "tags": [service.rsplit(".", 1)[-1]],
            "summary": self.d.comments.get(f".{full_method}", method.name).split(". ")[0],
            "description": self.d.comments.get(f".{full_method}", "")
            + f"\n\ngRPC: `{service}/{method.name}`",
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": "OK",
                    "headers": {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}},
                    "content": {"application/json": {"schema": self.message_ref(response, True)}},
                },
                **{
                    code: {"$ref": f"#/components/responses/Error{code}"} for code in ERROR_STATUSES
                },
                "default": {"$ref": "#/components/responses/Error"},
            },
        }
        if body_field:
            if body_field == "*":
                schema = self.message_schema(request, False, leave_out=top_level_path)
                schema.pop("description", None)
            else:
                owner, field = self.field_at(request, body_field)
                schema = self.field_schema(owner, field, output=False)
            operation["requestBody"] = {
                "required": bool(schema.get("required")) or body_field != "*",
                "content": {"application/json": {"schema": schema}},
            }
        return operation

    def _described(self, owner: str, field) -> dict[str, str]:
        text = self.d.comments.get(f".{owner}.{field.name}")
        return {"description": text} if text else {}

    def document(self, title: str, version: str) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        for service, service_proto in self.d.services():
            for method in service_proto.method:
                rules = http_rules(method)
                for index, rule in enumerate(rules):
                    verb, template = rule_verb_and_path(rule)
                    if verb not in HTTP_VERBS:
                        continue
                    path, path_vars = openapi_path(template)
                    operation = self.operation(service, method, rule, verb, path_vars)
                    if index:
                        operation["operationId"] += f".{index}"
                    paths.setdefault(path, {})[verb] = operation
        components = {
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A secret API key: `Authorization: Bearer sk_test_…` "
                    "(test mode) or `sk_live_…` (live mode).",
                }
            },
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "Makes the request safe to retry: the same key with the same "
                    "parameters gives the same answer, scoped to the merchant.",
                    "schema": {"type": "string", "maxLength": 255},
                },
                "RequestId": {
                    "name": "X-Request-Id",
                    "in": "header",
                    "required": False,
                    "description": "The caller's request id; generated when absent, returned "
                    "on every response and in RequestInfo of every error.",
                    "schema": {"type": "string"},
                },
            },
            "headers": {
                "RequestId": {
                    "description": "The request's id, as in the logs and in RequestInfo.",
                    "schema": {"type": "string"},
                }
            },
            "responses": {
                "Error": self._error_response("An error, in the common envelope."),
                **{
                    f"Error{code}": self._error_response(text)
                    for code, text in ERROR_STATUSES.items()
                },
            },
            "schemas": {**error_schemas(), **dict(sorted(self.schemas.items()))},
        }
        return {
            "openapi": "3.0.3",
            "info": {
                "title": title,
                "version": version,
                "description": "paymesh's merchant REST API, generated from the protobuf "
                "contracts (`google.api.http` rules). JSON uses proto field names; 64-bit "
                "integers are numbers in requests and strings in responses. Every error is a "
                "google.rpc.Status (AIP-193) with ErrorInfo (domain `paymesh.dev`), "
                "RequestInfo and, where fields are at fault, BadRequest.",
            },
            "servers": [{"url": "/"}],
            "security": [{BEARER: []}],
            "tags": [
                {
                    "name": name.rsplit(".", 1)[-1],
                    "description": self.d.comments.get(f".{name}", ""),
                }
                for name, service in self.d.services()
                if any(http_rules(m) for m in service.method)
            ],
            "paths": dict(sorted(paths.items())),
            "components": components,
        }

    @staticmethod
    def _error_response(description: str) -> dict[str, Any]:
        return {
            "description": description,
            "headers": {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}},
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}
            },
        }


def error_schemas() -> dict[str, Any]:
    """The common error envelope: google.rpc.Status JSON with proto field names."""

    def detail(type_name: str, properties: dict, required: list[str]) -> dict:
        return {
            "type": "object",
            "required": ["@type", *required],
            "properties": {
                "@type": {"type": "string", "enum": [f"type.googleapis.com/{type_name}"]},
                **properties,
            },
        }

    return {
        "google.rpc.Status": {
            "type": "object",
            "description": "Every error: an HTTP status with this body.",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {
                    "type": "integer",
                    "format": "int32",
                    "description": "The google.rpc.Code, e.g. 3 (INVALID_ARGUMENT).",
                },
                "message": {"type": "string", "description": "For developers, in English."},
                "details": {
                    "type": "array",
                    "items": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/google.rpc.ErrorInfo"},
                            {"$ref": "#/components/schemas/google.rpc.RequestInfo"},
                            {"$ref": "#/components/schemas/google.rpc.BadRequest"},
                        ]
                    },
                },
            },
        },
        "google.rpc.ErrorInfo": detail(
            "google.rpc.ErrorInfo",
            {
                "reason": {
                    "type": "string",
                    "pattern": "^[a-z][a-z0-9_]*$",
                    "description": "Machine-readable, snake_case, e.g. card_declined.",
                },
                "domain": {"type": "string", "enum": [ERROR_DOMAIN]},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            ["reason", "domain"],
        ),
        "google.rpc.RequestInfo": detail(
            "google.rpc.RequestInfo",
            {"request_id": {"type": "string"}, "serving_data": {"type": "string"}},
            ["request_id"],
        ),
        "google.rpc.BadRequest": detail(
            "google.rpc.BadRequest",
            {
                "field_violations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "description"],
                        "properties": {
                            "field": {"type": "string"},
                            "description": {"type": "string"},
                            "reason": {"type": "string"},
                        },
                    },
                }
            },
            ["field_violations"],
        ),
    }


def load_descriptors(path: Path) -> Descriptors:
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    return Descriptors(list(files))


def generate(descriptor_set: Path, title: str = "paymesh", version: str = "v1") -> dict:
    return Generator(load_descriptors(descriptor_set)).document(title, version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("descriptor_set", type=Path, help="e.g. build/paymesh.pb")
    parser.add_argument("out", type=Path, help="e.g. build/openapi.json")
    args = parser.parse_args()
    if not args.descriptor_set.exists():
        sys.exit(f"{args.descriptor_set} does not exist: build it with tools/gen_protos.py")
    document = generate(args.descriptor_set)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
