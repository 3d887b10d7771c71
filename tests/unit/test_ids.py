"""Object ids: a prefix, then 24 letters and digits drawn evenly from all 62."""

from __future__ import annotations

import collections
import string

from paymesh.platform.ids import LENGTH, new_id


def test_an_id_is_its_prefix_and_24_letters_and_digits():
    made = new_id("pi_")
    assert made.startswith("pi_")
    assert len(made) == len("pi_") + LENGTH == 27
    assert set(made[3:]) <= set(string.ascii_letters + string.digits)


def test_every_letter_and_digit_is_drawn_about_as_often():
    counts = collections.Counter("".join(new_id("") for _ in range(10_000)))
    assert len(counts) == 62
    expected = 10_000 * LENGTH / 62  # ≈ 3,871; a bias towards the first letters would show
    assert all(abs(seen - expected) < 0.1 * expected for seen in counts.values())


def test_ids_do_not_repeat():
    assert len({new_id("x_") for _ in range(50_000)}) == 50_000
