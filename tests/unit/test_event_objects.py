"""An event's object as the API prints it: the print options are Envoy's, a snapshot renders
the same whether SQL or Python wrote it, and what was written before snapshots goes out as
it was."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import yaml

from gateway_svc.domain.models import PaymentIntent
from gateway_svc.service import EVENT_OBJECTS
from gateway_svc.servicer import payment_intent_message
from paymesh.platform.outbox import snapshot, to_message
from paymesh.platform.wire import ENVOY_PRINT_OPTIONS, api_json, json_timestamp
from rebill_svc.domain.subscriptions import renewal_status
from webhook_svc.outbound.events import parse_event

ROOT = Path(__file__).resolve().parents[2]
CREATED = datetime(2026, 12, 7, 9, 30, 1, 250000, tzinfo=UTC)
INTENT = PaymentIntent(
    id="pi_unitEventObject000000001",
    merchant_id="acct_unit",
    livemode=False,
    amount=1999,
    currency="usd",
    status="requires_capture",
    capture_method="manual",
    amount_capturable=1999,
    payment_method="pm_unitEventObject000000001",
    psp="sandbox",
    description="order 1001",
    metadata={"order_id": "1001"},
    created_at=CREATED,
    updated_at=CREATED,
    psp_reference="ch_1",
    attempt_key="pi_unitEventObject000000001:abc",
)


def _transcoder_options() -> dict:
    config = yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text())
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "print_options" in node:
                found.append(node["print_options"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    [options] = found
    return options


def test_events_print_objects_with_the_transcoders_print_options():
    """Change Envoy's print_options and api_json together, or events and answers differ."""
    assert _transcoder_options() == ENVOY_PRINT_OPTIONS


def test_an_object_prints_as_the_transcoder_prints_it():
    shown = api_json(payment_intent_message(INTENT))
    assert shown["amount"] == "1999" and shown["amount_received"] == "0"  # int64: strings
    assert shown["created"] == "2026-12-07T09:30:01.250Z"
    assert shown["metadata"] == {"order_id": "1001"} and shown["description"] == "order 1001"
    assert "last_payment_error" not in shown  # an unset message is left out
    assert "psp_reference" not in shown and "merchant_id" not in shown


def test_a_snapshot_renders_the_same_whether_sql_or_python_wrote_it():
    python_wrote = snapshot(dataclasses.asdict(INTENT))["snapshot"]
    # PostgreSQL's to_jsonb writes timestamps in the session's time zone.
    sql_wrote = {
        **python_wrote,
        "created_at": CREATED.astimezone(timezone(timedelta(hours=1))).isoformat(),
        "updated_at": CREATED.isoformat(),
        "pending_since": None,
    }
    rendered = EVENT_OBJECTS["payment_intent"].render(python_wrote)
    assert rendered == EVENT_OBJECTS["payment_intent"].render(sql_wrote)
    assert rendered == api_json(payment_intent_message(INTENT))  # what GET answers


def _outbox_row(payload: dict) -> SimpleNamespace:
    return SimpleNamespace(
        id=7,
        event_id="evt_unit",
        event_type="payment_intent.requires_capture",
        aggregate_type="payment_intent",
        aggregate_id=INTENT.id,
        payload=payload,
        headers={},
        created_at=CREATED,
    )


def test_a_relayed_event_carries_the_object_and_webhook_svc_keeps_it_as_it_is():
    message = to_message(
        _outbox_row(snapshot(dataclasses.asdict(INTENT))),
        {"payment_intent": EVENT_OBJECTS["payment_intent"]},
    )
    data = json.loads(message.body)["data"]
    assert (data["merchant_id"], data["livemode"]) == ("acct_unit", False)
    received = parse_event(message.body)
    assert received is not None
    assert received.object == api_json(payment_intent_message(INTENT))
    assert (received.merchant_id, received.object_id) == ("acct_unit", INTENT.id)


def test_a_payload_written_before_snapshots_goes_out_and_is_delivered_as_written():
    legacy = {"merchant_id": "acct_unit", "livemode": False, "status": "succeeded", "amount": 5}
    message = to_message(_outbox_row(legacy))
    received = parse_event(message.body)
    assert received is not None
    assert received.object == {
        "id": INTENT.id,
        "object": "payment_intent",
        "livemode": False,
        "status": "succeeded",
        "amount": 5,
    }


def test_a_moment_is_written_as_answers_write_it():
    assert json_timestamp(CREATED) == "2026-12-07T09:30:01.250Z"
    assert json_timestamp(CREATED.replace(microsecond=0)) == "2026-12-07T09:30:01Z"


def test_a_renewal_is_pending_until_it_is_paid_or_given_up():
    assert [renewal_status(s) for s in ("scheduled", "queued", "running")] == ["pending"] * 3
    assert renewal_status("succeeded") == "succeeded" and renewal_status("failed") == "failed"
