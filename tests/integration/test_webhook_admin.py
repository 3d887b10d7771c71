"""WebhookAdminService as the back office uses it (its `backoffice` identity, through the
generated stubs): deliveries of a payment's events with their attempts, those given up on,
and sending one again or dropping it. The endpoints are a real HTTP receiver on loopback that
fails as a test scripts it; webhook_svc retries on a compressed schedule."""

from __future__ import annotations

import grpc
import pytest

from paymesh.webhook.v1 import webhook_admin_pb2 as pb
from paymesh.webhook.v1 import webhook_admin_pb2_grpc
from tests.support.admin_rpc import admin_call, fields_of, reason_of, refusal
from tests.support.payments import pay
from tests.support.receiver import Script
from tests.support.waiting import wait_until
from tests.support.webhooks import SCHEDULE, Hooks, verified

pytestmark = pytest.mark.integration

OPERATOR = "ops.person@example.com"


@pytest.fixture(scope="module")
def hooks(webhook_hooks) -> Hooks:
    return webhook_hooks


def webhook_admin(hooks: Hooks, method: str, request, identity: str = "backoffice"):
    return admin_call(
        hooks.mesh,
        "webhook",
        webhook_admin_pb2_grpc.WebhookAdminServiceStub,
        method,
        request,
        identity,
    )


def dead_delivery_of(hooks: Hooks, merchant_id: str, event_type: str) -> pb.Delivery:
    """The merchant's delivery of an event of `event_type`, once it is dead."""

    def found():
        dead = webhook_admin(
            hooks, "ListDeadDeliveries", pb.ListDeadDeliveriesRequest(merchant_id=merchant_id)
        ).data
        return next((d for d in dead if d.event_type == event_type), None)

    return wait_until(found, timeout=30)


def test_a_dead_delivery_retried_reaches_the_endpoint_once_it_is_back(hooks):
    merchant = hooks.merchant("admin-retry")
    hooks.receiver.scripts["/comeback"] = Script(statuses=[500])
    endpoint = hooks.endpoint(merchant, "/comeback", ["payment_intent.succeeded"])
    payment = pay(hooks.mesh, merchant).body

    dead = dead_delivery_of(hooks, merchant.id, "payment_intent.succeeded")
    assert (dead.status, dead.payment_intent, dead.webhook_endpoint) == (
        "dead",
        payment["id"],
        endpoint["id"],
    )
    assert dead.id.startswith("whd_") and dead.url.endswith("/comeback")
    assert [a.status_code for a in dead.attempts] == [500] * len(SCHEDULE)
    assert [a.outcome for a in dead.attempts] == ["failed"] * (len(SCHEDULE) - 1) + ["dead"]
    assert len(hooks.receiver.at("/comeback")) == len(SCHEDULE)

    hooks.receiver.scripts["/comeback"] = Script(statuses=[200])
    retried = webhook_admin(
        hooks, "RetryDelivery", pb.RetryDeliveryRequest(id=dead.id, operator=OPERATOR)
    )
    assert retried.status == "pending"
    received = hooks.deliveries("/comeback", len(SCHEDULE) + 1, timeout=30)[-1]
    event = verified(endpoint["secret"], received)
    assert (event["id"], event["data"]["object"]["id"]) == (dead.event_id, payment["id"])

    [delivered] = wait_until(
        lambda: [
            d
            for d in webhook_admin(
                hooks, "ListDeliveries", pb.ListDeliveriesRequest(payment_intent=payment["id"])
            ).data
            if d.id == dead.id and d.status == "succeeded"
        ]
    )
    assert delivered.attempts[-1].status_code == 200
    assert delivered.attempts[-1].outcome == "succeeded"
    by_event = webhook_admin(
        hooks, "ListDeliveries", pb.ListDeliveriesRequest(event_id=dead.event_id)
    )
    assert [d.id for d in by_event.data] == [dead.id]
    by_merchant = webhook_admin(
        hooks, "ListDeliveries", pb.ListDeliveriesRequest(merchant_id=merchant.id)
    )
    assert dead.id in [d.id for d in by_merchant.data]
    # The operator's action is on record, with the operator.
    assert hooks.faults.rows(
        "SELECT actor, action, details->>'operator' FROM webhook.webhook_audit"
        " WHERE object_id = %s",
        (dead.id,),
    ) == [("operator", "delivery.retry", OPERATOR)]

    not_dead = refusal(
        lambda: webhook_admin(
            hooks, "RetryDelivery", pb.RetryDeliveryRequest(id=dead.id, operator=OPERATOR)
        )
    )
    assert (not_dead.code(), reason_of(not_dead)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "delivery_not_dead",
    )


def test_a_discarded_delivery_leaves_the_dead_ones_and_is_never_sent(hooks):
    merchant = hooks.merchant("admin-discard")
    hooks.receiver.scripts["/discarded"] = Script(statuses=[500])
    hooks.endpoint(merchant, "/discarded", ["payment_intent.succeeded"])
    pay(hooks.mesh, merchant)
    dead = dead_delivery_of(hooks, merchant.id, "payment_intent.succeeded")

    discarded = webhook_admin(
        hooks, "DiscardDelivery", pb.DiscardDeliveryRequest(id=dead.id, operator=OPERATOR)
    )
    assert discarded.status == "discarded"
    left = webhook_admin(
        hooks, "ListDeadDeliveries", pb.ListDeadDeliveriesRequest(merchant_id=merchant.id)
    )
    assert dead.id not in [d.id for d in left.data]
    for method, request in (
        ("RetryDelivery", pb.RetryDeliveryRequest(id=dead.id, operator=OPERATOR)),
        ("DiscardDelivery", pb.DiscardDeliveryRequest(id=dead.id, operator=OPERATOR)),
    ):
        error = refusal(lambda m=method, r=request: webhook_admin(hooks, m, r))
        assert (error.code(), reason_of(error)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "delivery_not_dead",
        )
    assert hooks.faults.rows(
        "SELECT actor, action, details->>'operator' FROM webhook.webhook_audit"
        " WHERE object_id = %s",
        (dead.id,),
    ) == [("operator", "delivery.discard", OPERATOR)]
    assert len(hooks.receiver.at("/discarded")) == len(SCHEDULE)


def test_a_dead_delivery_to_a_disabled_endpoint_cannot_be_retried(hooks):
    merchant = hooks.merchant("admin-gone")
    hooks.receiver.scripts["/admin-gone"] = Script(statuses=[410])
    hooks.endpoint(merchant, "/admin-gone", ["payment_intent.succeeded"])
    pay(hooks.mesh, merchant)
    dead = dead_delivery_of(hooks, merchant.id, "payment_intent.succeeded")

    error = refusal(
        lambda: webhook_admin(
            hooks, "RetryDelivery", pb.RetryDeliveryRequest(id=dead.id, operator=OPERATOR)
        )
    )
    assert (error.code(), reason_of(error)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "endpoint_disabled",
    )


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("ListDeliveries", pb.ListDeliveriesRequest(), "event_id"),
        ("ListDeliveries", pb.ListDeliveriesRequest(event_id="evt_x", limit=101), "limit"),
        ("ListDeliveries", pb.ListDeliveriesRequest(event_id="pi_x"), "event_id"),
        ("ListDeliveries", pb.ListDeliveriesRequest(payment_intent="evt_x"), "payment_intent"),
        ("ListDeliveries", pb.ListDeliveriesRequest(merchant_id="x"), "merchant_id"),
        ("ListDeadDeliveries", pb.ListDeadDeliveriesRequest(limit=-1), "limit"),
        ("RetryDelivery", pb.RetryDeliveryRequest(id="whd_1"), "operator"),
        ("DiscardDelivery", pb.DiscardDeliveryRequest(operator=OPERATOR), "id"),
    ],
)
def test_bad_input_is_refused_naming_its_field(hooks, method, request_, field):
    error = refusal(lambda: webhook_admin(hooks, method, request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(error) == [field]


@pytest.mark.parametrize("delivery_id", ["whd_999999999", "whd_x1", "we_1"])
def test_an_unknown_delivery_is_not_found(hooks, delivery_id):
    error = refusal(
        lambda: webhook_admin(
            hooks, "RetryDelivery", pb.RetryDeliveryRequest(id=delivery_id, operator=OPERATOR)
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_only_operators_and_the_back_office_may_call(hooks):
    request = pb.ListDeadDeliveriesRequest()
    assert webhook_admin(hooks, "ListDeadDeliveries", request, identity="ops") is not None
    refused = refusal(
        lambda: webhook_admin(hooks, "ListDeadDeliveries", request, identity="gateway")
    )
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
