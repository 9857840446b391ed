"""The delivery loop over several SMTP connections (COMM_SMTP_CONNECTIONS), on the
real databases and a real SMTP server: every email once, and a connection that
cannot be opened leaves its emails to the others instead of stopping delivery."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from streams.bootstrap import retry_policy
from streams.delivery.loop import DeliveryService
from streams.delivery.mailer import SmtpMailer
from streams.delivery.store import SqlDeliveryStore
from streams.delivery.wakeups import Wakeups
from streams.demo.broker import free_port
from streams.demo.smtp_capture import SmtpCapture
from streams.persistence.models import Email, EmailStatus, OutboxMessage
from streams.settings import Settings
from tests import waiting
from tests.integration.test_persistence import CHANNELS, command, store

EMAILS = 30


def settings_for(port: int) -> Settings:
    return Settings.from_environ(
        {
            "COMM_SMTP_HOST": "127.0.0.1",
            "COMM_SMTP_PORT": str(port),
            "COMM_SMTP_TIMEOUT": "5s",
            "COMM_DELIVERY_BATCH_SIZE": "10",  # several claims for the 30 emails
        }
    )


def queue_emails(database) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    for t in range(1, EMAILS + 1):
        store(database, command(f"k{t}", therapist_id=t, requests=((t, "2026-01-01T10:00:00+00:00"),)), now=now)


def statuses(database) -> dict[str, int]:  # type: ignore[no-untyped-def]
    def work(session):  # type: ignore[no-untyped-def]
        rows = session.execute(select(Email.status, func.count()).group_by(Email.status))
        return {status.value: n for status, n in rows}

    return database.transaction(work)


def alerts(database) -> int:  # type: ignore[no-untyped-def]
    def work(session):  # type: ignore[no-untyped-def]
        rows = session.scalars(select(OutboxMessage.value))
        return sum(1 for value in rows if "communication.alert" in value)

    return database.transaction(work)


def delivery_service(database, mailers: list[SmtpMailer], claim_ahead=False) -> DeliveryService:  # type: ignore[no-untyped-def]
    settings = mailers[0].settings
    return DeliveryService(
        settings,
        SqlDeliveryStore(database, "w1", CHANNELS, settings.poll_interval),
        mailers,
        retry_policy(settings),
        Wakeups(),
        lambda: datetime.now(UTC),
        claim_ahead=claim_ahead,
    )


async def deliver(database, mailers: list[SmtpMailer], until, claim_ahead=False) -> DeliveryService:  # type: ignore[no-untyped-def]
    delivery = delivery_service(database, mailers, claim_ahead)
    await delivery.start()
    try:
        await waiting.until(until, 30, "the delivery to finish")  # polling the SMTP server's inbox
    finally:
        await delivery.stop()
    return delivery


@pytest.mark.parametrize("claim_ahead", [False, True], ids=["claims-in-turn", "claims-ahead"])
async def test_several_connections_send_every_email_once(database, claim_ahead):
    queue_emails(database)
    smtp = SmtpCapture().start()
    try:
        mailers = [SmtpMailer(settings_for(smtp.port)) for _ in range(3)]
        before = smtp.controller.opened  # aiosmtpd's own check that it is up
        delivery = await deliver(database, mailers, lambda: len(smtp.messages) >= EMAILS, claim_ahead)
        recipients = sorted(r for m in smtp.messages for r in m.rcpt_tos)
        assert recipients == sorted(f"t{t}@praxis.example" for t in range(1, EMAILS + 1))
        assert smtp.controller.opened - before == 3  # all three at work, each opened once
        assert delivery.sent == EMAILS
        assert statuses(database) == {EmailStatus.SENT.value: EMAILS}
    finally:
        smtp.stop()


async def test_a_connection_that_cannot_be_opened_leaves_its_emails_to_the_others(database):
    queue_emails(database)
    smtp = SmtpCapture().start()
    try:
        nowhere = settings_for(free_port())  # nothing listens there: every connect is refused
        mailers = [SmtpMailer(nowhere), SmtpMailer(settings_for(smtp.port)), SmtpMailer(nowhere)]
        delivery = await deliver(database, mailers, lambda: len(smtp.messages) >= EMAILS)
        assert len(smtp.messages) == EMAILS
        assert delivery.outage.failures == 0  # not an outage: one connection was enough
        assert statuses(database) == {EmailStatus.SENT.value: EMAILS}
        assert alerts(database) == 0
    finally:
        smtp.stop()


async def test_when_no_connection_can_be_opened_the_emails_wait_untouched(database):
    queue_emails(database)
    nowhere = settings_for(free_port())
    mailers = [SmtpMailer(nowhere) for _ in range(2)]
    delivery = delivery_service(database, mailers)
    await delivery.start()
    try:
        await waiting.until(lambda: delivery.outage.failures >= 2, 30, "the outage to be noticed")
    finally:
        await delivery.stop()

    def work(session):  # type: ignore[no-untyped-def]
        return list(session.execute(select(Email.status, Email.retry_count, Email.claimed_by)))

    rows = database.transaction(work)
    assert len(rows) == EMAILS
    assert all(row == (EmailStatus.QUEUED, 0, None) for row in rows)  # released, no attempt spent


@pytest.mark.parametrize("connections", [1, 3])
async def test_a_stop_finishes_and_records_the_emails_in_hand(database, connections):
    """Stopped mid-send, delivery takes no new email, but the ones whose data the
    server has are finished and recorded: none is left to be sent a second time."""
    queue_emails(database)
    smtp = SmtpCapture().start()
    smtp.handler.delay = 0.3  # each reply takes a while: there is always an email in hand
    try:
        mailers = [SmtpMailer(settings_for(smtp.port)) for _ in range(connections)]
        await deliver(database, mailers, lambda: len(smtp.messages) >= 2)
        arrived = sorted(r for m in smtp.messages for r in m.rcpt_tos)

        def work(session):  # type: ignore[no-untyped-def]
            rows = session.execute(select(Email.recipient_email, Email.status, Email.retry_count))
            return [(to, status.value, retries) for to, status, retries in rows]

        rows = database.transaction(work)
        assert sorted(to for to, status, _ in rows if status == EmailStatus.SENT.value) == arrived
        assert len(arrived) >= 2 + connections - 1, "the emails in hand when it stopped went out"
        rest = [(status, retries) for to, status, retries in rows if to not in arrived]
        assert rest == [(EmailStatus.QUEUED.value, 0)] * (EMAILS - len(arrived)), "the others wait untouched"
    finally:
        smtp.stop()
