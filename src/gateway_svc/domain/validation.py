"""The payment rules on input, as plain functions: what a new intent may say, and what a
capture or a refund may take. No I/O here; the state machine is in `status`."""

from __future__ import annotations

import re

from paymesh.platform.problems import FailedPrecondition, FieldViolation, InvalidArgument

MAX_AMOUNT = 99_999_999
DESCRIPTION_MAX = 1000
# Ids are a prefix and random letters and digits; 40 characters at most (their columns). The
# same shape as paymesh.platform.wire.require_id's: the domain may not import the wire kit.
_ID_SHAPE = re.compile(r"[A-Za-z0-9_]{1,40}")
METADATA_MAX_PAIRS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 50, 40, 500
CAPTURE_METHODS = ("automatic", "manual")
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")

# ISO 4217 codes in current use.
CURRENCIES = frozenset(
    """aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd btn
    bwp byn bzd cad cdf chf clp cny cop crc cup cve czk djf dkk dop dzd egp ern etb eur fjd fkp
    gbp gel ghs gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr iqd irr isk jmd jod jpy kes kgs
    khr kmf kpw krw kwd kyd kzt lak lbp lkr lrd lsl lyd mad mdl mga mkd mmk mnt mop mru mur mvr
    mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf
    sar sbd scr sdg sek sgd shp sle sll sos srd ssp stn svc syp szl thb tjs tmt tnd top try ttd
    twd tzs uah ugx usd uyu uzs ves vnd vuv wst xaf xcd xof xpf yer zar zmw zwl""".split()
)


def amount_violation(field: str, amount: int) -> FieldViolation | None:
    if not 1 <= amount <= MAX_AMOUNT:
        return FieldViolation(
            field, "invalid_amount", f"{field} must be an integer from 1 to {MAX_AMOUNT:,}"
        )
    return None


def validate_new_intent(
    *,
    amount: int,
    currency: str,
    capture_method: str,
    confirm: bool,
    payment_method: str,
    description: str,
    metadata: dict[str, str],
) -> None:
    violations = [v for v in [amount_violation("amount", amount)] if v]
    if currency not in CURRENCIES:
        violations.append(
            FieldViolation("currency", "invalid_currency", "a lowercase ISO-4217 code, e.g. usd")
        )
    if capture_method not in ("", *CAPTURE_METHODS):
        violations.append(
            FieldViolation("capture_method", "invalid_capture_method", "automatic or manual")
        )
    payment_method_bad = payment_method_violation(payment_method)
    if payment_method_bad:
        violations.append(payment_method_bad)
    if confirm and not payment_method:
        violations.append(
            FieldViolation("payment_method", "missing", "confirm needs a payment_method")
        )
    if len(description) > DESCRIPTION_MAX:
        violations.append(
            FieldViolation(
                "description", "too_long", f"description is at most {DESCRIPTION_MAX} characters"
            )
        )
    violations += metadata_violations(metadata)
    if violations:
        raise InvalidArgument(violations)


def id_shaped(value: str, prefix: str) -> bool:
    """Whether `value` could be one of our ids with `prefix`: anything else cannot exist."""
    return value.startswith(prefix) and _ID_SHAPE.fullmatch(value) is not None


def payment_method_violation(payment_method: str) -> FieldViolation | None:
    """A payment method, when given, is a vault token."""
    if payment_method and not id_shaped(payment_method, "pm_"):
        return FieldViolation("payment_method", "invalid_payment_method", "a pm_… token")
    return None


def metadata_violations(metadata: dict[str, str]) -> list[FieldViolation]:
    if len(metadata) > METADATA_MAX_PAIRS:
        return [FieldViolation("metadata", "too_many_keys", f"at most {METADATA_MAX_PAIRS} pairs")]
    return [
        FieldViolation(
            f"metadata.{key[:METADATA_KEY_MAX]}",
            "invalid_metadata",
            f"keys 1-{METADATA_KEY_MAX} characters, values at most {METADATA_VALUE_MAX}",
        )
        for key, value in metadata.items()
        if not 1 <= len(key) <= METADATA_KEY_MAX or len(value) > METADATA_VALUE_MAX
    ]


def capture_amount(requested: int, capturable: int) -> int:
    """What to capture: all that is capturable unless less was asked for."""
    if requested == 0:
        return capturable
    if not 1 <= requested <= capturable:
        raise InvalidArgument.for_field(
            "amount_to_capture",
            "invalid_amount",
            f"amount_to_capture must be from 1 to the capturable {capturable}",
        )
    return requested


def refund_amount(requested: int, received: int, refunded: int, reason: str) -> int:
    """What to refund: what is left unless less was asked for; never beyond what was captured."""
    left = received - refunded
    violations = []
    if reason and reason not in REFUND_REASONS:
        violations.append(FieldViolation("reason", "invalid_reason", ", ".join(REFUND_REASONS)))
    if requested and not 1 <= requested <= left:
        violations.append(
            FieldViolation("amount", "invalid_amount", f"amount must be from 1 to {left}")
        )
    if violations:
        raise InvalidArgument(violations)
    if left <= 0:
        raise FailedPrecondition(
            "this payment has nothing left to refund", reason="charge_already_refunded"
        )
    return requested or left
