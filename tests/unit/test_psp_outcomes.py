"""Every place a PSP's answer is read, read into one taxonomy (issue 29): only an issuer's
decline is a decline; a PSP that failed, a card reference it does not know and a card it would
not hold are not, and each names the PSP that answered. Pure readings, answer by answer: the
connectors' error answers, the vault's errors, the breaker's verdict, and rebill's reading of
the gateway's intent."""

from __future__ import annotations

import grpc
import pytest

from gateway_svc.domain.outcomes import (
    CardNotProvisioned,
    CardUnknownAtPsp,
    NotProcessed,
    PspDeclined,
    PspRefused,
)
from gateway_svc.psp.breaker import Outcome
from gateway_svc.psp.connectors import sandbox_error, stripe_error
from gateway_svc.psp.routing import judged
from gateway_svc.psp.vault import VaultUnavailable, vault_outcome
from paymesh.gateway.v1 import gateway_pb2
from paymesh.platform.problems import InvalidArgument
from rebill_svc.charging import outcome_of
from rebill_svc.domain.dunning import Outcome as Renewal


def error(**fields) -> dict:
    return {"error": fields}


@pytest.mark.parametrize(
    ("operation", "status", "body", "expected"),
    [
        (
            "authorize",
            402,
            error(code="card_declined", decline_code="insufficient_funds", type="soft"),
            ("declined", "insufficient_funds", "soft"),
        ),
        ("authorize", 402, error(code="card_declined"), ("declined", "generic_decline", "hard")),
        ("authorize", 404, error(code="resource_missing", param="card"), ("unknown_card",)),
        # A charge it does not know is not our card: a refusal of that capture.
        ("capture", 404, error(code="resource_missing", param="charge"), ("refused",)),
        ("authorize", 400, error(code="invalid_request"), ("refused",)),
    ],
)
def test_the_sandboxs_answers(operation, status, body, expected):
    assert reading(sandbox_error(operation, status, body), "sandbox") == expected


@pytest.mark.parametrize(
    ("operation", "status", "body", "expected"),
    [
        (
            "authorize",
            402,
            error(code="card_declined", decline_code="insufficient_funds", type="card_error"),
            ("declined", "insufficient_funds", "soft"),
        ),
        (
            "authorize",
            402,
            error(code="card_declined", decline_code="stolen_card", type="card_error"),
            ("declined", "stolen_card", "hard"),
        ),
        # Stripe's own words for a PaymentMethod it does not hold.
        (
            "authorize",
            400,
            error(
                code="resource_missing",
                param="payment_method",
                type="invalid_request_error",
                message="No such PaymentMethod: 'pm_123'",
            ),
            ("unknown_card",),
        ),
        # localstripe's: a bare 404 (the payment method is the only object a charge names).
        (
            "authorize",
            404,
            error(message="Not Found", type="invalid_request_error"),
            ("unknown_card",),
        ),
        ("capture", 404, error(message="Not Found", type="invalid_request_error"), ("refused",)),
        (
            "authorize",
            400,
            error(message="Bad request", type="invalid_request_error"),
            ("refused",),
        ),
    ],
)
def test_stripes_answers(operation, status, body, expected):
    assert reading(stripe_error(operation, status, body), "stripe") == expected


def reading(outcome: Exception, psp: str) -> tuple:
    if isinstance(outcome, PspDeclined):
        assert outcome.psp == psp  # a decline names the PSP that made it
        return ("declined", outcome.decline_code, outcome.kind)
    if isinstance(outcome, CardUnknownAtPsp):
        assert outcome.psp == psp
        return ("unknown_card",)
    assert isinstance(outcome, PspRefused), outcome
    return ("refused",)


REFUSED = grpc.StatusCode.FAILED_PRECONDITION


def test_a_card_the_psp_refused_to_create_is_a_decline_only_when_it_said_card_declined():
    declined = vault_outcome(
        REFUSED,
        "psp_rejected_card",
        {"psp": "stripe", "psp_code": "card_declined", "decline_code": "fraudulent"},
        "stripe",
    )
    wants_a_cvc = vault_outcome(
        REFUSED, "psp_rejected_card", {"psp": "stripe", "psp_code": "card_rejected"}, "stripe"
    )

    assert isinstance(declined, PspDeclined)
    assert (declined.decline_code, declined.kind, declined.psp) == ("fraudulent", "hard", "stripe")
    assert isinstance(wants_a_cvc, CardNotProvisioned)
    assert wants_a_cvc.psp == "stripe"
    assert wants_a_cvc.as_payment_error()["code"] == "card_reprovision_failed"
    assert wants_a_cvc.as_payment_error()["type"] == "soft"


def test_the_vaults_other_errors():
    unavailable = grpc.StatusCode.UNAVAILABLE
    detached = vault_outcome(grpc.StatusCode.NOT_FOUND, "payment_method_detached", {}, "sandbox")
    assert isinstance(detached, PspDeclined) and detached.kind == "hard"
    missing = vault_outcome(grpc.StatusCode.NOT_FOUND, "resource_missing", {}, "sandbox")
    assert isinstance(missing, InvalidArgument)
    assert isinstance(vault_outcome(unavailable, "psp_unavailable", {}, "sandbox"), NotProcessed)
    assert isinstance(vault_outcome(unavailable, "", {}, "sandbox"), VaultUnavailable)


def test_only_the_psps_own_failures_count_against_its_breaker():
    assert judged(CardUnknownAtPsp("sandbox")) is Outcome.SUCCESS  # it answered
    assert judged(CardNotProvisioned("stripe", "card_rejected")) is Outcome.SUCCESS
    assert judged(PspDeclined("generic_decline", "declined", "hard")) is Outcome.SUCCESS
    assert judged(NotProcessed("sandbox: http_503")) is Outcome.FAILURE


def intent(status: str, **error: str) -> gateway_pb2.PaymentIntent:
    return gateway_pb2.PaymentIntent(
        id="pi_1", status=status, last_payment_error=gateway_pb2.PaymentError(**error)
    )


def test_rebill_counts_only_an_issuers_decline():
    hard = outcome_of(intent("requires_payment_method", code="card_declined", type="hard"))
    soft = outcome_of(
        intent(
            "requires_payment_method",
            code="card_declined",
            decline_code="insufficient_funds",
            type="soft",
        )
    )
    lost = outcome_of(
        intent("requires_payment_method", code="card_reprovision_failed", type="soft")
    )

    assert hard.outcome == Renewal.DECLINED_HARD
    assert (soft.outcome, soft.decline_code) == (Renewal.DECLINED_SOFT, "insufficient_funds")
    assert (lost.outcome, lost.decline_code) == (Renewal.NOT_CHARGED, "card_reprovision_failed")
    assert outcome_of(intent("processing")).outcome == Renewal.UNKNOWN
