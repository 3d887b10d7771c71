"""Property-based fuzzing of every gRPC method of the merchant-facing services, straight to
the service ports with the generated stubs (hypothesis strategies built from the message
descriptors: every field type, strings with NUL, non-ASCII and very long ones, maps, nested
messages, card numbers), with a merchant's API key as metadata.

Every answer must be: never INTERNAL or UNKNOWN; every error with google.rpc details
(ErrorInfo with a snake_case reason); no card number the caller sent in the answer (message,
status details, trailers) or in any log line of the mesh. Bounded and derandomized like the
REST fuzzer (tests/support/fuzzing.py); failures are collected and reported at the end, also
written to grpc-fuzz-findings.json in pytest's temp dir.
"""

from __future__ import annotations

import functools
import importlib
import json
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import text_format
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

# The generated modules register the services' descriptors in the default pool.
import paymesh.gateway.v1.gateway_pb2  # noqa: F401
import paymesh.rebill.v1.rebill_pb2  # noqa: F401
import paymesh.vault.v1.vault_pb2  # noqa: F401
import paymesh.webhook.v1.webhook_pb2  # noqa: F401
from paymesh_ops.services import ALL
from tests.support.envelope import grpc_details_problems
from tests.support.fuzzing import (
    Finding,
    Findings,
    LogWatch,
    examples,
    fuzz_settings,
    shorten,
    signature_of,
)
from tests.support.mesh import create_merchant
from tests.support.pan import leaked, pans, pans_in

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

EXAMPLES_PER_METHOD = examples(150)
MERCHANT_FACING = (
    "paymesh.gateway.v1.GatewayService",
    "paymesh.vault.v1.VaultService",
    "paymesh.rebill.v1.RebillService",
    "paymesh.webhook.v1.WebhookService",
)
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
F = d.FieldDescriptor
INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}


def strings(ids: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Short and long text with NUL, controls and any Unicode; ids; card numbers."""
    return st.one_of(
        st.text(max_size=20),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=60).map(lambda s: s + "\x00"),
        st.sampled_from(["", " ", "\x00", "é", "４２４２", "pi_\x00x", "😀" * 3, "a" * 41]),
        # Long, yet far below gRPC's 4 MB message limit even a few times over.
        st.sampled_from([1_001, 70_000, 200_000]).map(lambda n: "ü" * n),
        st.sampled_from(ids),
        pans(),
    )


# The strategies are made once per field (and depth) and drawn from again: made anew at every
# draw, each was validated anew, most of a fuzzer's time on the client's side.
@functools.cache
def value_of(field: d.FieldDescriptor, depth: int, ids: tuple[str, ...]) -> st.SearchStrategy:
    if field.type in INT_RANGES:
        low, high = INT_RANGES[field.type]
        return st.one_of(
            st.integers(low, high), st.sampled_from([low, high, 0, 1, -1 if low else 2])
        )
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(width=64 if field.type == F.TYPE_DOUBLE else 32)
    if field.type == F.TYPE_STRING:
        return strings(ids)
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == F.TYPE_ENUM:
        # proto3 enums are open: unknown numbers arrive as they are.
        return st.one_of(
            st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-5, 1000)
        )
    return messages(field.message_type, depth + 1, ids)


@functools.cache
def lists_of(field: d.FieldDescriptor, depth: int, ids: tuple[str, ...]) -> st.SearchStrategy:
    return st.lists(value_of(field, depth, ids), max_size=3)


@functools.cache
def maps_of(field: d.FieldDescriptor, depth: int, ids: tuple[str, ...]) -> st.SearchStrategy:
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    return st.dictionaries(
        value_of(key_field, depth, ids), value_of(value_field, depth, ids), max_size=4
    )


@st.composite
def messages(draw, descriptor: d.Descriptor, depth: int, ids: tuple[str, ...]) -> Message:
    """A message of this type with any subset of its fields set to any value."""
    from google.protobuf import message_factory

    message = message_factory.GetMessageClass(descriptor)()
    if depth > 3:
        return message
    oneofs_done: set[str] = set()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.containing_oneof is not None:
            if field.containing_oneof.name in oneofs_done:
                continue
            oneofs_done.add(field.containing_oneof.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            entries = draw(maps_of(field, depth, ids))
            target = getattr(message, field.name)
            for key, value in entries.items():
                if value_field.message_type is not None:
                    target[key].CopyFrom(value)
                else:
                    target[key] = value
        elif field.is_repeated:
            values = draw(lists_of(field, depth, ids))
            target = getattr(message, field.name)
            if field.message_type is not None:
                for value in values:
                    target.add().CopyFrom(value)
            else:
                target.extend(values)
        elif field.message_type is not None:
            getattr(message, field.name).CopyFrom(draw(value_of(field, depth, ids)))
        else:
            setattr(message, field.name, draw(value_of(field, depth, ids)))
    return message


@functools.cache
def header_values() -> st.SearchStrategy[str]:
    """What gRPC lets a client put in ASCII metadata, card numbers included."""
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
    return st.one_of(printable, pans().filter(str.isascii))


@st.composite
def call_metadata(draw, api_key: str) -> tuple[tuple[str, str], ...]:
    metadata = []
    auth = draw(st.sampled_from(["key"] * 8 + ["none", "wrong"]))
    if auth == "key":
        metadata.append(("authorization", f"Bearer {api_key}"))
    elif auth == "wrong":
        metadata.append(("authorization", draw(st.sampled_from(["Bearer sk_test_x", "Basic a"]))))
    for name in ("idempotency-key", "x-request-id"):
        if draw(st.booleans()):
            metadata.append((name, draw(header_values())))
    return tuple(metadata)


@pytest.fixture(scope="module")
def grpc_merchant(infra):
    return create_merchant(infra, "fuzz-grpc")


def merchant_facing_methods(mesh):
    """(service full name, method descriptor, stub method, port) of every method."""
    found = []
    for name, definition in ALL.items():
        for service_name in definition.grpc_services:
            if service_name not in MERCHANT_FACING:
                continue
            package, service = service_name.rsplit(".", 1)
            module = importlib.import_module(f"{package}.{module_of(service_name)}_pb2_grpc")
            channel = grpc.insecure_channel(
                f"127.0.0.1:{mesh.ports.grpc[name]}",
                options=[("grpc.max_send_message_length", 8 * 1024 * 1024)],
            )
            stub = getattr(module, f"{service}Stub")(channel)
            pb2 = importlib.import_module(module.__name__.removesuffix("_grpc"))
            for method in pb2.DESCRIPTOR.services_by_name[service].methods:
                found.append((service_name, method, getattr(stub, method.name), channel))
    return found


def module_of(service_name: str) -> str:
    """The proto file (module) a service is declared in."""
    from google.protobuf import descriptor_pool

    service = descriptor_pool.Default().FindServiceByName(service_name)
    return Path(service.file.name).stem


def test_every_merchant_facing_grpc_method_answers_with_details_and_echoes_no_card_number(
    mesh, grpc_merchant, tmp_path_factory
):
    methods = merchant_facing_methods(mesh)
    assert {m[0] for m in methods} == set(MERCHANT_FACING)
    findings = Findings()
    sent_pans: dict[str, list[dict]] = {}
    watch = LogWatch(mesh.log_dir)
    ids = ("pi_missing", "pm_missing", "re_missing", "sub_missing", "we_missing")
    started = time.monotonic()

    for service, method, stub_method, _ in methods:
        fuzz_one(
            f"{service}/{method.name}", method, stub_method, grpc_merchant, ids, sent_pans, findings
        )

    fuzz_seconds = time.monotonic() - started
    for channel in {m[3] for m in methods}:
        channel.close()
    watch.scan(mesh, sent_pans, findings)
    findings.dump(Path(tmp_path_factory.getbasetemp()) / "grpc-fuzz-findings.json")
    print(f"gRPC fuzz: {len(methods)} methods × {EXAMPLES_PER_METHOD} in {fuzz_seconds:.1f} s")
    assert not findings, findings.report()


def fuzz_one(where, method, stub_method, merchant, ids, sent_pans, findings) -> None:
    @fuzz_settings(EXAMPLES_PER_METHOD)
    @given(
        request=messages(method.input_type, 0, ids),
        metadata=call_metadata(merchant.secret_key),
    )
    def fuzz(request, metadata):
        shown = {
            "method_name": where,
            "request": shorten(text_format.MessageToString(request, as_utf8=True), 2000),
            "metadata": [(k, v) for k, v in metadata if k != "authorization"],
            "auth": "key"
            if ("authorization", f"Bearer {merchant.secret_key}") in metadata
            else "none or wrong",
        }
        sent = pans_in(text_format.MessageToString(request, as_utf8=True) + json.dumps(metadata))
        for pan in sent:
            sent_pans.setdefault(pan, []).append(shown)
        try:
            response, call = stub_method.with_call(request, metadata=metadata, timeout=15)
        except grpc.RpcError as error:
            check_error(where, shown, error, sent, findings)
            return
        answer = text_format.MessageToString(response, as_utf8=True)
        answer += json.dumps([list(m) for m in call.trailing_metadata() or []], default=str)
        if leaked(sent, answer):
            findings.add(
                Finding(where, "PAN echoed in the response", "OK", shorten(answer), shown),
                signature="response",
            )

    fuzz()


def check_error(where: str, shown: dict, error: grpc.RpcError, sent: set[str], findings) -> None:
    code = error.code()
    message = error.details() or ""
    answer = f"{code.name} {message!r}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and "Deadline" in message:
        findings.add(Finding(where, "no answer within 15 s", code.name, answer, shown), "")
        return
    if code in NEVER:
        findings.add(
            Finding(where, "INTERNAL or UNKNOWN", code.name, shorten(answer), shown),
            signature=signature_of(message),
        )
    problems = grpc_details_problems(error)
    if problems and code not in NEVER:
        findings.add(
            Finding(
                where,
                "error without google.rpc details",
                code.name,
                f"{problems}; {shorten(answer)}",
                shown,
            ),
            signature=signature_of(" ".join(sorted(problems)) + " " + message),
        )
    trailers = json.dumps([list(m) for m in error.trailing_metadata() or []], default=str)
    if leaked(sent, message + trailers):
        findings.add(
            Finding(where, "PAN echoed in the response", code.name, shorten(answer), shown),
            signature="status message" if leaked(sent, message) else "trailers",
        )
