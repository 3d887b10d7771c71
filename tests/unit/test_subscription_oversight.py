"""What the back office reads of subscriptions (issue 32): the free-text search says which
column it matches, and where dunning stands follows from the open period's attempts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paymesh.platform.problems import InvalidArgument
from rebill_svc.domain.dunning import FinalStatus, RetryPolicy, dunning_state
from rebill_svc.domain.search import SearchField, parse_query

AT = datetime(2028, 3, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("sub_123", (SearchField.ID, "sub_123")),
        (" acct_9 ", (SearchField.MERCHANT, "acct_9")),
        ("pm_abc", (SearchField.PAYMENT_METHOD, "pm_abc")),
        ("", None),
    ],
)
def test_free_text_names_a_subscription_a_merchant_or_a_payment_method(q, expected):
    assert parse_query(q) == expected


@pytest.mark.parametrize("q", ["pi_1", "4242424242424242", "sub_1 OR 1=1", "x" * 300])
def test_anything_else_is_refused_naming_q(q):
    with pytest.raises(InvalidArgument) as refused:
        parse_query(q)
    assert [v.field for v in refused.value.violations] == ["q"]
    assert q not in str(refused.value)  # never repeated: it could be a card number


def test_an_unpaid_period_shows_its_attempts_and_next_retry():
    policy = RetryPolicy(retry_after=(timedelta(days=2), timedelta(days=4)))
    state = dunning_state(policy, open_period_attempts=2, next_attempt_at=AT)

    assert (state.retry_after_days, state.attempts_made, state.next_attempt_at) == ([2, 4], 2, AT)
    assert state.final_status == FinalStatus.UNPAID


def test_nothing_owed_shows_no_attempts_and_no_retry():
    state = dunning_state(
        RetryPolicy(final_status=FinalStatus.CANCELED), open_period_attempts=0, next_attempt_at=None
    )
    assert (state.attempts_made, state.next_attempt_at, state.final_status) == (
        0,
        None,
        FinalStatus.CANCELED,
    )
    assert state.retry_after_days == [1, 3, 5, 7]
