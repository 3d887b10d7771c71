"""RebillAdminService as the back office uses it (its `backoffice` service identity, through
the generated stubs): subscriptions searched across merchants, a subscription's whole story
(renewals, dunning, its rebill_audit timeline with a verified chain), and how many declined
renewals dunning recovered. Subscriptions are made by a merchant through Envoy, renewed by
the real scheduler, workers, gateway and sandbox PSP; a test clock moves time. This module's
amounts are 14701–14706 (the sandbox's ledger is shared by the session mesh's modules)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from paymesh.rebill.v1 import rebill_admin_pb2 as pb
from paymesh.rebill.v1 import rebill_admin_pb2_grpc
from tests.support import cards
from tests.support.admin_rpc import admin_call, fields_of, refusal
from tests.support.psp import sandbox
from tests.support.rebill import advance, new_clock, subscribe

pytestmark = pytest.mark.integration


def rebill_admin(mesh, method: str, request, identity: str = "backoffice"):
    return admin_call(
        mesh, "rebill", rebill_admin_pb2_grpc.RebillAdminServiceStub, method, request, identity
    )


def search(mesh, **fields) -> pb.SearchSubscriptionsResponse:
    return rebill_admin(mesh, "SearchSubscriptions", pb.SearchSubscriptionsRequest(**fields))


def ids(page: pb.SearchSubscriptionsResponse) -> list[str]:
    return [s.subscription.id for s in page.data]


def test_search_finds_by_id_merchant_payment_method_and_status_and_pages_newest_first(
    mesh, merchant, other_merchant
):
    paid = [subscribe(mesh, merchant, 14701).body for _ in range(3)]
    declined = subscribe(mesh, merchant, 14702, number=cards.VISA_INSUFFICIENT_FUNDS).body
    theirs = subscribe(mesh, other_merchant, 14703).body

    [found] = search(mesh, q=paid[0]["id"]).data
    assert (found.subscription.id, found.merchant_id) == (paid[0]["id"], merchant.id)
    assert ids(search(mesh, q=paid[1]["payment_method"])) == [paid[1]["id"]]
    # A merchant's subscriptions, newest first, page after page.
    first = search(mesh, q=merchant.id, limit=2)
    assert ids(first) == [declined["id"], paid[2]["id"]] and first.has_more
    second = search(mesh, merchant_id=merchant.id, limit=2, starting_after=ids(first)[-1])
    assert ids(second) == [paid[1]["id"], paid[0]["id"]]
    assert theirs["id"] not in ids(search(mesh, merchant_id=merchant.id, limit=100))
    past_due = search(mesh, merchant_id=merchant.id, status="past_due", limit=100)
    assert declined["id"] in ids(past_due)
    assert {s.subscription.status for s in past_due.data} == {"past_due"}
    assert ids(search(mesh, q=merchant.id, merchant_id=other_merchant.id)) == []


@pytest.mark.parametrize(
    ("field", "request_fields"),
    [
        ("limit", {"limit": 101}),
        ("limit", {"limit": -1}),
        ("status", {"status": "sleeping"}),
        ("q", {"q": "not an id"}),
        ("merchant_id", {"merchant_id": "sub_x"}),
        ("starting_after", {"starting_after": "sub_doesnotexist"}),
    ],
)
def test_bad_search_input_names_its_field(mesh, field, request_fields):
    error = refusal(lambda: search(mesh, **request_fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(error) == [field]


def test_a_declined_subscriptions_detail_shows_dunning_and_its_verified_audit_timeline(
    mesh, merchant
):
    start = datetime(2028, 3, 1, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    created = subscribe(
        mesh, merchant, 14704, number=cards.VISA_INSUFFICIENT_FUNDS, test_clock=clock
    ).body
    assert created["status"] == "past_due"

    detail = rebill_admin(
        mesh, "GetSubscriptionDetail", pb.GetSubscriptionDetailRequest(id=created["id"])
    )
    assert (detail.summary.subscription.id, detail.summary.merchant_id) == (
        created["id"],
        merchant.id,
    )
    assert detail.summary.subscription.status == "past_due"
    [renewal] = detail.renewals
    assert (renewal.subscription, renewal.status, renewal.attempt) == (created["id"], "pending", 2)
    assert list(detail.dunning.retry_after_days) == [1, 3, 5, 7]
    assert detail.dunning.final_status == "unpaid"
    assert detail.dunning.attempts_made == 1
    next_attempt = detail.dunning.next_attempt_at.ToDatetime(tzinfo=UTC)
    assert abs((next_attempt - start).total_seconds() - 86400) <= 8640
    # Every row of the subscription and its renewal, oldest first, and the chain verifies.
    timeline = [(e.object_id, e.action) for e in detail.timeline]
    assert timeline[0] == (created["id"], "subscription.create")
    assert {o for o, _ in timeline} == {created["id"], renewal.id}
    times = [e.at.ToDatetime() for e in detail.timeline]
    assert times == sorted(times)
    assert all(json.loads(e.details_json) is not None for e in detail.timeline)
    assert detail.chain_verified and not detail.chain_problem

    missing = refusal(
        lambda: rebill_admin(
            mesh, "GetSubscriptionDetail", pb.GetSubscriptionDetailRequest(id="sub_doesnotexist")
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    unnamed = refusal(
        lambda: rebill_admin(mesh, "GetSubscriptionDetail", pb.GetSubscriptionDetailRequest())
    )
    assert unnamed.code() == grpc.StatusCode.INVALID_ARGUMENT


def today_stats(mesh) -> pb.DailyRecovery:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(today - timedelta(days=1))
    end.FromDatetime(today + timedelta(days=1))
    stats = rebill_admin(
        mesh, "GetRecoveryStats", pb.GetRecoveryStatsRequest(**{"from": start, "to": end})
    )
    days = {d.day: d for d in stats.days}
    return days.get(today.date().isoformat(), pb.DailyRecovery())


def test_recovery_stats_count_a_period_a_dunning_retry_collected(mesh, merchant):
    before = today_stats(mesh)
    start = datetime(2028, 5, 1, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    sandbox(mesh, "/_knobs", {"soft_declines": {"14705": 1}})  # the first charge fails
    recovered = subscribe(mesh, merchant, 14705, test_clock=clock).body
    assert recovered["status"] == "past_due"
    advance(mesh, merchant, clock, start + timedelta(days=2))
    subscribe(mesh, merchant, 14706)  # paid at once

    after = today_stats(mesh)
    assert after.declined - before.declined == 1
    assert after.recovered - before.recovered == 1
    assert after.paid_first_time - before.paid_first_time >= 1

    error = refusal(lambda: rebill_admin(mesh, "GetRecoveryStats", pb.GetRecoveryStatsRequest()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(error) == ["from"]


def test_only_operators_and_the_back_office_may_call(mesh, merchant):
    request = pb.SearchSubscriptionsRequest(merchant_id=merchant.id)
    assert rebill_admin(mesh, "SearchSubscriptions", request, identity="ops") is not None
    refused = refusal(
        lambda: rebill_admin(mesh, "SearchSubscriptions", request, identity="gateway")
    )
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_dead_letters_operator_must_be_an_email(mesh):
    bad = refusal(
        lambda: rebill_admin(
            mesh, "RetryDeadLetter", pb.RetryDeadLetterRequest(id="dl_missing", operator="nobody")
        )
    )
    assert (bad.code(), fields_of(bad)) == (grpc.StatusCode.INVALID_ARGUMENT, ["operator"])
    missing = refusal(
        lambda: rebill_admin(
            mesh,
            "DiscardDeadLetter",
            pb.DiscardDeadLetterRequest(id="dl_missing", operator="ann@example.com"),
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
