"""The PSPs' webhooks as the PSPs send them (signed), and the rows they change."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import psycopg

from tests.support.http import Response
from tests.support.psp import sandbox
from webhook_svc.inbound.psp_signatures import sign

SANDBOX_SECRET = "whsec_paymesh_dev_sandbox"  # noqa: S105 - the dev default the mesh runs with
STRIPE_SECRET = "whsec_paymesh_dev_stripe"  # noqa: S105


def send(mesh, psp: str, body: bytes, headers: dict[str, str]) -> Response:
    request = urllib.request.Request(  # noqa: S310 - the test's own mesh
        mesh.url(f"/v1/psp/{psp}/webhooks"),
        data=body,
        method="POST",
        headers={"content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            status, raw, got = answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as error:
        status, raw, got = error.code, error.read(), error.headers
    text = raw.decode()
    try:
        parsed = json.loads(text) if text else None
    except json.JSONDecodeError:
        parsed = text
    return Response(status, {k.lower(): v for k, v in got.items()}, parsed)


def signed(mesh, psp: str, event: dict, secret: str | None = None, at: int | None = None):
    body = json.dumps(event).encode()
    header = "stripe-signature" if psp == "stripe" else "sandbox-signature"
    key = secret or (STRIPE_SECRET if psp == "stripe" else SANDBOX_SECRET)
    return send(mesh, psp, body, {header: sign(body, key, at)})


def db(infra):
    return psycopg.connect(infra.database_url, autocommit=True)


def intent_row(infra, intent_id: str) -> dict:
    with db(infra) as connection:
        cursor = connection.execute(
            "SELECT status, amount_received, amount_refunded, amount_capturable, psp_reference"
            " FROM gateway.payment_intents WHERE id = %s",
            (intent_id,),
        )
        names = [c.name for c in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))


def dashboard(mesh, charge: str, action: str, **body):
    """An action taken at the sandbox's dashboard, which the sandbox reports by webhook."""
    return sandbox(mesh, f"/_dashboard/charges/{charge}/{action}", body)
