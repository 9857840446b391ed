"""Slot-finding benchmark: ``find_slot`` against a naive scan, for N booked calls.

A therapist in Europe/Berlin is available Monday to Friday 08:00-18:00. The N booked
calls fill the earliest free 5-minute slots from ``now`` on, so the answer lies
after all of them: the realistic worst case, where a search must skip past every
booked call. ``find_slot`` gets the calls as a ``BookedCalls`` built once (its build
time is shown apart); the naive baseline steps 5 minutes at a time and checks every
booked call per candidate, as a first implementation would.

A second table shows the adversarial case for ``find_slot``: every other slot
booked and a 10-minute call, so no two booked calls merge into one block and every
gap is too short; the search then jumps once per booked call.

Each figure is the median over the repeats of the mean time per call of a repeat.

    .venv/bin/python bench/bench_slots.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from domain.availability import Availability, parse_availability
from domain.slots import BookedCalls, NoSlot, Slot, find_slot

ZONE = ZoneInfo("Europe/Berlin")
SLOT = timedelta(minutes=5)
# Monday 23 November 2026, before office hours; 10,000 calls reach into March 2027.
NOW = datetime(2026, 11, 23, 7, 0, tzinfo=ZONE)
HORIZON = timedelta(weeks=52)
AVAILABILITY = parse_availability(
    {day: [{"start": "08:00", "end": "18:00"}] for day in ("monday", "tuesday", "wednesday", "thursday", "friday")}
)
SIZES = (0, 10, 100, 1000, 10000)
NAIVE_UP_TO = 1000


def office_slots(count: int, every: int = 1) -> list[tuple[datetime, datetime]]:
    """The first ``count`` calls on every ``every``-th free 5-minute slot from NOW on."""
    calls: list[tuple[datetime, datetime]] = []
    day = NOW.date()
    index = 0
    while len(calls) < count:
        if day.weekday() < 5:
            for minute in range(8 * 60, 18 * 60, 5):
                if index % every == 0 and len(calls) < count:
                    start = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=ZONE)
                    calls.append((start.astimezone(UTC), (start + SLOT).astimezone(UTC)))
                index += 1
        day += timedelta(days=1)
    return calls


def naive_find_slot(
    availability: Availability,
    now: datetime,
    booked: list[tuple[datetime, datetime]],
    duration: timedelta,
    horizon: timedelta,
) -> datetime | None:
    """Step 5 minutes at a time from now; check the availability and every booked call."""
    start = now.astimezone(UTC).replace(second=0, microsecond=0)
    start += timedelta(minutes=-start.minute % 5)
    while start <= now + horizon:
        end = start + duration
        local, local_end = start.astimezone(ZONE), end.astimezone(ZONE)
        wall = local.hour * 60 + local.minute
        inside = local.utcoffset() == local_end.utcoffset() and any(
            r.start <= wall and wall + duration // timedelta(minutes=1) <= r.end
            for r in availability.on(local.weekday())
        )
        if inside and not any(b_start < end and start < b_end for b_start, b_end in booked):
            return start
        start += SLOT
    return None


def per_call_us(run: Callable[[], object], repeats: int, budget_s: float = 0.2) -> float:
    """Median over ``repeats`` of the mean µs per call, with as many calls per repeat as
    fit in about ``budget_s`` (at least one)."""
    started = time.perf_counter_ns()
    run()
    single = max(time.perf_counter_ns() - started, 1)
    loops = max(1, int(budget_s * 1e9 / single))
    samples = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(loops):
            run()
        samples.append((time.perf_counter_ns() - started) / loops / 1000)
    return statistics.median(samples)


def table(title: str, every: int, duration: timedelta, repeats: int) -> None:
    print(f"\n{title}\n")
    print(
        "| N booked | slot found (Berlin) | BookedCalls.of µs (once) | find_slot µs/call | naive µs/call | speed-up |"
    )
    print("|---:|---|---:|---:|---:|---:|")
    for size in SIZES:
        calls = office_slots(size, every)
        started = time.perf_counter_ns()
        booked = BookedCalls.of(calls)
        build_us = (time.perf_counter_ns() - started) / 1000

        def fast(booked: BookedCalls = booked) -> Slot | NoSlot:
            return find_slot(AVAILABILITY, ZONE, NOW, booked=booked, duration=duration, horizon=HORIZON)

        result = fast()
        assert isinstance(result, Slot), result
        fast_us = per_call_us(fast, repeats)
        naive_text = ratio_text = "-"
        if size <= NAIVE_UP_TO:

            def naive(calls: list[tuple[datetime, datetime]] = calls) -> datetime | None:
                return naive_find_slot(AVAILABILITY, NOW, calls, duration, HORIZON)

            assert naive() == result.start, (naive(), result)
            naive_us = per_call_us(naive, repeats)
            naive_text, ratio_text = f"{naive_us:,.1f}", f"{naive_us / fast_us:,.0f}x"
        found = result.start.astimezone(ZONE).strftime("%a %Y-%m-%d %H:%M")
        print(f"| {size:,} | {found} | {build_us:,.0f} | {fast_us:,.1f} | {naive_text} | {ratio_text} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    table(
        "Booked calls fill the earliest slots back to back; 5-minute call (the realistic worst case)",
        every=1,
        duration=SLOT,
        repeats=args.repeats,
    )
    table(
        "Every other slot booked; 10-minute call (adversarial: one jump per booked call)",
        every=2,
        duration=2 * SLOT,
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
