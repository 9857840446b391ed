"""The delivery loop against a fake store and recording mailers: no database, no
SMTP server, a clock that moves only when the test moves it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

import aiosmtplib
import pytest

from domain.decisions import CONFIRMATION, CONTACT_REQUEST, MANUAL
from domain.delivery_order import priority_of
from domain.retry import RetryPolicy
from streams.delivery.loop import RECORD_GROUP, DeliveryService, Outage
from streams.delivery.mailer import SmtpUnavailable
from streams.delivery.mime import RawMessage
from streams.delivery.wakeups import Wakeups
from streams.settings import Settings
from tests.fakes import (
    ALWAYS_DUE,
    WAIT,
    FakeClock,
    FakeDeliveryStore,
    RecordingMailer,
    StoredEmail,
    claimed_email,
    recipient,
    recording_mailers,
)

POLICY = RetryPolicy(max_attempts=3, base=timedelta(seconds=30), cap=timedelta(hours=1))


def settings(**values: str) -> Settings:
    return Settings.from_environ(
        {
            "COMM_DELIVERY_BATCH_SIZE": "50",
            "COMM_DELIVERY_LEASE": "60s",
            "COMM_POLL_INTERVAL": "10ms",
            "COMM_SMTP_OUTAGE_BACKOFF_MAX": "10ms",
            "COMM_SMTP_OUTAGE_ALERT_AFTER": "5m",
            **values,
        }
    )


def queue(count: int) -> FakeDeliveryStore:
    return FakeDeliveryStore(claimed_email(i) for i in range(1, count + 1))


def delivery(
    store: FakeDeliveryStore,
    mailers: Sequence[RecordingMailer],
    clock: FakeClock,
    *,
    claim_ahead: bool = False,
    **values: str,
) -> DeliveryService:
    return DeliveryService(settings(**values), store, mailers, POLICY, Wakeups(), clock, claim_ahead=claim_ahead)


@asynccontextmanager
async def running(service: DeliveryService) -> AsyncIterator[DeliveryService]:
    await service.start()
    try:
        yield service
    finally:
        await asyncio.wait_for(service.stop(), WAIT)


async def test_claimed_emails_go_out_in_order_and_are_recorded_sent_in_groups() -> None:
    store, [mailer], clock = queue(20), recording_mailers(1), FakeClock()
    async with running(delivery(store, [mailer], clock)) as service:
        await store.until(lambda: len(store.sent) == 20, "20 emails recorded as sent")
    assert mailer.log.recipients == [recipient(i) for i in range(1, 21)]  # one connection: the claim's order
    assert store.sent == [(i, clock.now) for i in range(1, 21)]
    assert [len(group) for group in store.sent_groups] == [RECORD_GROUP, RECORD_GROUP, 20 - 2 * RECORD_GROUP]
    assert store.claims[0] == list(range(1, 21))
    assert store.released == [] and store.failures == []
    assert service.sent == 20


async def test_a_failed_attempt_is_recorded_temporary_or_permanent_and_the_others_still_go() -> None:
    store, [mailer], clock = queue(4), recording_mailers(1), FakeClock()
    mailer.fail(recipient(2), aiosmtplib.SMTPResponseException(450, "4.2.1 mailbox busy, try later"))
    mailer.fail(recipient(3), aiosmtplib.SMTPResponseException(550, "5.1.1 no such user"))
    async with running(delivery(store, [mailer], clock)):
        await store.until(lambda: len(store.failures) == 2 and len(store.sent) == 2, "two sent, two failed")
    assert store.sent_ids == [1, 4]
    assert [(f.email_id, f.error.temporary, f.error.code, f.retry) for f in store.failures] == [
        (2, True, 450, True),
        (3, False, 550, False),
    ]
    assert store.failures[1].error.recipient  # 5.1.1: the address cannot be reached
    assert all(f.policy is POLICY and f.at == clock.now for f in store.failures)
    assert (store.status(2), store.status(3)) == ("queued", "failed")  # 2 retries later, 3 never
    assert mailer.log.recipients == [recipient(1), recipient(4)]


async def test_an_outage_releases_the_claims_untouched_backs_off_and_raises_one_alert() -> None:
    store, mailers, clock = queue(3), recording_mailers(2), FakeClock()
    for mailer in mailers:
        mailer.fail_every(SmtpUnavailable("cannot open an SMTP session: connection refused"))
    async with running(delivery(store, mailers, clock)) as service:
        await store.until(lambda: len(store.released) >= 3, "three rounds of the outage")
        assert service.outage.failures == len(store.released)  # a pause after every round
        assert store.alerts == []  # not for long enough yet

        clock.advance(timedelta(minutes=5))  # COMM_SMTP_OUTAGE_ALERT_AFTER
        await store.until(lambda: len(store.alerts) == 1, "the outage alert")
        rounds = len(store.released)
        await store.until(lambda: len(store.released) >= rounds + 3, "three more rounds")
        assert len(store.alerts) == 1  # raised once per outage

        for mailer in mailers:
            mailer.fail_every(None)  # the server is back
        await store.until(lambda: len(store.sent) == 3, "the emails sent once the server is back")
        assert service.outage.since is None and service.outage.failures == 0

    assert all(sorted(ids) == [1, 2, 3] for ids in store.released)
    assert store.failures == []  # no attempt was spent
    [alert] = store.alerts
    assert (alert.severity, alert.code, alert.at) == ("error", "smtp_unavailable", clock.now)
    assert "5 minutes" in alert.message and "connection refused" in alert.message


def test_the_outage_pause_doubles_up_to_the_cap_in_its_upper_half() -> None:
    outage = Outage(settings(COMM_SMTP_OUTAGE_BACKOFF_MAX="60s"))
    for failures in range(1, 12):
        ceiling = min(60.0, 0.5 * 2**failures)
        assert ceiling / 2 <= outage.next_pause() <= ceiling


async def test_a_connection_that_cannot_be_opened_leaves_its_emails_to_the_others() -> None:
    store, [down, up], clock = queue(10), recording_mailers(2), FakeClock()
    down.fail_every(SmtpUnavailable("cannot open an SMTP session: connection refused"))
    async with running(delivery(store, [down, up], clock)) as service:
        await store.until(lambda: len(store.sent) == 10, "all ten sent")
    assert sorted(up.log.recipients) == sorted(recipient(i) for i in range(1, 11))
    assert down.delivered == [] and len(up.delivered) == 10
    assert service.outage.failures == 0 and store.alerts == [] and store.released == []


async def test_a_claim_lost_on_renewal_is_not_sent() -> None:
    store, [mailer], clock = queue(3), recording_mailers(1), FakeClock()

    async def slow_server(message: RawMessage) -> None:
        if message.recipients == (recipient(1),):
            clock.advance(timedelta(seconds=21))  # past a third of the 60 s lease: time to renew
            store.take_over(3)  # meanwhile this worker's claim on email 3 ran out and was taken over

    mailer.during_send = slow_server
    async with running(delivery(store, [mailer], clock)):
        await store.until(lambda: len(store.claims) >= 2, "the next claim, after the first was dealt with")
    assert store.renewals == [[2, 3]]
    assert store.sent_ids == [1, 2]
    assert recipient(3) not in [m.recipients[0] for m in mailer.attempts]
    assert store.released == [] and store.status(3) == "taken"  # not this worker's to release


@pytest.mark.parametrize("connections", [1, 3])
async def test_a_stop_during_a_send_finishes_and_records_the_emails_in_hand_and_releases_the_rest(
    connections: int,
) -> None:
    store, mailers, clock = queue(10), recording_mailers(connections), FakeClock()
    service = delivery(store, mailers, clock)
    in_hand: list[str] = []
    all_in_hand = asyncio.Event()

    async def reply_once_stopping(message: RawMessage) -> None:
        in_hand.append(message.recipients[0])
        if len(in_hand) == connections:
            all_in_hand.set()
        await service.wait_until_stopped()  # the server replies only after the stop began

    for mailer in mailers:
        mailer.during_send = reply_once_stopping
    await service.start()
    await asyncio.wait_for(all_in_hand.wait(), WAIT)
    await asyncio.wait_for(service.stop(), WAIT)

    first = list(range(1, connections + 1))
    assert sorted(in_hand) == sorted(recipient(i) for i in first)
    assert sorted(store.sent_ids) == first  # finished and recorded
    assert sorted(mailers[0].log.recipients) == sorted(recipient(i) for i in first)  # and nothing more went out
    assert store.released == [list(range(connections + 1, 11))]  # back to the queue
    assert store.failures == []
    assert [m.closed for m in mailers] == [1] * connections


@pytest.mark.parametrize("claim_ahead", [False, True], ids=["claims-in-turn", "claims-ahead"])
async def test_several_connections_send_every_email_exactly_once(claim_ahead: bool) -> None:
    store, mailers, clock = queue(45), recording_mailers(3), FakeClock()
    service = delivery(store, mailers, clock, claim_ahead=claim_ahead, COMM_DELIVERY_BATCH_SIZE="10")
    async with running(service):
        await store.until(lambda: len(store.sent) == 45, "45 emails recorded as sent")
    log = mailers[0].log
    assert sorted(log.recipients) == sorted(recipient(i) for i in range(1, 46))  # each once
    assert sorted(store.sent_ids) == list(range(1, 46))
    assert {d.connection for d in log.delivered} == {0, 1, 2}  # all three at work
    assert len([ids for ids in store.claims if ids]) == 5
    assert store.released == []
    assert service.sent == 45


async def test_a_claim_the_store_cannot_make_is_tried_again() -> None:
    store, [mailer], clock = queue(2), recording_mailers(1), FakeClock()
    store.unavailable_claims = 2
    async with running(delivery(store, [mailer], clock)):
        await store.until(lambda: len(store.sent) == 2, "both sent")
    assert store.claim_attempts == 3
    assert mailer.log.recipients == [recipient(1), recipient(2)]


@pytest.mark.parametrize("connections", [1, 3, 4])
async def test_over_several_connections_each_priority_class_is_accepted_before_the_next_begins(
    connections: int,
) -> None:
    kinds = [CONFIRMATION, CONFIRMATION, CONFIRMATION, MANUAL] + [CONTACT_REQUEST] * 8
    store = FakeDeliveryStore(claimed_email(i, kind=kind) for i, kind in enumerate(kinds, start=1))
    mailers, clock = recording_mailers(connections), FakeClock()
    steps: list[tuple[str, int]] = []  # ("start" | "end", priority class) in the server's order
    priority = {recipient(i): priority_of(kind) for i, kind in enumerate(kinds, start=1)}

    async def slow_reply(message: RawMessage) -> None:
        steps.append(("start", priority[message.recipients[0]]))
        # The server takes its time with the urgent ones: time for another connection to overtake.
        await asyncio.sleep(0.005 if priority[message.recipients[0]] < 3 else 0)
        steps.append(("end", priority[message.recipients[0]]))

    for mailer in mailers:
        mailer.during_send = slow_reply
    async with running(delivery(store, mailers, clock)):
        await store.until(lambda: len(store.sent) == len(kinds), "all sent")
    for at, (step, klass) in enumerate(steps):
        if step == "start":  # nothing more urgent is still with the server
            unfinished = [c for s, c in steps[:at] if s == "start"]
            for s, c in steps[:at]:
                if s == "end":
                    unfinished.remove(c)
            assert all(c >= klass for c in unfinished), steps
    if connections > 1:  # and within a class, the connections do work at once
        assert max(sum(1 if s == "start" else -1 for s, _ in steps[:at]) for at in range(len(steps))) > 1


async def test_an_email_queued_while_the_next_claim_is_made_ahead_goes_at_once_not_at_the_next_poll() -> None:
    store, mailers, clock = queue(4), recording_mailers(1), FakeClock()
    wakeups = Wakeups()
    service = DeliveryService(
        settings(COMM_POLL_INTERVAL="1h", COMM_DELIVERY_BATCH_SIZE="4"),
        store,
        mailers,
        POLICY,
        wakeups,
        clock,
        claim_ahead=True,
    )

    async def queue_one_more(message: RawMessage) -> None:
        # The last email of the claim: the claim ahead was made (and found nothing);
        # now the sender agent stores a new email and says so.
        if message.recipients[0] == recipient(4):
            store.rows[5] = StoredEmail(claimed_email(5), ALWAYS_DUE)
            wakeups.work_added()

    mailers[0].during_send = queue_one_more
    async with running(service):
        await store.until(lambda: 5 in store.sent_ids, "the new email sent (not an hour later)")
    assert store.claims[:2] == [[1, 2, 3, 4], []]
