"""Property-based fuzzing of every REST route through Envoy against the real mesh
(schemathesis, from the OpenAPI document generated from the protos).

Every answer must be: never a 5xx; every 4xx (and 5xx) in the common error envelope; no card
number the caller sent in the answer (headers included) or in any log line of the mesh
(Envoy's access log included). Inputs: schemathesis' valid and invalid requests, plus card
numbers planted in path ids, query parameters, X-Request-Id, Idempotency-Key and body
strings, real object ids of the merchant, and calls without or with a wrong API key.

Bounded for CI (PAYMESH_FUZZ_EXAMPLES per route, derandomized); see tests/support/fuzzing.py
for running it longer. It collects every distinct failure (smallest input of each) and fails
once at the end with the list, also written to rest-fuzz-findings.json in pytest's temp dir.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.support.envelope import envelope_problems, http_parts
from tests.support.fuzzing import (
    Finding,
    Findings,
    LogWatch,
    examples,
    fuzz_settings,
    shorten,
    signature_of,
)
from tests.support.http import call
from tests.support.mesh import create_merchant
from tests.support.pan import leaked, pans, pans_in
from tests.support.payments import post
from tests.support.vault import tokenize

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "build" / "openapi.json"
EXAMPLES_PER_ROUTE = examples(80)


@pytest.fixture(scope="module")
def fuzz_merchant(infra):
    """A merchant of the fuzzer's own: what it creates never shows in other tests' lists."""
    return create_merchant(infra, "fuzz-rest")


@pytest.fixture(scope="module")
def real_ids(mesh, fuzz_merchant) -> dict[str, list[str]]:
    """Ids of the merchant's objects in several states, for the fuzzer to use as inputs (as
    many as the mesh lets it make: the fuzzer runs with what there is)."""
    merchant = fuzz_merchant
    ids: dict[str, list[str]] = {"payment_method": [], "payment_intent": [], "refund": []}

    def keep(kind: str, response) -> str | None:
        if response.status == 200 and isinstance(response.body, dict):
            ids[kind].append(response.body["id"])
            return response.body["id"]
        return None

    method = keep("payment_method", tokenize(mesh, merchant))
    for fields in (
        {},  # requires_confirmation
        {"confirm": True, "capture_method": "manual"},  # requires_capture
        {"confirm": True},  # succeeded
    ):
        body = {"amount": 1500, "currency": "usd", "payment_method": method or "", **fields}
        intent = keep("payment_intent", post(mesh, merchant, "/v1/payment_intents", body))
    if intent:
        keep("refund", post(mesh, merchant, "/v1/refunds", {"payment_intent": intent, "amount": 1}))
    return ids


def test_envoy_publishes_the_openapi_document_as_built(mesh):
    response = call(mesh.url("/openapi.json"))

    assert response.status == 200, response
    assert response.headers["content-type"].startswith("application/json")
    assert response.body == json.loads(DOCUMENT.read_text())


def test_every_rest_route_answers_without_5xx_in_the_envelope_and_echoes_no_card_number(
    mesh, fuzz_merchant, real_ids, tmp_path_factory
):
    schema = schemathesis.openapi.from_path(DOCUMENT)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    session = requests.Session()
    findings = Findings()
    sent_pans: dict[str, list[dict]] = {}
    watch = LogWatch(mesh.log_dir)
    every_id = [i for ids in real_ids.values() for i in ids] or ["pi_none"]
    started = time.monotonic()

    for operation in operations:
        fuzz_one(operation, mesh, session, fuzz_merchant, every_id, sent_pans, findings)

    fuzz_seconds = time.monotonic() - started
    watch.scan(mesh, sent_pans, findings)
    findings.dump(Path(tmp_path_factory.getbasetemp()) / "rest-fuzz-findings.json")
    print(f"REST fuzz: {len(operations)} routes × {EXAMPLES_PER_ROUTE} in {fuzz_seconds:.1f} s")
    assert not findings, findings.report()


def fuzz_one(operation, mesh, session, merchant, real_ids, sent_pans, findings) -> None:
    where = f"{operation.method.upper()} {operation.path}"
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @fuzz_settings(EXAMPLES_PER_ROUTE)
    @given(case=strategy, data=st.data())
    def fuzz(case, data):
        headers = plant(case, data, real_ids, merchant)
        request = request_of(case, headers)
        sent = pans_in(json.dumps(request, ensure_ascii=False, default=str))
        for pan in sent:
            sent_pans.setdefault(pan, []).append(request)
        try:
            response = case.call(
                base_url=mesh.url(""), session=session, headers=headers, timeout=15
            )
        except (requests.exceptions.InvalidHeader, UnicodeEncodeError, ValueError):
            return  # requests would not send it: nothing reached the server
        except requests.RequestException as error:
            findings.add(
                Finding(where, "no HTTP answer", type(error).__name__, str(error), request),
                signature=type(error).__name__,
            )
            return
        check(where, request, response, sent, findings)

    fuzz()


def plant(case, data, real_ids: list[str], merchant) -> dict[str, str]:
    """Mixes in what random data rarely hits: real ids, card numbers where none belongs, and
    missing or wrong keys. Returns the headers to send on top of the case's."""
    if case.path_parameters and data.draw(st.booleans(), label="real id in path"):
        name = next(iter(case.path_parameters))
        case.path_parameters[name] = data.draw(st.sampled_from(real_ids), label="id")
    if isinstance(case.body, dict):
        for name in ("payment_method", "payment_intent"):
            if name in case.body and data.draw(st.booleans(), label=f"real {name}"):
                case.body[name] = data.draw(st.sampled_from(real_ids), label="id")
    if data.draw(st.integers(0, 3), label="plant a card number") == 0:
        pan = data.draw(pans(), label="card number")
        targets = ["X-Request-Id", "Idempotency-Key"]
        targets += [f"path:{name}" for name in case.path_parameters or {}]
        targets += [f"query:{name}" for name in query_names(case)]
        targets += [f"body:{i}" for i in range(len(string_slots(case.body)))]
        target = data.draw(st.sampled_from(targets), label="where")
        place(case, target, pan)
    headers = {"Authorization": f"Bearer {merchant.secret_key}"}
    auth = data.draw(st.sampled_from(["key"] * 8 + ["none", "wrong"]), label="auth")
    if auth == "none":
        headers = {}
    elif auth == "wrong":
        headers = {"Authorization": "Bearer sk_test_" + "0" * 24}
    return headers


def query_names(case) -> list[str]:
    names = [p.name for p in case.operation.query]
    return names


def string_slots(body) -> list[tuple]:
    """(container, key) of every string value in a JSON body."""
    slots: list[tuple] = []
    if isinstance(body, dict):
        for key, value in body.items():
            if isinstance(value, str):
                slots.append((body, key))
            else:
                slots += string_slots(value)
    elif isinstance(body, list):
        for i, value in enumerate(body):
            if isinstance(value, str):
                slots.append((body, i))
            else:
                slots += string_slots(value)
    return slots


def place(case, target: str, pan: str) -> None:
    kind, _, name = target.partition(":")
    if target in ("X-Request-Id", "Idempotency-Key"):
        if case.headers is None:
            case.headers = {}
        case.headers[target] = pan.encode("ascii", "replace").decode()  # headers are ASCII
    elif kind == "path":
        case.path_parameters[name] = pan
    elif kind == "query":
        if case.query is None:
            case.query = {}
        case.query[name] = pan
    elif kind == "body":
        container, key = string_slots(case.body)[int(name)]
        container[key] = pan


def request_of(case, extra_headers: dict[str, str]) -> dict:
    """The request as the report shows it (the API key left out)."""
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    body = case.body if isinstance(case.body, (dict, list, str, bytes, int, float, bool)) else None
    return {
        "method": case.method,
        "path": case.formatted_path,
        "path_parameters": case.path_parameters,
        "query": case.query,
        "headers": headers,
        "auth": "key" if "Authorization" in extra_headers else "none",
        "body": body if not isinstance(body, bytes) else body.decode("latin-1"),
    }


def check(where: str, request: dict, response, sent: set[str], findings: Findings) -> None:
    status, headers, body = http_parts(response)
    answer = f"HTTP {status} {shorten(response.text or '', 500)}"
    reason = reason_of(body)
    if status >= 500:
        findings.add(
            Finding(where, "5xx", str(status), answer, request),
            signature=reason or signature_of(message_of(body)),
        )
    if 400 <= status < 500:
        problems = envelope_problems(status, headers, body)
        if problems:
            findings.add(
                Finding(
                    where, "not the error envelope", str(status), f"{problems}; {answer}", request
                ),
                signature=f"{reason} {signature_of(' '.join(sorted(problems)))}",
            )
    shown = json.dumps(headers) + (response.text or "")
    echoed = leaked(sent, shown)
    if echoed:
        part = "body" if leaked(sent, response.text or "") else "headers"
        findings.add(
            Finding(where, "PAN echoed in the response", str(status), answer, request),
            signature=f"{part} {reason}",
        )


def reason_of(body) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("details"), list):
        for detail in body["details"]:
            if isinstance(detail, dict) and "reason" in detail:
                return str(detail["reason"])
    return None


def message_of(body) -> str:
    if isinstance(body, dict):
        return str(body.get("message", ""))
    return str(body)[:200]
