"""The PaymentIntent and Refund statuses, and the one table of legal moves between them.

Every state change in gateway_svc asks `move()` (in Python) or `sources()` (in a conditional
UPDATE's WHERE) so that no other place writes down which move is legal."""

from __future__ import annotations

from enum import StrEnum

from paymesh.platform.problems import FailedPrecondition


class IntentStatus(StrEnum):
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    PROCESSING = "processing"  # a PSP authorization is in flight or its outcome is unknown
    REQUIRES_CAPTURE = "requires_capture"
    # The PSP waits for the customer (3-D Secure): nothing is held yet, nothing is in flight.
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"


class Action(StrEnum):
    CONFIRM = "confirm"  # an authorization goes out to a PSP
    AUTHORIZED = "authorized"  # the PSP holds the money (manual capture)
    CHARGED = "charged"  # the PSP authorized and captured
    DECLINED = "declined"
    ACTION_REQUIRED = "action_required"  # the PSP needs the customer before it decides
    NOT_PROCESSED = "not_processed"  # no PSP took it: provably nothing charged
    CAPTURE = "capture"
    CANCEL = "cancel"
    REFUND = "refund"


S = IntentStatus
# The statuses an authorization may be settled from: `processing`, or the statuses a confirm
# falls back to when its outcome was given up for "not charged" (the authorization came late,
# and nothing else happened to the intent since, so it is adopted rather than dropped).
_SETTLEABLE = (S.PROCESSING, S.REQUIRES_CONFIRMATION, S.REQUIRES_PAYMENT_METHOD)

# An intent waiting for its customer is settled by how the PSP says the authentication ended
# (asked by a later confirm, or told by the PSP's webhook), under the same attempt.
_ANSWERABLE = (*_SETTLEABLE, S.REQUIRES_ACTION)

TRANSITIONS: dict[Action, dict[IntentStatus, IntentStatus]] = {
    # A confirm of an intent in requires_action starts no authorization: it asks the PSP how
    # the customer's authentication ended (gateway_svc.payments.authorize.complete).
    Action.CONFIRM: {
        S.REQUIRES_PAYMENT_METHOD: S.PROCESSING,
        S.REQUIRES_CONFIRMATION: S.PROCESSING,
    },
    Action.AUTHORIZED: {status: S.REQUIRES_CAPTURE for status in _ANSWERABLE},
    Action.CHARGED: {status: S.SUCCEEDED for status in _ANSWERABLE},
    Action.DECLINED: {
        S.PROCESSING: S.REQUIRES_PAYMENT_METHOD,
        S.REQUIRES_ACTION: S.REQUIRES_PAYMENT_METHOD,  # the customer failed authentication
    },
    Action.ACTION_REQUIRED: {status: S.REQUIRES_ACTION for status in _SETTLEABLE},
    Action.NOT_PROCESSED: {S.PROCESSING: S.REQUIRES_CONFIRMATION},
    Action.CAPTURE: {S.REQUIRES_CAPTURE: S.SUCCEEDED},
    Action.CANCEL: {
        S.REQUIRES_PAYMENT_METHOD: S.CANCELED,
        S.REQUIRES_CONFIRMATION: S.CANCELED,
        S.REQUIRES_CAPTURE: S.CANCELED,
        S.REQUIRES_ACTION: S.CANCELED,  # voided at the PSP: the customer can no longer complete it
    },
    Action.REFUND: {S.SUCCEEDED: S.SUCCEEDED},
}

# What a merchant may ask for, by name in errors ("you cannot capture ...").
MERCHANT_ACTIONS = (Action.CONFIRM, Action.CAPTURE, Action.CANCEL, Action.REFUND)


def sources(action: Action) -> tuple[str, ...]:
    """The statuses `action` may start from (for a conditional UPDATE's WHERE)."""
    return tuple(TRANSITIONS[action])


def move(intent_id: str, status: str, action: Action) -> IntentStatus:
    """The status after `action`, or the merchant's 400 `payment_intent_unexpected_state`."""
    target = TRANSITIONS[action].get(IntentStatus(status))
    if target is None:
        raise unexpected_state(intent_id, status, action)
    return target


def unexpected_state(intent_id: str, status: str, action: str, pending: str = "") -> Exception:
    why = f"a {pending} is in progress" if pending else f"its status is {status}"
    return FailedPrecondition(
        f"you cannot {action} payment_intent {intent_id!r}: {why}",
        reason="payment_intent_unexpected_state",
        metadata={"status": str(status), **({"pending": pending} if pending else {})},
    )


class RefundStatus(StrEnum):
    PENDING = "pending"  # reserved; at the PSP or its outcome not yet known
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the PSP refused it, or provably never got it: the amount is free again


class Pending(StrEnum):
    """A PSP operation on an intent that went out and whose outcome is not recorded yet."""

    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
