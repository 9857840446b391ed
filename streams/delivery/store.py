"""What the delivery loop needs from persistence: ``DeliveryStore`` is the port,
``SqlDeliveryStore`` the adapter over the database.

Only the claims report a failure (``StoreUnavailable``: nothing was claimed, the
loop waits and claims again). A result is recorded after the email went out (or
failed), so the adapter waits out a database outage rather than let the claim
expire into a re-send; an error that retrying cannot cure is logged, and the
claim's expiry brings the email back.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from domain.rate_limit import Rate
from domain.retry import RetryPolicy
from streams.delivery.mailer import SendError
from streams.messages.outputs import Alert, Severity
from streams.ops.logs import ThrottledWarning, log_failure
from streams.persistence import delivery_queue, delivery_results, send_rate
from streams.persistence.db import Database, run_retrying
from streams.persistence.delivery_queue import ClaimedEmail, SendWindowPolicy
from streams.persistence.outbox import Channels, add_rows, event_row

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreUnavailable(Exception):
    """Nothing could be claimed; the store has said why in the log."""


@dataclass(frozen=True)
class RateLimitedClaim:
    """Emails claimed under the send rate, each with its send slot."""

    emails: list[ClaimedEmail]
    # When each may go, in order, on this host's monotonic clock (time.monotonic()).
    send_at: list[float]
    # Nothing was claimed because no slot is free within the horizon: seconds until
    # one is (zero when the rate was not the reason).
    until_free: float = 0.0


class DeliveryStore(ABC):
    @abstractmethod
    async def claim(
        self, now: datetime, limit: int, lease: timedelta, contact_interval: timedelta
    ) -> list[ClaimedEmail]:
        """Claim up to ``limit`` due emails for ``lease``, most urgent first (the
        weekly contact limit checked once more)."""

    @abstractmethod
    async def claim_at_rate(
        self, now: datetime, limit: int, lease: timedelta, contact_interval: timedelta, rate: Rate, horizon: timedelta
    ) -> RateLimitedClaim:
        """``claim``, but no more than ``rate`` lets go within ``horizon``, and a send
        slot reserved for each email on the schedule that all workers share."""

    @abstractmethod
    async def renew(self, email_ids: Sequence[int], now: datetime, lease: timedelta) -> set[int]:
        """Extend the claims; the ids still held (a claim that ran out may have been
        taken over, and then the other worker sends that email)."""

    @abstractmethod
    async def release(self, email_ids: Sequence[int]) -> None:
        """Give claimed emails back to the queue without spending an attempt."""

    @abstractmethod
    async def record_sent(self, sent: Sequence[tuple[int, datetime]]) -> None:
        """Mark emails sent (id and when), in one go."""

    @abstractmethod
    async def record_failure(self, email_id: int, error: SendError, now: datetime, policy: RetryPolicy) -> bool:
        """Count a failed attempt; True when another attempt is scheduled."""

    @abstractmethod
    async def alert(self, severity: Severity, code: str, message: str, now: datetime) -> None:
        """Raise an operational alert (a ``communication.alert`` event)."""


class SqlDeliveryStore(DeliveryStore):
    """The delivery queue and its results in the database, for one worker's claims."""

    def __init__(
        self,
        database: Database,
        worker_id: str,
        channels: Channels,
        retry_delay: timedelta,
        window: SendWindowPolicy | None = None,
    ) -> None:
        self.database = database
        # COMM_SEND_WINDOW at delivery: emails outside their therapist's window wait.
        self.window = window
        self.worker_id = worker_id
        self.channels = channels
        # The first wait when a database outage holds up recording a result.
        self.retry_delay = retry_delay
        self.warning = ThrottledWarning(log)
        self.database_clock = send_rate.DatabaseClock()

    async def claim(
        self, now: datetime, limit: int, lease: timedelta, contact_interval: timedelta
    ) -> list[ClaimedEmail]:
        return await self._claiming(self._claim_due, now, limit, lease, contact_interval)

    async def claim_at_rate(
        self, now: datetime, limit: int, lease: timedelta, contact_interval: timedelta, rate: Rate, horizon: timedelta
    ) -> RateLimitedClaim:
        def work(session: Session) -> RateLimitedClaim:
            emails, slots = send_rate.take_at_rate(
                session,
                rate,
                horizon,
                lambda free: self._claim_due(session, now, min(limit, free), lease, contact_interval),
                self.database_clock,
            )
            return RateLimitedClaim(emails, slots.deadlines, slots.until_free.total_seconds())

        return await self._claiming(work)

    def _claim_due(
        self, session: Session, now: datetime, limit: int, lease: timedelta, contact_interval: timedelta
    ) -> list[ClaimedEmail]:
        """The one call of claim_due, with or without a send rate."""
        return delivery_queue.claim_due(
            session, self.worker_id, now, limit, lease, contact_interval, window=self.window
        )

    async def _claiming(self, work: Callable[..., T], *args: object) -> T:
        try:
            return await self.database.run(work, *args)
        except SQLAlchemyError as exc:
            self.warning("delivery: database unavailable (%s); retrying", type(exc).__name__)
            raise StoreUnavailable(type(exc).__name__) from exc

    async def renew(self, email_ids: Sequence[int], now: datetime, lease: timedelta) -> set[int]:
        held = await self._record(delivery_queue.renew_claims, list(email_ids), self.worker_id, now, lease)
        return held or set()

    async def release(self, email_ids: Sequence[int]) -> None:
        try:
            await self.database.run(delivery_queue.release_claims, list(email_ids), self.worker_id)
        except SQLAlchemyError:  # the claims expire on their own
            log.info("could not release %d claimed emails; their claims expire", len(email_ids))

    async def record_sent(self, sent: Sequence[tuple[int, datetime]]) -> None:
        await self._record(delivery_results.record_sent_many, list(sent), self.channels)

    async def record_failure(self, email_id: int, error: SendError, now: datetime, policy: RetryPolicy) -> bool:
        retry = await self._record(delivery_results.record_failure, email_id, error, now, policy, self.channels)
        return bool(retry)

    async def alert(self, severity: Severity, code: str, message: str, now: datetime) -> None:
        def write(session: Session) -> None:
            alert = Alert(therapist_id=None, severity=severity, code=code, message=message)
            add_rows(session, [event_row(self.channels.events, alert, now)])

        try:
            await self.database.run(write)
        except SQLAlchemyError:
            log.error("alert %s could not be stored: %s", code, message)

    async def _record(self, work: Callable[..., T], *args: object) -> T | None:
        try:
            return await run_retrying(
                self.database,
                work,
                *args,
                warn=lambda message, *a: self.warning("delivery: " + message, *a),
                first_delay=self.retry_delay.total_seconds(),
            )
        except SQLAlchemyError as exc:
            log_failure(log, "delivery: cannot record a result", exc)
            return None
