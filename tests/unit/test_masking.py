"""Secrets show their last 4 characters only; card numbers never reach a log line, and
nothing else is masked, so that logs can still be searched by request id."""

from __future__ import annotations

import pytest

from paymesh.platform.masking import last4, mask_event, redact_pans


def test_a_secret_shows_only_its_last_four_characters():
    assert last4("sk_test_51HxYzAbCd9876") == "…9876"
    assert last4("") == ""


def test_log_events_mask_secret_keys_and_card_numbers_at_any_depth():
    event = {
        "event": "charge for card 4242 4242 4242 4242 failed",
        "authorization": "Bearer sk_live_abcdef123456",
        "note": "4000-0000-0000-0002",
        "nested": {"cards": ["5555555555554444"]},
        "amount": 1999,
    }

    masked = mask_event(None, "info", event)

    assert masked["event"] == "charge for card ************4242 failed"
    assert masked["authorization"] == "…3456"
    assert masked["note"] == "************0002"
    assert masked["nested"] == {"cards": ["************4444"]}
    assert masked["amount"] == 1999


@pytest.mark.parametrize(
    "text",
    [
        "c0a8f7e2-46f5-ac72-7696c868390f",  # a request id
        "4242424242424241",  # fails Luhn
        "12345678901",  # too short for a card number
        "42424242424242424242",  # 20 digits
        "1764032400",  # a timestamp
        "000000000000",  # padding passes Luhn, but no card number starts with 0
        "2222222222222222",  # one digit repeated
    ],
)
def test_what_is_not_a_card_number_is_left_alone(text):
    assert redact_pans(text) == text


@pytest.mark.parametrize(
    "text, masked",
    [
        ("4242424242424242", "************4242"),
        ("id 378282246310005!", "id ***********0005!"),
        ("pi_4000056655665556", "pi_************5556"),
        ("4111-1111-1111-1111", "************1111"),
        ("４２４２４２４２４２４２４２４２", "************4242"),
    ],
)
def test_card_numbers_show_their_last_four_digits(text, masked):
    assert redact_pans(text) == masked
