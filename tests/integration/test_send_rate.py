"""The service-wide send schedule (streams/persistence/send_rate.py) on the real
databases: reservers in separate connections take turns on one row, a claim under
the rate takes only what the rate lets go, and a restart goes on from the stored
slot."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from domain.rate_limit import parse_rate
from streams.delivery.store import SqlDeliveryStore
from streams.persistence import send_rate
from streams.persistence.db import Database
from streams.persistence.models import Email, EmailStatus
from tests.integration.test_persistence import CHANNELS, NOW, WEEK, command, store

HORIZON = timedelta(seconds=1)
LEASE = timedelta(seconds=60)


def test_concurrent_reservers_never_get_slots_closer_than_the_interval(database: Database) -> None:
    rate = parse_rate("50/s")  # 20 ms apart
    wanted, reservers = 120, 3
    start = threading.Barrier(reservers)
    lock = threading.Lock()
    got: list[tuple[int, send_rate.SendSlots]] = []
    errors: list[BaseException] = []

    def reserve(who: int) -> None:
        clock = send_rate.DatabaseClock()  # each a worker of its own
        try:
            start.wait()
            while True:
                with lock:
                    if sum(len(s.slots) for _, s in got) >= wanted:
                        return
                slots = database.transaction(send_rate.reserve_slots, 1 + who, rate, HORIZON, clock)
                with lock:
                    got.append((who, slots))
                if not slots.slots:  # the horizon is taken: as the delivery loop does
                    time.sleep(slots.until_free.total_seconds())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reserve, args=(n,)) for n in range(reservers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors and not any(t.is_alive() for t in threads)

    slots = sorted(slot for _, s in got for slot in s.slots)
    assert len(slots) >= wanted
    assert {who for who, s in got if s.slots} == set(range(reservers))  # all of them took turns
    assert min(b - a for a, b in itertools.pairwise(slots)) >= rate.interval
    for _, reservation in got:  # each slot after its reservation, within its horizon
        start_at = reservation.reserved_at + send_rate.LEAD
        assert all(start_at <= slot < start_at + HORIZON for slot in reservation.slots)
    assert any(not s.slots and s.until_free > timedelta(0) for _, s in got)  # and were told to wait


async def test_a_claim_under_the_rate_takes_the_most_urgent_it_lets_go_and_leaves_the_rest_queued(
    database: Database,
) -> None:
    for n in range(8):
        store(database, command(f"c{n}", therapist_id=n + 1, requests=((n + 1, f"2026-01-0{n + 1}T10:00:00+00:00"),)))
    rate = parse_rate("2/s")  # 500 ms apart: two within the 1 s horizon
    first = SqlDeliveryStore(database, "w1", CHANNELS, retry_delay=timedelta(seconds=1))
    second = SqlDeliveryStore(database, "w2", CHANNELS, retry_delay=timedelta(seconds=1))

    claim = await first.claim_at_rate(NOW, 50, LEASE, WEEK, rate, HORIZON)
    assert [e.email_key for e in claim.emails] == ["c0", "c1"]  # the most urgent (oldest registration)
    assert claim.send_at[0] - time.monotonic() <= send_rate.LEAD.total_seconds()  # at once
    assert claim.send_at[1] - claim.send_at[0] == pytest.approx(0.5, abs=1e-6)
    assert claim.until_free == 0.0
    # The other worker, a moment later: the slot at 1 s has come within its horizon.
    other = await second.claim_at_rate(NOW, 50, LEASE, WEEK, rate, HORIZON)
    assert [e.email_key for e in other.emails] == ["c2"]
    # An interval on (a slot 0.5 s or less after the first would be a second claim of
    # the same slots). Each claim turns the database's slot times into this process's
    # monotonic clock when its answer arrives, so each carries the round trip's error:
    # on a loaded machine tens of milliseconds.
    assert other.send_at[0] - claim.send_at[0] >= 1.0 - 0.1

    held = await second.claim_at_rate(NOW, 50, LEASE, WEEK, rate, HORIZON)
    assert held.emails == [] and 0.0 < held.until_free <= 0.5
    queued = database.transaction(
        lambda s: [
            e.email_key
            for e in s.scalars(select(Email).order_by(Email.id))
            if e.status == EmailStatus.QUEUED and e.claimed_by is None
        ]
    )
    assert queued == ["c3", "c4", "c5", "c6", "c7"]  # untouched, in the queue

    time.sleep(held.until_free)  # what the loop waits, told by the store
    later = await second.claim_at_rate(NOW, 1, LEASE, WEEK, rate, HORIZON)
    assert [e.email_key for e in later.emails] == ["c3"]  # the next most urgent, one interval on
    # Within 0.1 s, as above: both slot times carry their claim's round trip (a
    # fresh-clone CI run saw 1.489 s).
    assert later.send_at[0] - claim.send_at[0] >= 1.5 - 0.1
    assert later.send_at[0] - time.monotonic() <= (HORIZON + send_rate.LEAD).total_seconds()


def test_a_restarted_worker_goes_on_from_the_stored_slot_without_a_burst(database: Database) -> None:
    rate = parse_rate("5/s")
    before = database.transaction(send_rate.reserve_slots, 3, rate, HORIZON, send_rate.DatabaseClock())
    database.dispose()
    restarted = Database(database.url.render_as_string(hide_password=False))
    try:
        after = restarted.transaction(send_rate.reserve_slots, 3, rate, HORIZON, send_rate.DatabaseClock())
    finally:
        restarted.dispose()
    assert len(before.slots) == 3
    assert after.slots[0] == before.slots[-1] + rate.interval  # not "now"
    assert [b - a for a, b in itertools.pairwise(after.slots)] == [rate.interval] * 2
