"""The common error envelope, checked in one place.

Every error a merchant can see, from Envoy or from a service, is google.rpc.Status as JSON
(AIP-193) with proto field names:

    {"code": <google.rpc.Code>, "message": "…", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "snake_case",
         "domain": "paymesh.dev", "metadata": {…}},
        {"@type": "type.googleapis.com/google.rpc.RequestInfo", "request_id": "<X-Request-Id>"},
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "field_violations": [{"field": "…", "description": "…"}]}     (where fields are at fault)
    ]}

`assert_error_envelope(response)` for REST responses, `assert_grpc_error_details(error)` for
a grpc.RpcError; the `*_problems` functions return the list of what is wrong instead, for
fuzzers that collect every failure before failing.
"""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

DOMAIN = "paymesh.dev"
TYPE_PREFIX = "type.googleapis.com/"
ERROR_INFO = TYPE_PREFIX + "google.rpc.ErrorInfo"
REQUEST_INFO = TYPE_PREFIX + "google.rpc.RequestInfo"
BAD_REQUEST = TYPE_PREFIX + "google.rpc.BadRequest"
REASON = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")

# google.rpc.Code values an HTTP status stands for (google/rpc/code.proto's mapping); statuses
# not listed (405, 413, 431, …) may carry any code but OK.
CODES_BY_HTTP_STATUS = {
    400: {3, 9, 11},  # INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
    401: {16},  # UNAUTHENTICATED
    403: {7},  # PERMISSION_DENIED
    404: {5},  # NOT_FOUND
    409: {6, 10},  # ALREADY_EXISTS, ABORTED
    429: {8},  # RESOURCE_EXHAUSTED
    500: {2, 13, 15},  # UNKNOWN, INTERNAL, DATA_LOSS
    501: {12},  # UNIMPLEMENTED
    503: {14},  # UNAVAILABLE
    504: {4},  # DEADLINE_EXCEEDED
}
# Implementation details that must never reach a merchant.
INTERNAL_MARKERS = (
    "Traceback",
    "<class ",
    "Exception",
    "DecodeError",
    "Received message larger than max",
    "grpc_status",
    "upstream connect error",
    "delayed connect error",
)


def envelope_problems(status: int, headers: dict[str, str], body: Any) -> list[str]:
    """What keeps one HTTP error response from being the common envelope (empty: none).

    `headers` with lowercase names; `body` parsed JSON, or the raw text when it is not JSON.
    """
    problems: list[str] = []
    content_type = headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        problems.append(f"content-type is {content_type!r}, not application/json")
    if isinstance(body, (str, bytes)) or body is None:
        return [*problems, f"body is not JSON: {_short(body)}"]
    if not isinstance(body, dict):
        return [*problems, f"body is not a JSON object: {_short(body)}"]
    extra = set(body) - {"code", "message", "details"}
    if extra:
        problems.append(f"keys outside google.rpc.Status: {sorted(extra)}")
    code = body.get("code")
    if not isinstance(code, int) or isinstance(code, bool) or not 1 <= code <= 16:
        problems.append(f"code is {code!r}, not a google.rpc.Code other than OK")
    elif status in CODES_BY_HTTP_STATUS and code not in CODES_BY_HTTP_STATUS[status]:
        problems.append(f"code {code} does not go with HTTP {status}")
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        problems.append(f"message is {message!r}, not a non-empty string")
    else:
        problems += [f"message shows internals ({m!r})" for m in INTERNAL_MARKERS if m in message]
    details = body.get("details")
    if not isinstance(details, list):
        return [*problems, f"details is {_short(details)}, not a list"]
    problems += details_problems(details, headers.get("x-request-id"))
    return problems


def details_problems(details: list, request_id: str | None) -> list[str]:
    problems = []
    by_type: dict[str, list[dict]] = {}
    for detail in details:
        if not isinstance(detail, dict) or not isinstance(detail.get("@type"), str):
            problems.append(f"a detail without @type: {_short(detail)}")
            continue
        by_type.setdefault(detail["@type"], []).append(detail)
    infos = by_type.get(ERROR_INFO, [])
    if len(infos) != 1:
        problems.append(f"{len(infos)} ErrorInfo details, not 1")
    for info in infos:
        reason = info.get("reason")
        if not isinstance(reason, str) or not REASON.match(reason):
            problems.append(f"ErrorInfo.reason is {reason!r}, not snake_case")
        if info.get("domain") != DOMAIN:
            problems.append(f"ErrorInfo.domain is {info.get('domain')!r}, not {DOMAIN!r}")
        metadata = info.get("metadata", {})
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            problems.append(f"ErrorInfo.metadata is not a map of strings: {_short(metadata)}")
    request_infos = by_type.get(REQUEST_INFO, [])
    if len(request_infos) != 1:
        problems.append(f"{len(request_infos)} RequestInfo details, not 1")
    for info in request_infos:
        if not info.get("request_id"):
            problems.append("RequestInfo.request_id is empty")
        elif request_id is not None and info["request_id"] != request_id:
            problems.append("RequestInfo.request_id is not the response's X-Request-Id")
    for bad_request in by_type.get(BAD_REQUEST, []):
        violations = bad_request.get("field_violations")
        if not isinstance(violations, list) or not violations:
            problems.append("BadRequest without field_violations")
            continue
        for violation in violations:
            # `field` may be empty: the body as a whole, or a field whose name is "".
            if not (
                isinstance(violation, dict)
                and isinstance(violation.get("field"), str)
                and isinstance(violation.get("description"), str)
                and violation["description"].strip()
            ):
                problems.append(f"a field violation without field or description: {violation}")
    unknown = set(by_type) - {ERROR_INFO, REQUEST_INFO, BAD_REQUEST}
    if unknown:
        problems.append(f"details of other types: {sorted(unknown)}")
    return problems


def assert_error_envelope(response, status: int | None = None) -> dict:
    """Asserts an HTTP error response is the common envelope; returns its body.

    Takes tests.support.http.Response, requests.Response or schemathesis' Response."""
    code, headers, body = http_parts(response)
    assert code >= 400, f"not an error: HTTP {code}"
    if status is not None:
        assert code == status, f"HTTP {code}, expected {status}: {_short(body)}"
    problems = envelope_problems(code, headers, body)
    assert not problems, f"HTTP {code} is not the error envelope: {problems}; {_short(body)}"
    return body


def http_parts(response) -> tuple[int, dict[str, str], Any]:
    """(status, lowercase headers, JSON body or text) of any of the HTTP clients' responses."""
    if hasattr(response, "body") and hasattr(response, "status"):  # tests.support.http
        return response.status, dict(response.headers), response.body
    status = getattr(response, "status_code")  # noqa: B009 - requests and schemathesis alike
    headers = {}
    for name, value in response.headers.items():
        # schemathesis' Response keeps a list of values per header.
        headers[name.lower()] = ", ".join(value) if isinstance(value, list) else value
    text = response.text if isinstance(response.text, str) else response.content.decode()
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = text
    return status, headers, body


def grpc_details_problems(error: grpc.RpcError) -> list[str]:
    """What keeps a gRPC error from carrying google.rpc details with an ErrorInfo reason."""
    problems = []
    message = error.details() or ""
    if not message.strip():
        problems.append("empty status message")
    problems += [f"message shows internals ({m!r})" for m in INTERNAL_MARKERS if m in message]
    try:
        status = rpc_status.from_call(error)
    except ValueError as mismatch:  # the status in the trailers contradicts the call's
        return [*problems, f"grpc-status-details-bin does not match the call: {mismatch}"]
    if status is None:
        return [*problems, "no google.rpc.Status details (grpc-status-details-bin)"]
    infos = []
    for any_detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if any_detail.Unpack(info):
            infos.append(info)
    if len(infos) != 1:
        problems.append(f"{len(infos)} ErrorInfo details, not 1")
    for info in infos:
        if not REASON.match(info.reason):
            problems.append(f"ErrorInfo.reason is {info.reason!r}, not snake_case")
        if info.domain != DOMAIN:
            problems.append(f"ErrorInfo.domain is {info.domain!r}, not {DOMAIN!r}")
    for any_detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if any_detail.Unpack(bad_request) and not all(
            v.description for v in bad_request.field_violations
        ):
            problems.append("a BadRequest field violation without a description")
    return problems


def assert_grpc_error_details(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """Asserts a gRPC error carries google.rpc details with one ErrorInfo; returns it."""
    problems = grpc_details_problems(error)
    assert not problems, f"{error.code()} {error.details()!r}: {problems}"
    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    next(d for d in status.details if d.Unpack(info))
    return info


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def reason_of(response) -> str:
    """The ErrorInfo reason of an error answered over REST."""
    [info] = [d for d in response.body["details"] if d["@type"].endswith("ErrorInfo")]
    return info["reason"]


def violations(response) -> dict[str, str]:
    """The BadRequest field violations of an error answered over REST, by field."""
    [bad] = [d for d in response.body["details"] if d["@type"].endswith("BadRequest")]
    return {v["field"]: v["reason"] for v in bad["field_violations"]}
