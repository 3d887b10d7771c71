"""A tiny JSON-over-HTTP client for calling the mesh through Envoy like a merchant would."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: Any


def call(url: str, method: str = "GET", headers: dict[str, str] | None = None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return _response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return _response(error.code, error.headers, error.read())


def _response(status: int, headers, raw: bytes) -> Response:
    text = raw.decode()
    try:
        body = json.loads(text) if text else None
    except json.JSONDecodeError:
        body = text
    return Response(status, {k.lower(): v for k, v in headers.items()}, body)
