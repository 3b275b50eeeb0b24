"""When the worker wire polls before blocking: only while polling
catches what it waits for, with tries that back off while they keep missing."""

from __future__ import annotations

from plugwarden.isolation.process.spin import PROBE_EVERY, PROBE_MOST, AdaptiveSpin


def waits_until_try(spin: AdaptiveSpin) -> int:
    """How many waits go by, the last one included, until one polls again."""
    for waits in range(1, 10 * PROBE_MOST):
        if spin.should_spin():
            return waits
    raise AssertionError("the spin never tried polling again")


def test_polls_while_polling_catches() -> None:
    spin = AdaptiveSpin()
    for _ in range(100):
        assert spin.should_spin()
        spin.caught(True)


def test_a_miss_stops_polling_until_a_try() -> None:
    spin = AdaptiveSpin()
    assert spin.should_spin()
    spin.caught(False)
    assert waits_until_try(spin) == PROBE_EVERY


def test_tries_that_keep_missing_come_ever_less_often() -> None:
    spin = AdaptiveSpin()
    spin.should_spin()
    spin.caught(False)
    gaps = []
    for _ in range(8):
        gaps.append(waits_until_try(spin))
        spin.caught(False)
    assert gaps == [PROBE_EVERY * 2**i for i in range(6)] + [PROBE_MOST, PROBE_MOST]


def test_one_catch_polls_again_at_once_and_resets_the_gap() -> None:
    spin = AdaptiveSpin()
    spin.should_spin()
    spin.caught(False)
    for _ in range(4):  # the gap grows to 16 x PROBE_EVERY
        waits_until_try(spin)
        spin.caught(False)
    waits_until_try(spin)
    spin.caught(True)
    assert spin.should_spin()  # polling again, every wait
    spin.caught(False)
    assert waits_until_try(spin) == PROBE_EVERY
