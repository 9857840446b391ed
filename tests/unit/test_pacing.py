"""Sending at the slots of a claim (streams.delivery.pacing): a slot missed by more
than LATE is given up, never sent at late; a claim after one that sent nothing may
send its first slot late, so that a held-up host still delivers."""

from __future__ import annotations

import pytest

from streams.delivery.pacing import LATE, Slots


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("case", "slots", "now", "next_slot", "missed"),
    [
        ("not yet due: wait for it", [101.0, 101.2], 100.0, 101.0, 0),
        ("due: send", [100.0, 100.2], 100.0, 100.0, 0),
        ("a little late: still send", [100.0, 100.2], 100.0 + LATE * 0.9, 100.0, 0),
        ("too late: the next one instead", [100.0, 100.2], 100.0 + LATE * 1.5, 100.2, 1),
        ("far too late: all given up", [100.0, 100.2, 100.4], 101.0, None, 3),
        ("none at all", [], 100.0, None, 0),
    ],
)
def test_the_next_slot_still_good_to_send_at(
    case: str, slots: list[float], now: float, next_slot: float | None, missed: int
) -> None:
    pacing = Slots(slots, Clock(now))
    assert pacing.next() == next_slot, case
    assert pacing.missed == missed, case


def test_each_slot_is_taken_once_in_order() -> None:
    clock = Clock()
    pacing = Slots([100.0, 100.2, 100.4], clock)
    taken = []
    for at in (100.0, 100.2, 100.4):
        clock.now = at
        slot = pacing.next()
        assert slot is not None
        pacing.take()
        taken.append(slot)
    assert taken == [100.0, 100.2, 100.4] and pacing.next() is None
    assert (pacing.used, pacing.missed, pacing.sent_none) == (3, 0, False)


def test_a_claim_that_missed_every_slot_lets_the_next_send_its_first_late_and_only_that() -> None:
    clock = Clock(105.0)
    missed = Slots([100.0, 100.2], clock)
    assert missed.next() is None and missed.sent_none

    after = Slots([103.0, 103.2, 104.99], clock)
    after.allow_late_first()
    assert after.next() == 103.0  # two seconds late, sent anyway
    after.take()
    assert after.next() == 104.99  # 103.2, too late, is given up; 104.99 is not yet too late
    assert (after.used, after.missed, after.sent_none) == (1, 1, False)
