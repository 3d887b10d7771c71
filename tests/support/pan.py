"""Card-number-shaped values: what a leak scan looks for, and what a fuzzer sends.

A PAN-shaped value is 12 to 19 digits, possibly grouped with single spaces or dashes, that
passes the Luhn check. Unicode decimal digits count as digits (a full-width card number is
still a card number), and percent-encoded text is read decoded too.
"""

from __future__ import annotations

import re
import urllib.parse

from hypothesis import strategies as st

# A run of digits with single separators between them, not inside a longer run of digits.
_RUN = re.compile(r"(?<!\d)\d(?:[ \-]?\d)*(?!\d)")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def digit_runs(text: str) -> list[str]:
    """Every run of digits (separators dropped, ASCII digits) in the text and in its
    percent-decoded form."""
    forms = {text}
    if "%" in text:
        forms.add(urllib.parse.unquote(text, errors="replace"))
    runs = []
    for form in forms:
        for match in _RUN.finditer(form):
            runs.append("".join(str(int(ch)) for ch in match.group() if ch.isdecimal()))
    return runs


def pan_shaped(digits: str) -> bool:
    """12 to 19 digits passing Luhn; not a run of one digit and not starting with 0 (no card
    number does: "000000000000" passes Luhn but is padding, not a card)."""
    return 12 <= len(digits) <= 19 and digits[0] != "0" and len(set(digits)) > 1 and luhn_ok(digits)


def pans_in(text: str) -> set[str]:
    """The PAN-shaped values of a text, as plain ASCII digits."""
    return {run for run in digit_runs(text) if pan_shaped(run)}


def leaked(sent: set[str], text: str) -> set[str]:
    """Which of the card numbers a caller sent appear in `text`, in any grouping, also inside a
    longer run of digits."""
    runs = digit_runs(text)
    return {pan for pan in sent if any(pan in run for run in runs)}


def with_check_digit(body: str) -> str:
    """`body` followed by the digit that makes it pass Luhn."""
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


TEST_CARDS = ["4242424242424242", "4000000000000002", "5555555555554444", "378282246310005"]


@st.composite
def pans(draw) -> str:
    """A Luhn-valid card number as a caller might write it: a test card or a random one,
    plain, grouped in fours with spaces or dashes, or in full-width digits."""
    number = draw(
        st.one_of(
            st.sampled_from(TEST_CARDS),
            st.integers(11, 18).flatmap(
                lambda n: st.text("0123456789", min_size=n, max_size=n).map(with_check_digit)
            ),
        )
    )
    style = draw(st.sampled_from(["plain", "spaces", "dashes", "fullwidth"]))
    if style in ("spaces", "dashes"):
        sep = " " if style == "spaces" else "-"
        return sep.join(number[i : i + 4] for i in range(0, len(number), 4))
    if style == "fullwidth":
        return "".join(chr(0xFF10 + int(d)) for d in number)
    return number
