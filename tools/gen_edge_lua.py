"""Builds Envoy's edge filter, build/edge.lua: the REST routes and request schemas of the
public services, read from the descriptor set, followed by envoy/edge.lua.

    python tools/gen_edge_lua.py build/paymesh.pb envoy/edge.lua build/edge.lua

The transcoder silently drops JSON fields it does not know and accepts several spellings of
a value; the Lua filter refuses both before the request reaches it. It needs each route's
request message, so the schema is generated here rather than written by hand twice.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

PUBLIC_SERVICES = (
    "paymesh.gateway.v1.GatewayService",
    "paymesh.vault.v1.VaultService",
    "paymesh.rebill.v1.RebillService",
    "paymesh.webhook.v1.WebhookService",
    # The PSPs' webhooks: a raw body (google.api.HttpBody), checked by its signature.
    "paymesh.webhook.v1.PspWebhookService",
)
F = descriptor_pb2.FieldDescriptorProto
_INTEGERS = {
    F.TYPE_INT32: "int32",
    F.TYPE_SINT32: "int32",
    F.TYPE_SFIXED32: "int32",
    F.TYPE_UINT32: "uint32",
    F.TYPE_FIXED32: "uint32",
    F.TYPE_INT64: "int64",
    F.TYPE_SINT64: "int64",
    F.TYPE_SFIXED64: "int64",
    F.TYPE_UINT64: "uint64",
    F.TYPE_FIXED64: "uint64",
}
# Well-known types that proto3 JSON writes as a scalar.
_WELL_KNOWN = {".google.protobuf.Timestamp": "string", ".google.protobuf.Duration": "string"}
_RAW_BODY = ".google.api.HttpBody"


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _path_pattern(template: str) -> tuple[str, list[str]]:
    """`/v1/x/{id}/confirm` → a Lua pattern capturing each variable, and the variables."""
    pattern, params = "^", []
    for literal, variable in re.findall(r"([^{]*)(?:\{([^}=]+)\})?", template):
        pattern += re.sub(r"([^\w/])", r"%\1", literal)
        if variable:
            params.append(variable)
            pattern += "([^/]+)"
    return pattern + "$", params


class Schema:
    def __init__(self, files: descriptor_pb2.FileDescriptorSet):
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, list[str]] = {}
        for file in files.file:
            prefix = f".{file.package}" if file.package else ""
            for message in file.message_type:
                self._add_message(prefix, message)
            for enum in file.enum_type:
                self.enums[f"{prefix}.{enum.name}"] = [v.name for v in enum.value]
        self.services = {
            f"{file.package}.{service.name}": service
            for file in files.file
            for service in file.service
        }

    def _add_message(self, prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        self.messages[name] = message
        for nested in message.nested_type:
            self._add_message(name, nested)
        for enum in message.enum_type:
            self.enums[f"{name}.{enum.name}"] = [v.name for v in enum.value]

    def field_lua(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type == F.TYPE_MESSAGE:
            entry = self.messages[field.type_name]
            if entry.options.map_entry:
                value = next(f for f in entry.field if f.name == "value")
                return f'{{t = "map", v = {self.field_lua(value)}}}'
            if field.type_name in _WELL_KNOWN:
                kind = f'{{t = "{_WELL_KNOWN[field.type_name]}"}}'
            else:
                kind = f'{{t = "message", m = {_lua_string(field.type_name[1:])}}}'
        elif field.type == F.TYPE_ENUM:
            values = ", ".join(_lua_string(v) for v in self.enums[field.type_name])
            kind = f'{{t = "enum", values = {{{values}}}}}'
        elif field.type in _INTEGERS:
            kind = f'{{t = "{_INTEGERS[field.type]}"}}'
        elif field.type == F.TYPE_BOOL:
            kind = '{t = "bool"}'
        elif field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            kind = '{t = "number"}'
        else:  # string, bytes
            kind = '{t = "string"}'
        if field.label == F.LABEL_REPEATED:
            return f'{{t = "list", v = {kind}}}'
        return kind

    def reachable(self, roots: list[str]) -> list[str]:
        """The messages a request may contain, map entries left out (a map is one kind)."""
        seen: list[str] = []
        pending = list(roots)
        while pending:
            name = pending.pop()
            if name in seen or f".{name}" in _WELL_KNOWN:
                continue
            message = self.messages[f".{name}"]
            if not message.options.map_entry:
                seen.append(name)
            for field in message.field:
                if field.type == F.TYPE_MESSAGE:
                    pending.append(field.type_name[1:])
        return sorted(seen)


def _raw_body(schema: Schema, message: str, body: str) -> bool:
    """Whether the body is passed on as it is (google.api.HttpBody), not parsed as JSON."""
    if body == "*":
        return f".{message}" == _RAW_BODY
    fields = schema.messages[f".{message}"].field
    return any(f.name == body and f.type_name == _RAW_BODY for f in fields)


def routes(schema: Schema) -> list[tuple[str, str, str, str]]:
    """(method, path template, body, request message) for every REST route."""
    found = []
    for service_name in PUBLIC_SERVICES:
        service = schema.services.get(service_name)
        if service is None:
            continue
        for method in service.method:
            rule: http_pb2.HttpRule = method.options.Extensions[annotations_pb2.http]
            for binding in (rule, *rule.additional_bindings):
                verb = binding.WhichOneof("pattern")
                if verb is None or verb == "custom":
                    continue
                template = getattr(binding, verb)
                found.append((verb.upper(), template, binding.body, method.input_type[1:]))
    return found


def generate(descriptor: Path) -> str:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes())
    schema = Schema(files)
    found = routes(schema)
    lines = ["-- Generated by tools/gen_edge_lua.py from the descriptor set: do not edit.", ""]
    lines.append("local ROUTES = {")
    for verb, template, body, message in found:
        pattern, params = _path_pattern(template)
        raw = _raw_body(schema, message, body)
        lines.append(
            f"  {{method = {_lua_string(verb)}, template = {_lua_string(template)}, "
            f"pattern = {_lua_string(pattern)}, "
            f"params = {{{', '.join(_lua_string(p) for p in params)}}}, "
            f"body = {_lua_string('' if raw else body)}, raw_body = {str(raw).lower()}, "
            f"message = {_lua_string(message)}}},"
        )
    lines.append("}")
    lines.append("")
    lines.append("local MESSAGES = {")
    for name in schema.reachable([message for *_, message in found]):
        lines.append(f"  [{_lua_string(name)}] = {{")
        for field in schema.messages[f".{name}"].field:
            lines.append(f"    [{_lua_string(field.name)}] = {schema.field_lua(field)},")
        lines.append("  },")
    lines.append("}")
    lines.append("")
    return "\n".join(lines)


def main(descriptor: str, template: str, out: str) -> None:
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(generate(Path(descriptor)) + "\n" + Path(template).read_text())


if __name__ == "__main__":
    main(*sys.argv[1:4])
