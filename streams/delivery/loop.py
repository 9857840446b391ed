"""The delivery loop: claim due emails from the database, send them, record the result.

Runs on every worker; claims make sure each email is taken by one of them. The
schedule (next attempt, claim expiry) lives in the database, so retries survive
restarts and a retrying email never holds up anyone else's. The loop reaches the
database through a ``DeliveryStore`` and the SMTP server through ``Mailer``s (one
per connection), so it runs against fakes in unit tests.

Two kinds of SMTP trouble are told apart. A failure inside the mail transaction
(a 4xx/5xx reply, a dropped connection, a timeout) is a failed attempt of that
email, retried with backoff up to COMM_MAX_SEND_ATTEMPTS. A server that cannot be
reached at all (no session: connect, TLS or login fails) is an outage: the claimed
emails go back to the queue untouched, delivery waits with backoff, and an alert
is raised if it lasts; otherwise a maintenance window would fail every queued email
for good.

With a send rate (COMM_SMTP_RATE_LIMIT) the loop claims only what the rate lets go
within ``RATE_HORIZON``, each email with a send slot from the schedule all workers
share (streams/persistence/send_rate.py), and sends each at its slot: the emails
over the limit wait unclaimed in the queue, in priority order, and none fails
because of the limit. Without one, nothing of this runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mode import Service

from domain.delivery_order import priority_of
from domain.retry import RetryPolicy
from streams.delivery.mailer import Mailer, SmtpUnavailable, classify
from streams.delivery.mime import RawMessage, build_message
from streams.delivery.pacing import LATE, Slots
from streams.delivery.store import DeliveryStore, StoreUnavailable
from streams.delivery.tracking import Tracking
from streams.delivery.wakeups import Wakeups
from streams.email.unsubscribe import OptOut, with_opt_out
from streams.ops.logs import ThrottledWarning, bind_log_context
from streams.ops.metrics import NO_METRICS, Metrics, SendFailure
from streams.persistence.delivery_queue import ClaimedEmail
from streams.settings import Settings

log = logging.getLogger(__name__)

# Sent emails recorded per commit, and commits that may run behind the sends.
RECORD_GROUP = 8
GROUPS_IN_FLIGHT = 2

# With a send rate: how far ahead emails are claimed and their send slots reserved.
# Long enough for a claim to fill a few connections, short enough that a more
# urgent email arriving meanwhile waits for little, and that a worker stopping
# loses few slots (the rate is then slower, never faster).
RATE_HORIZON = timedelta(seconds=1)


def stop_grace(settings: Settings) -> float:
    """How long a stopping delivery loop may take to finish the emails in hand and
    record them: the SMTP timeout, and time to commit."""
    return settings.smtp_timeout.total_seconds() + 5.0


def resend_bound(connections: int) -> int:
    """How many emails a crash can leave accepted by the server but not recorded as
    sent (each is sent again, with the same Message-ID): per connection the message
    in its last reply, the open group, and the groups being committed (each sender
    that fills a group may add one while it waits for a commit)."""
    return (GROUPS_IN_FLIGHT + connections) * RECORD_GROUP + connections


class Outage:
    """Tracks one stretch of SMTP unavailability: backoff and the alert."""

    def __init__(self, settings: Settings) -> None:
        self.cap = settings.smtp_outage_backoff_max.total_seconds()
        self.alert_after = settings.smtp_outage_alert_after
        self.since: datetime | None = None
        self.failures = 0
        self.alerted = False

    def next_pause(self) -> float:
        self.failures += 1
        ceiling = min(self.cap, 0.5 * (1 << min(self.failures, 16)))
        return ceiling / 2 + random.random() * ceiling / 2

    def due_alert(self, now: datetime) -> bool:
        return self.since is not None and not self.alerted and now - self.since >= self.alert_after


@dataclass
class Claimed:
    """One claim: the emails, most urgent first, and with a send rate their send
    slots (on ``time.monotonic()``), one per email, in order."""

    emails: list[ClaimedEmail]
    slots: Slots | None = None
    # Nothing was claimed because no slot is free yet: seconds until one is.
    until_free: float = 0.0


class DeliveryService(Service):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        store: DeliveryStore,
        mailers: Sequence[Mailer],
        policy: RetryPolicy,
        wakeups: Wakeups,
        clock: Callable[[], datetime],
        *,
        claim_ahead: bool = False,
        metrics: Metrics = NO_METRICS,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics
        # Claim the next emails while the second half of a claim is sent. Measured:
        # it helps the delivery process (idle between SMTP replies) and costs an
        # in-process loop about 10% (it competes for the GIL); see BENCHMARKS.md.
        self.claim_ahead = claim_ahead
        self.settings = settings
        self.store = store
        self.mailers = list(mailers)
        self.policy = policy
        self.wakeups = wakeups
        self.clock = clock
        self.outage = Outage(settings)
        # Added as each message is built: the one-click opt-out headers, opt-in tracking.
        self.opt_out = OptOut.from_settings(settings)
        self.tracking = Tracking.from_settings(settings)
        self.smtp_warning = ThrottledWarning(log)
        self.rate_warning = ThrottledWarning(log)
        self._sent_none = False  # the last claim's slots were all missed
        self.sent = 0
        self._loop_ended = asyncio.Event()  # set whenever the delivery loop is not running
        self._loop_ended.set()

    @Service.task
    async def _deliver(self) -> None:
        self._loop_ended.clear()
        try:
            await self._deliver_until_stopped()
        finally:
            self._loop_ended.set()

    async def _deliver_until_stopped(self) -> None:
        pause = self.settings.poll_interval.total_seconds()
        ahead: asyncio.Future[Claimed] | None = None
        while not self.should_stop:
            try:
                claimed = await (ahead if ahead is not None else self._claim())
            except StoreUnavailable:
                await self.sleep(pause)
                continue
            finally:
                ahead = None
            if claimed.until_free:
                await self._wait_for_rate(claimed.until_free)
                continue
            if not claimed.emails:
                await self.wait_for_stopped(self.wakeups.delivery.wait(), timeout=pause)
                continue
            if claimed.slots is not None and self._sent_none:
                claimed.slots.allow_late_first()
            available, ahead = await self._send_all(claimed)
            if claimed.slots is not None:
                self._paced(claimed.slots)
            if not available:
                await self.sleep(self.outage.next_pause())

    def _claim(self) -> asyncio.Future[Claimed]:
        # A wake-up from here on may be about an email this claim does not see yet
        # (a claim made ahead, while the last emails were sent): it stays set, so
        # the loop claims again instead of waiting for the next poll.
        self.wakeups.delivery.clear()
        return asyncio.ensure_future(self._claim_now())

    async def _claim_now(self) -> Claimed:
        now, limit = self.clock(), self.settings.delivery_batch_size
        lease, interval = self.settings.delivery_lease, self.settings.contact_interval
        rate = self.settings.smtp_rate_limit
        if rate is None:
            return Claimed(await self.store.claim(now, limit, lease, interval))
        claim = await self.store.claim_at_rate(now, limit, lease, interval, rate, RATE_HORIZON)
        return Claimed(claim.emails, Slots(claim.send_at), claim.until_free)

    def _paced(self, slots: Slots) -> None:
        self._sent_none = slots.sent_none
        if slots.missed:
            self.rate_warning(
                "delivery gave up %d send slot(s) it was more than %.0f ms late for (the process was held up); "
                "the rate is kept, slower",
                slots.missed,
                LATE * 1000,
            )

    async def _wait_for_rate(self, seconds: float) -> None:
        started = time.monotonic()
        await self.sleep(seconds)
        self.metrics.rate_waited(time.monotonic() - started)

    async def _send_all(self, claimed: Claimed) -> tuple[bool, asyncio.Future[Claimed] | None]:
        """Send the claimed emails, in order, over the mailers' connections at once.

        Returns whether the SMTP server was available, and (with ``claim_ahead``)
        the next claim, made while the second half of this one is sent, so no
        connection waits for the database between claims.

        With a send rate each email goes at the next slot, whichever connection
        takes it (streams.delivery.pacing); a slot not used (missed, an email lost
        to another worker, a connection that could not be opened, a stop) is lost,
        and an email left without a slot goes back to the queue.

        Sent emails are recorded in small groups (RECORD_GROUP), committed in the
        background while the next messages go out: SMTP and the database overlap,
        and one commit serves several emails. An email's status is committed within
        milliseconds of its acceptance; a crash in between can re-send it, with the
        same Message-ID (CONTRACT §5.7).

        A connection that cannot be opened leaves the emails to the others; only
        when none can be opened is the server unavailable.

        The priority classes keep their order over several connections: no email
        is started while an email of a more urgent class is still being sent
        (``turn``), so each confirmation is accepted before any contact request of
        the claim begins. Within a class the connections race.
        """
        queue = deque(claimed.emails)
        slots = claimed.slots
        in_hand: dict[int, int] = {}  # email id -> priority class, while being sent
        turn = asyncio.Condition()
        group: list[tuple[int, datetime]] = []
        recording: set[asyncio.Future[Any]] = set()
        unavailable: list[SmtpUnavailable] = []
        ahead: asyncio.Future[Claimed] | None = None
        renewed = self.clock()

        async def record_group() -> None:
            if not group:
                return
            done = list(group)
            group.clear()
            task = asyncio.ensure_future(self.store.record_sent(done))
            recording.add(task)
            task.add_done_callback(recording.discard)
            if len(recording) >= GROUPS_IN_FLIGHT:
                await asyncio.wait(recording, return_when=asyncio.FIRST_COMPLETED)

        async def renew() -> None:
            # A long run (a slow server): keep the claims, drop what was lost.
            nonlocal renewed
            renewed = self.clock()
            ids = [e.id for e in queue] + sorted(in_hand)
            held = await self.store.renew(ids, renewed, self.settings.delivery_lease)
            for email in [e for e in queue if e.id not in held]:
                queue.remove(email)

        def may_start() -> bool:
            return not queue or not in_hand or min(in_hand.values()) >= priority_of(queue[0].kind)

        async def sender(mailer: Mailer) -> None:
            nonlocal ahead
            while queue and not self.should_stop:
                if self.clock() - renewed > self.settings.delivery_lease / 3:
                    await renew()
                    continue
                if not may_start():  # a more urgent email is still on its way
                    async with turn:
                        await turn.wait_for(may_start)
                    continue
                if self.claim_ahead and ahead is None and len(queue) <= len(claimed.emails) // 2:
                    ahead = self._claim()
                if slots is not None:
                    slot = slots.next()
                    if slot is None:
                        return
                    wait = slot - time.monotonic()
                    if wait > 0:  # in steps, to renew the claims of a long wait
                        await self._wait_for_rate(min(wait, self.settings.delivery_lease.total_seconds() / 3))
                        continue
                    slots.take()
                email = queue.popleft()
                in_hand[email.id] = priority_of(email.kind)
                bind_log_context(email_id=email.id, therapist_id=email.therapist_id)
                sent_at = self.clock()
                try:
                    await self._send(mailer, self._message(email, sent_at))
                except SmtpUnavailable as exc:
                    queue.appendleft(email)  # not tried: another connection may take it
                    self.metrics.send_failed(email.kind, SendFailure.OUTAGE)
                    unavailable.append(exc)
                    return
                except Exception as exc:
                    await self._failed(email, exc)
                else:
                    self._available()
                    self.sent += 1
                    self.metrics.email_sent(email.kind)
                    log.info("email %s (%s) sent to therapist %s", email.id, email.kind, email.therapist_id)
                    group.append((email.id, sent_at))
                    if len(group) >= RECORD_GROUP:
                        await record_group()
                finally:
                    del in_hand[email.id]
                    async with turn:
                        turn.notify_all()

        available, finished = True, False
        try:
            await asyncio.gather(*(sender(mailer) for mailer in self.mailers))
            if queue and unavailable and not self.should_stop:
                available = False
                await self._unavailable(unavailable[0])
            finished = True
        finally:
            await record_group()
            if recording:
                await asyncio.gather(*recording)
            not_tried = list(queue)
            if ahead is not None and not (finished and available and not self.should_stop):
                not_tried += await self._prefetched(ahead)
                ahead = None
            if not_tried:  # back to the queue without spending an attempt
                await self._release(not_tried)
            self.wakeups.relay.set()
        return available, ahead

    async def _prefetched(self, ahead: asyncio.Future[Claimed]) -> list[ClaimedEmail]:
        try:
            return (await ahead).emails
        except StoreUnavailable:  # nothing was claimed
            return []

    def _message(self, email: ClaimedEmail, sent_at: datetime) -> RawMessage:
        outgoing = with_opt_out(email.outgoing, self.opt_out, email.therapist_id, email.kind)
        tracked = None if self.tracking is None else self.tracking.for_email(email.id)
        return build_message(outgoing, sent_at, tracked)

    async def _send(self, mailer: Mailer, message: RawMessage) -> None:
        """Send, timing the SMTP transaction (a session that could not be opened is
        no transaction: it is an outage)."""
        started = time.perf_counter()
        try:
            await mailer.send(message)
        except SmtpUnavailable:
            raise
        except Exception:
            self.metrics.smtp_send_took(time.perf_counter() - started)
            raise
        self.metrics.smtp_send_took(time.perf_counter() - started)

    async def _failed(self, email: ClaimedEmail, exc: Exception) -> None:
        error = classify(exc)
        self.metrics.send_failed(email.kind, SendFailure.TEMPORARY if error.temporary else SendFailure.PERMANENT)
        retry = await self.store.record_failure(email.id, error, self.clock(), self.policy)
        log.warning(
            "email %s to therapist %s: attempt failed (%s); %s",
            email.id,
            email.therapist_id,
            error,
            "will retry" if retry else "failed for good",
        )

    async def _unavailable(self, exc: SmtpUnavailable) -> None:
        now = self.clock()
        if self.outage.since is None:
            self.outage.since = now
        self.smtp_warning("SMTP server unavailable (%s); delivery waits and retries", exc)
        if self.outage.due_alert(now):
            minutes = (now - self.outage.since).total_seconds() / 60
            await self.store.alert(
                "error",
                "smtp_unavailable",
                f"no SMTP session could be opened for {minutes:.0f} minutes ({exc}); emails are queued",
                now,
            )
            self.outage.alerted = True

    def _available(self) -> None:
        if self.outage.since is None:
            return
        lasted = self.clock() - self.outage.since
        log.info("SMTP server reachable again after %s", lasted - timedelta(microseconds=lasted.microseconds))
        self.outage = Outage(self.settings)

    async def _release(self, remaining: list[ClaimedEmail]) -> None:
        await self.store.release([e.id for e in remaining])

    async def on_stop(self) -> None:
        """Stopping, the senders take no new email: the ones in hand are finished and
        recorded before the connections close, or else an email the server accepted
        could stay unrecorded and be sent again. Bounded by the SMTP timeout (a
        stalled server fails the send by then)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loop_ended.wait(), stop_grace(self.settings))
        for mailer in self.mailers:
            await mailer.close()
