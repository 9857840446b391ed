"""The delivery loop under a send rate (COMM_SMTP_RATE_LIMIT), against the fake
store (whose schedule keeps real time, as the database's clock does) and recording
mailers: what is claimed, when each email goes, what a stop leaves."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from domain.rate_limit import Rate
from domain.retry import RetryPolicy
from streams.delivery.loop import RATE_HORIZON, DeliveryService
from streams.delivery.mime import RawMessage
from streams.delivery.pacing import LATE
from streams.delivery.store import RateLimitedClaim
from streams.delivery.wakeups import Wakeups
from streams.settings import Settings
from tests.fakes import (
    WAIT,
    FakeClock,
    FakeDeliveryStore,
    RecordingMailer,
    RecordingMetrics,
    claimed_email,
    recipient,
    recording_mailers,
)

POLICY = RetryPolicy(max_attempts=3, base=timedelta(seconds=30), cap=timedelta(hours=1))
# asyncio may run a timer this much before its time (its clock's resolution), and
# the test reads the clock a moment after the send.
EARLY = timedelta(milliseconds=2)


def queue(count: int) -> FakeDeliveryStore:
    return FakeDeliveryStore(claimed_email(i) for i in range(1, count + 1))


def delivery(
    store: FakeDeliveryStore, mailers: Sequence[RecordingMailer], rate: str | None, **values: str
) -> tuple[DeliveryService, RecordingMetrics]:
    environ = {
        "COMM_DELIVERY_BATCH_SIZE": "50",
        "COMM_DELIVERY_LEASE": "60s",
        "COMM_POLL_INTERVAL": "10ms",
        **({"COMM_SMTP_RATE_LIMIT": rate} if rate else {}),
        **values,
    }
    metrics = RecordingMetrics()
    service = DeliveryService(
        Settings.from_environ(environ), store, mailers, POLICY, Wakeups(), FakeClock(), metrics=metrics
    )
    return service, metrics


@asynccontextmanager
async def running(service: DeliveryService) -> AsyncIterator[DeliveryService]:
    await service.start()
    try:
        yield service
    finally:
        await asyncio.wait_for(service.stop(), WAIT)


def timed(mailers: Sequence[RecordingMailer], accepting: float = 0.0) -> list[datetime]:
    """When each message reached the (fake) server, which then takes ``accepting``
    seconds to accept it."""
    arrivals: list[datetime] = []

    async def arrived(message: RawMessage) -> None:
        arrivals.append(datetime.now(UTC))
        await asyncio.sleep(accepting)

    for mailer in mailers:
        mailer.during_send = arrived
    return arrivals


def at_their_slots(arrivals: list[datetime], store: FakeDeliveryStore) -> bool:
    """Every email went at or after a slot of its own: the n-th send no earlier than
    the n-th slot handed out (slots are an interval apart, domain.rate_limit)."""
    slots = sorted(store.reserved)
    return len(slots) >= len(arrivals) and all(
        sent >= slot - EARLY for sent, slot in zip(sorted(arrivals), slots, strict=False)
    )


async def test_only_what_the_rate_lets_go_within_the_horizon_is_claimed_and_each_goes_at_its_slot() -> None:
    store, mailers = queue(50), recording_mailers(1)
    arrivals = timed(mailers)
    service, metrics = delivery(store, mailers, "40/s")  # 25 ms apart: 40 within the 1 s horizon
    async with running(service):
        await store.until(lambda: len(store.sent) == 50, "50 emails sent")
    assert timedelta(seconds=1) == RATE_HORIZON
    claims = [ids for ids in store.claims if ids]
    assert claims[0] == list(range(1, 41))  # the most urgent 40; the other 10 stayed in the queue
    assert {id for ids in claims for id in ids} == set(range(1, 51))
    assert mailers[0].log.recipients == [recipient(i) for i in range(1, 51)]  # each once, in priority order
    assert at_their_slots(arrivals, store)
    assert arrivals[-1] >= store.reserved[0] + 49 * timedelta(milliseconds=25) - EARLY
    assert store.failures == []
    assert sum(metrics.durations["rate_wait"]) > 1.0  # about 49 intervals waited


async def test_several_connections_take_their_turns_on_one_schedule() -> None:
    store, mailers = queue(20), recording_mailers(3)
    # Each send outlasts the 25 ms between slots, so the next slot is always taken
    # by another connection than the one still sending (with instant sends, a
    # starved test process could leave every slot to the first connection).
    arrivals = timed(mailers, accepting=0.04)
    service, _ = delivery(store, mailers, "40/s")
    async with running(service):
        await store.until(lambda: len(store.sent) == 20, "20 emails sent")
    assert len({d.connection for d in mailers[0].log.delivered}) > 1  # they took turns
    assert sorted(mailers[0].log.recipients) == sorted(recipient(i) for i in range(1, 21))
    assert at_their_slots(arrivals, store)


async def test_when_other_workers_took_the_horizon_nothing_is_claimed_until_a_slot_is_free() -> None:
    store, mailers = queue(1), recording_mailers(1)
    arrivals = timed(mailers)
    taken_until = datetime.now(UTC) + timedelta(milliseconds=900)  # another worker's last slot
    store.last_slot = taken_until
    service, metrics = delivery(store, mailers, "5/s")
    async with running(service):
        await store.until(lambda: len(store.sent) == 1, "the email sent")
    assert arrivals[0] >= taken_until + timedelta(milliseconds=200) - EARLY  # one interval after it
    assert at_their_slots(arrivals, store)
    assert store.rate_claims >= 2  # asked, told to wait, asked again
    assert store.claim_attempts == 1  # the queue was looked at only once a slot was free
    assert metrics.durations["rate_wait"]


async def test_a_stop_while_waiting_for_a_slot_sends_no_more_and_gives_the_claims_back_untouched() -> None:
    store, mailers = queue(3), recording_mailers(1)
    service, _ = delivery(store, mailers, "2/s")  # 500 ms apart: two within the horizon
    await service.start()
    await mailers[0].log.until(lambda: len(mailers[0].log.delivered) == 1, "the first email sent")
    stopping = time.monotonic()
    await asyncio.wait_for(service.stop(), WAIT)
    assert time.monotonic() - stopping < 0.4  # did not wait for the slot
    assert store.claims[0] == [1, 2]
    assert store.sent_ids == [1]
    assert store.released == [[2]]  # its slot is lost, not the email
    assert store.failures == [] and store.status(3) == "queued"


async def test_without_a_rate_the_schedule_is_never_asked() -> None:
    store, mailers = queue(5), recording_mailers(1)
    service, metrics = delivery(store, mailers, None)
    async with running(service):
        await store.until(lambda: len(store.sent) == 5, "5 emails sent")
    assert store.rate_claims == 0 and store.last_slot is None
    assert "rate_wait" not in metrics.durations


async def test_a_held_up_process_gives_its_missed_slots_up_instead_of_crowding_the_next() -> None:
    store, mailers = queue(8), recording_mailers(1)
    started: list[float] = []

    async def held_up_on_the_third(message: RawMessage) -> None:
        started.append(time.monotonic())
        if message.recipients == (recipient(3),):
            time.sleep(0.12)  # blocks the event loop, as a starved process is held up

    mailers[0].during_send = held_up_on_the_third
    service, _ = delivery(store, mailers, "20/s")  # 50 ms apart
    async with running(service):
        await store.until(lambda: len(store.sent) == 8, "8 emails sent")
    # The slots at 150 and 200 ms passed while it was held up: not sent at late.
    assert min(b - a for a, b in itertools.pairwise(started)) >= 0.05 - LATE
    assert started[3] - started[2] >= 0.12  # after the hold-up, at a slot still to come
    assert store.sent_ids == list(range(1, 9)) and store.failures == []
    assert [ids for ids in store.released if ids]  # the emails left without a slot went back, untouched


class LateStore(FakeDeliveryStore):
    """Every claim's slots have passed by the time the loop sees them (a host held
    up all the time)."""

    async def claim_at_rate(
        self, now: datetime, limit: int, lease: timedelta, contact_interval: timedelta, rate: Rate, horizon: timedelta
    ) -> RateLimitedClaim:
        claim = await super().claim_at_rate(now, limit, lease, contact_interval, rate, horizon)
        return RateLimitedClaim(claim.emails, [at - 1.0 for at in claim.send_at], claim.until_free)


async def test_a_host_held_up_every_time_still_delivers_one_email_per_claim() -> None:
    store, mailers = LateStore(claimed_email(i) for i in range(1, 4)), recording_mailers(1)
    service, _ = delivery(store, mailers, "50/s")
    async with running(service):
        await store.until(lambda: len(store.sent) == 3, "all 3 sent", timeout=WAIT)
    claims = [ids for ids in store.claims if ids]
    # A claim sends nothing (every slot missed), the next its first email, late.
    assert claims[:2] == [[1, 2, 3], [1, 2, 3]]
    assert store.released[0] == [1, 2, 3] and store.released[1] == [2, 3]
    assert store.failures == []
