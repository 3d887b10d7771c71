"""Secrets show their last 4 characters only; PAN-shaped digits never reach a log line."""

from __future__ import annotations

from paymesh.platform.masking import last4, mask_event


def test_a_secret_shows_only_its_last_four_characters():
    assert last4("sk_test_51HxYzAbCd9876") == "…9876"
    assert last4("") == ""


def test_log_events_mask_secret_keys_and_pan_shaped_digits():
    event = {
        "event": "charge for card 4242 4242 4242 4242 failed",
        "authorization": "Bearer sk_live_abcdef123456",
        "note": "4000-0000-0000-0002",
        "amount": 1999,
    }

    masked = mask_event(None, "info", event)

    assert "4242 4242" not in masked["event"]
    assert masked["authorization"] == "…3456"
    assert masked["note"] == "[redacted]"
    assert masked["amount"] == 1999
