"""The merchants' OpenAPI document (tools/gen_openapi.py): a valid OpenAPI 3 document with
every REST route of the protos, in the JSON the transcoder speaks, published by Envoy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import schemathesis
import yaml
from openapi_spec_validator import validate

from tests.support.envelope import envelope_problems
from tools.gen_openapi import http_rules, load_descriptors, openapi_path, rule_verb_and_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    """The descriptor set and the document, built the way the Makefile builds them."""
    out = tmp_path_factory.mktemp("openapi")
    descriptor, document = out / "paymesh.pb", out / "openapi.json"
    for argv in (
        ["tools/gen_protos.py", "--descriptor-out", str(descriptor)],
        ["tools/gen_openapi.py", str(descriptor), str(document)],
    ):
        done = subprocess.run(
            [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    return descriptor, json.loads(document.read_text())


def test_the_document_is_valid_openapi_3(built):
    _, document = built

    validate(document)  # raises on any violation of the OpenAPI 3.0 schema

    assert document["openapi"].startswith("3.")


def test_every_http_rule_of_the_descriptor_is_an_operation(built):
    descriptor, document = built
    descriptors = load_descriptors(descriptor)
    expected = set()
    for service, service_proto in descriptors.services():
        for method in service_proto.method:
            for rule in http_rules(method):
                verb, template = rule_verb_and_path(rule)
                expected.add((verb, openapi_path(template)[0], f"{service}.{method.name}"))
    documented = {
        (verb, path, re.sub(r"\.[0-9]+$", "", operation["operationId"]))
        for path, item in document["paths"].items()
        for verb, operation in item.items()
    }

    assert len(expected) >= 13
    assert expected == documented


@pytest.mark.tools
def test_schemathesis_loads_every_operation(built):
    _, document = built

    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]

    assert len(operations) == sum(len(item) for item in document["paths"].values())


def test_requests_use_proto_names_and_proto3_json_types(built):
    _, document = built
    paths = document["paths"]
    create = paths["/v1/payment_intents"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    intent = document["components"]["schemas"]["paymesh.gateway.v1.PaymentIntent"]

    assert body["required"] == ["amount", "currency"]
    # A JSON number in requests, or the string of digits that answers print.
    assert [kind["type"] for kind in body["properties"]["amount"]["oneOf"]] == [
        "integer",
        "string",
    ]
    assert body["properties"]["metadata"]["additionalProperties"] == {"type": "string"}
    assert intent["properties"]["amount_capturable"]["type"] == "string"  # printed as a string
    assert "amountCapturable" not in json.dumps(document)
    params = {p.get("name"): p for p in paths["/v1/payment_intents"]["get"]["parameters"]}
    assert params["limit"]["in"] == "query" and params["starting_after"]["in"] == "query"
    confirm = paths["/v1/payment_intents/{id}/confirm"]["post"]
    assert {"name": "id", "in": "path"}.items() <= confirm["parameters"][0].items()
    confirm_body = confirm["requestBody"]["content"]["application/json"]["schema"]
    assert "id" not in confirm_body["properties"]  # bound to the path, not the body
    assert {"$ref": "#/components/parameters/IdempotencyKey"} in confirm["parameters"]
    assert document["security"] == [{"bearerAuth": []}]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_every_operation_documents_its_errors_as_the_envelope(built):
    _, document = built
    envelope = {"$ref": "#/components/schemas/google.rpc.Status"}
    responses = document["components"]["responses"]

    for item in document["paths"].values():
        for operation in item.values():
            for code, response in operation["responses"].items():
                if code != "200":
                    named = responses[response["$ref"].rsplit("/", 1)[-1]]
                    assert named["content"]["application/json"]["schema"] == envelope


def test_an_envelope_the_document_describes_passes_the_shared_checker():
    body = {
        "code": 3,
        "message": "amount must be at least 1",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "parameter_invalid",
                "domain": "paymesh.dev",
                "metadata": {"field": "amount"},
            },
            {"@type": "type.googleapis.com/google.rpc.RequestInfo", "request_id": "r1"},
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [{"field": "amount", "description": "at least 1"}],
            },
        ],
    }
    headers = {"content-type": "application/json", "x-request-id": "r1"}

    assert envelope_problems(400, headers, body) == []
    assert envelope_problems(404, headers, body) == ["code 3 does not go with HTTP 404"]
    old_edge = {"http_status": 404, "message": "no route", "request_id": "r1"}
    assert len(envelope_problems(404, headers, old_edge)) >= 3


def test_envoy_serves_the_document_at_openapi_json_without_the_rest_filters():
    config = yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    route_config = manager["typed_config"]["route_config"]
    first = route_config["virtual_hosts"][0]["routes"][0]

    assert first["match"]["path"] == "/openapi.json"
    assert first["direct_response"]["body"] == {"filename": "build/openapi.json"}
    assert route_config["max_direct_response_body_size_bytes"] >= 256 * 1024
    assert all(filtered["disabled"] for filtered in first["typed_per_filter_config"].values())
    # The document must fit the direct response limit.
    built_document = ROOT / "build" / "openapi.json"
    if built_document.exists():
        size = built_document.stat().st_size
        assert size < route_config["max_direct_response_body_size_bytes"]
