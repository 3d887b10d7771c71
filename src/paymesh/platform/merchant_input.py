"""Rules on what merchants send that several services share (amounts, currencies, metadata,
ids), as plain functions returning the violations; no I/O, so domains may use them."""

from __future__ import annotations

import re

from paymesh.platform.masking import contains_card_number, redact_pans
from paymesh.platform.problems import FieldViolation

MAX_AMOUNT = 99_999_999
# Ids are a prefix and random letters and digits; 40 characters at most (their columns). The
# same shape as paymesh.platform.wire.require_id's (domains may not import the wire kit).
_ID_SHAPE = re.compile(r"[A-Za-z0-9_]{1,40}")
METADATA_MAX_PAIRS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 50, 40, 500

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


# ISO 4217 minor units (decimals) of the codes above that have other than 2. An amount is
# always in the currency's smallest unit: jpy 500 is 500 yen, bhd 1500 is 1.500 dinars.
_MINOR_UNITS = {
    **dict.fromkeys("bif clp djf gnf isk jpy kmf krw pyg rwf ugx vnd vuv xaf xof xpf".split(), 0),
    **dict.fromkeys("bhd iqd jod kwd lyd omr tnd".split(), 3),
}


def minor_units(currency: str) -> int:
    """How many decimals the currency's smallest unit is (ISO 4217)."""
    return _MINOR_UNITS.get(currency, 2)


def amount_violation(field: str, amount: int, currency: str = "") -> FieldViolation | None:
    """An amount to charge: 1 to 99,999,999 of the currency's smallest unit (as Stripe's eight
    digits), and, for a currency of 3 decimals, a whole number of hundredths: card networks
    settle those to 2 decimals, so Stripe takes them only with a last digit of 0."""
    if not 1 <= amount <= MAX_AMOUNT:
        return FieldViolation(
            field, "invalid_amount", f"{field} must be an integer from 1 to {MAX_AMOUNT:,}"
        )
    if minor_units(currency) == 3 and amount % 10:
        return FieldViolation(
            field,
            "invalid_amount",
            f"{currency} has 3 decimals ({field} 1500 is 1.500 {currency}) and card networks "
            f"settle it to 2: {field} must end in 0",
        )
    return None


def currency_violation(currency: str) -> FieldViolation | None:
    if currency not in CURRENCIES:
        return FieldViolation("currency", "invalid_currency", "a lowercase ISO-4217 code, e.g. usd")
    return None


def id_shaped(value: str, prefix: str) -> bool:
    """Whether `value` could be one of our ids with `prefix`: anything else cannot exist."""
    return value.startswith(prefix) and _ID_SHAPE.fullmatch(value) is not None


def payment_method_violation(payment_method: str) -> FieldViolation | None:
    """A payment method, when given, is a vault token."""
    if payment_method and not id_shaped(payment_method, "pm_"):
        return FieldViolation("payment_method", "invalid_payment_method", "a pm_… token")
    return None


def card_number_violation(field: str, text: str) -> FieldViolation | None:
    """A card number in free text (a description, a note, a name) would be stored and echoed
    in clear: refused, naming the field, never the number. A 12-19 digit reference that
    happens to pass Luhn is refused too: nothing tells it from a card number."""
    if contains_card_number(text):
        return FieldViolation(
            redact_pans(field),
            "card_number_in_free_text",
            f"{redact_pans(field)} holds a card number: send cards to POST /v1/payment_methods"
            " only, never in free text",
        )
    return None


def metadata_violations(metadata: dict[str, str]) -> list[FieldViolation]:
    if len(metadata) > METADATA_MAX_PAIRS:
        return [FieldViolation("metadata", "too_many_keys", f"at most {METADATA_MAX_PAIRS} pairs")]
    violations = []
    for key, value in metadata.items():
        # A key is checked whole: cut to its first 40 characters, a card number in it
        # might no longer pass Luhn, and most of it would be echoed.
        found = card_number_violation(f"metadata.{key}", key) or card_number_violation(
            f"metadata.{key[:METADATA_KEY_MAX]}", value
        )
        if found is None and (
            not 1 <= len(key) <= METADATA_KEY_MAX or len(value) > METADATA_VALUE_MAX
        ):
            found = FieldViolation(
                f"metadata.{key[:METADATA_KEY_MAX]}",
                "invalid_metadata",
                f"keys 1-{METADATA_KEY_MAX} characters, values at most {METADATA_VALUE_MAX}",
            )
        if found:
            violations.append(found)
    return violations
