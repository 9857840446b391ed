"""Fakes for unit tests only: the delivery loop's ports (store, mailer, clock) and
the Faust pieces an agent touches (topics that record what is sent to them, a
stream of records). Integration and e2e tests use the real database, an SMTP
server and the real broker (Tansu).

Each subclasses the real base, as cosmicpython's ``FakeNotifications`` does, and
records what was asked of it; a test waits on those records (``until``), never
for a fixed time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.decisions import CONTACT_REQUEST
from domain.rate_limit import Rate, capacity, reserve, until_free
from domain.retry import RetryPolicy, backoff_delay, should_retry
from streams.delivery.mailer import Mailer, SendError, SmtpUnavailable
from streams.delivery.mime import OutgoingEmail, RawMessage
from streams.delivery.store import DeliveryStore, RateLimitedClaim, StoreUnavailable
from streams.kafka.topics import Topics
from streams.ops.metrics import Metrics, Outcome, SendFailure
from streams.persistence.delivery_queue import ClaimedEmail

WAIT = 5.0  # seconds a test waits for a condition before it fails


class Changes:
    """Wakes whoever waits for a condition on a fake's records when they change."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def until(self, condition: Callable[[], bool], what: str = "the condition", timeout: float = WAIT) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"waited {timeout:.0f}s for {what}") from None


class FakeClock:
    """A clock that moves only when the test moves it."""

    def __init__(self, now: datetime = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


# --- the mailer ---------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    """A message the (fake) server accepted, and the connection it went over."""

    message: RawMessage
    connection: int

    @property
    def recipient(self) -> str:
        return self.message.recipients[0]


class SentLog(Changes):
    """What every connection delivered, in the order the server accepted it."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered: list[Delivered] = []

    @property
    def recipients(self) -> list[str]:
        return [d.recipient for d in self.delivered]

    def add(self, delivered: Delivered) -> None:
        self.delivered.append(delivered)
        self.changed()


SendHook = Callable[[RawMessage], Awaitable[None]]


class RecordingMailer(Mailer):
    """One fake SMTP connection. Accepts every message unless told otherwise:
    ``fail`` (the next sends to a recipient), ``fail_attempt`` (the n-th send over
    this connection) and ``fail_every`` (every send, e.g. ``SmtpUnavailable`` for an
    outage) script the exceptions it raises. ``during_send`` runs while a message is
    with the server (after the session was set up, before the reply)."""

    def __init__(self, connection: int = 0, log: SentLog | None = None) -> None:
        self.connection = connection
        self.log = log if log is not None else SentLog()
        self.attempts: list[RawMessage] = []  # every send, accepted or not
        self.closed = 0
        self.during_send: SendHook | None = None
        self._by_recipient: dict[str, deque[BaseException]] = {}
        self._by_attempt: dict[int, BaseException] = {}
        self._every: BaseException | None = None

    def fail(self, recipient: str, *errors: BaseException) -> None:
        self._by_recipient.setdefault(recipient, deque()).extend(errors)

    def fail_attempt(self, attempt: int, error: BaseException) -> None:
        """Fail the ``attempt``-th send over this connection (counting from 1)."""
        self._by_attempt[attempt] = error

    def fail_every(self, error: BaseException | None) -> None:
        """Fail every send with ``error`` from now on; ``None`` ends it."""
        self._every = error

    @property
    def delivered(self) -> list[RawMessage]:
        return [d.message for d in self.log.delivered if d.connection == self.connection]

    async def send(self, message: RawMessage) -> None:
        self.attempts.append(message)
        error = self._error_for(message, len(self.attempts))
        await asyncio.sleep(0)  # a real send waits for the server: others run meanwhile
        if isinstance(error, SmtpUnavailable):
            raise error  # no session: the message never reached the server
        if self.during_send is not None:
            await self.during_send(message)
        if error is not None:
            raise error
        self.log.add(Delivered(message, self.connection))

    def _error_for(self, message: RawMessage, attempt: int) -> BaseException | None:
        if self._every is not None:
            return self._every
        if attempt in self._by_attempt:
            return self._by_attempt.pop(attempt)
        queued = self._by_recipient.get(message.recipients[0])
        return queued.popleft() if queued else None

    async def close(self) -> None:
        self.closed += 1
        self.log.changed()


def recording_mailers(connections: int) -> list[RecordingMailer]:
    """``connections`` mailers that write one log, as the connections of one worker."""
    log = SentLog()
    return [RecordingMailer(n, log) for n in range(connections)]


# --- the store ----------------------------------------------------------------


def recipient(email_id: int) -> str:
    return f"t{email_id}@praxis.example"


def claimed_email(email_id: int, *, therapist_id: int | None = None, kind: str = CONTACT_REQUEST) -> ClaimedEmail:
    therapist = email_id if therapist_id is None else therapist_id
    return ClaimedEmail(
        id=email_id,
        email_key=f"email-{email_id}",
        therapist_id=therapist,
        kind=kind,
        limited=kind == CONTACT_REQUEST,
        placement_request_ids=(email_id,),
        outgoing=OutgoingEmail(
            message_id=f"<email-{email_id}@therapieplatz.example>",
            sender_email="vermittlung@therapieplatz.example",
            sender_name="Therapieplatz-Vermittlung",
            recipient_email=recipient(email_id),
            recipient_name=f"Therapeut:in {therapist}",
            subject="Anfrage",
            body_text="Guten Tag",
            body_html="<p>Guten Tag</p>",
        ),
    )


ALWAYS_DUE = datetime.min.replace(tzinfo=UTC)


@dataclass
class StoredEmail:
    email: ClaimedEmail
    due_at: datetime
    status: str = "queued"  # queued, claimed, sent, failed, or taken (by another worker)
    attempts: int = 0


@dataclass(frozen=True)
class Failure:
    email_id: int
    error: SendError
    at: datetime
    policy: RetryPolicy
    retry: bool


@dataclass(frozen=True)
class Alert:
    severity: str
    code: str
    message: str
    at: datetime


class FakeDeliveryStore(DeliveryStore):
    """The delivery queue in memory: emails are claimed in the order they were added
    (the real store's priority order) once due; a failed attempt is scheduled as
    ``record_failure`` schedules it. The weekly contact limit is not checked."""

    def __init__(self, emails: Iterable[ClaimedEmail] = ()) -> None:
        self.changes = Changes()
        self.rows: dict[int, StoredEmail] = {e.id: StoredEmail(e, ALWAYS_DUE) for e in emails}
        self.claims: list[list[int]] = []  # the ids of each claim
        self.renewals: list[list[int]] = []
        self.released: list[list[int]] = []
        self.sent_groups: list[list[tuple[int, datetime]]] = []
        self.failures: list[Failure] = []
        self.alerts: list[Alert] = []
        self.unavailable_claims = 0  # the next claims that fail
        self.claim_attempts = 0
        # The send rate's schedule, on a clock of its own, as the database's is.
        self.last_slot: datetime | None = None
        self.reserved: list[datetime] = []  # every send slot handed out
        self.rate_claims = 0

    async def until(self, condition: Callable[[], bool], what: str = "the condition", timeout: float = WAIT) -> None:
        await self.changes.until(condition, what, timeout)

    @property
    def sent(self) -> list[tuple[int, datetime]]:
        return [item for group in self.sent_groups for item in group]

    @property
    def sent_ids(self) -> list[int]:
        return [email_id for email_id, _ in self.sent]

    def status(self, email_id: int) -> str:
        return self.rows[email_id].status

    def take_over(self, *email_ids: int) -> None:
        """Another worker took over these claims (this worker's ran out)."""
        for email_id in email_ids:
            self.rows[email_id].status = "taken"

    async def claim(
        self, now: datetime, limit: int, lease: timedelta, contact_interval: timedelta
    ) -> list[ClaimedEmail]:
        self.claim_attempts += 1
        if self.unavailable_claims:
            self.unavailable_claims -= 1
            self.changes.changed()
            raise StoreUnavailable("the fake store is unavailable")
        due = [row for row in self.rows.values() if row.status == "queued" and row.due_at <= now][:limit]
        for row in due:
            row.status = "claimed"
        self.claims.append([row.email.id for row in due])
        self.changes.changed()
        return [row.email for row in due]

    async def claim_at_rate(
        self, now: datetime, limit: int, lease: timedelta, contact_interval: timedelta, rate: Rate, horizon: timedelta
    ) -> RateLimitedClaim:
        """``claim``, within the rate, on a schedule kept by the real clock."""
        self.rate_claims += 1
        at, read_at = datetime.now(UTC), time.monotonic()
        free = capacity(self.last_slot, at, rate, horizon)
        if free == 0:
            self.changes.changed()
            return RateLimitedClaim([], [], until_free(self.last_slot, at, rate, horizon).total_seconds())
        emails = await self.claim(now, min(limit, free), lease, contact_interval)
        reservation = reserve(self.last_slot, at, len(emails), rate, horizon)
        self.last_slot = reservation.last_slot
        self.reserved += reservation.slots
        return RateLimitedClaim(emails, [read_at + (slot - at).total_seconds() for slot in reservation.slots])

    async def renew(self, email_ids: Sequence[int], now: datetime, lease: timedelta) -> set[int]:
        self.renewals.append(list(email_ids))
        self.changes.changed()
        return {i for i in email_ids if self.rows[i].status == "claimed"}

    async def release(self, email_ids: Sequence[int]) -> None:
        self.released.append(list(email_ids))
        for email_id in email_ids:
            if self.rows[email_id].status == "claimed":
                self.rows[email_id].status = "queued"
        self.changes.changed()

    async def record_sent(self, sent: Sequence[tuple[int, datetime]]) -> None:
        self.sent_groups.append(list(sent))
        for email_id, _ in sent:
            self.rows[email_id].status = "sent"
        self.changes.changed()

    async def record_failure(self, email_id: int, error: SendError, now: datetime, policy: RetryPolicy) -> bool:
        row = self.rows[email_id]
        retry = False
        if row.status not in ("sent", "failed"):
            row.attempts += 1
            retry = should_retry(error.temporary, row.attempts, policy.max_attempts)
            row.status = "queued" if retry else "failed"
            if retry:
                row.due_at = now + backoff_delay(row.attempts, policy.base, policy.cap, 0.0)
        self.failures.append(Failure(email_id, error, now, policy, retry))
        self.changes.changed()
        return retry

    async def alert(self, severity: str, code: str, message: str, now: datetime) -> None:
        self.alerts.append(Alert(severity, code, message, now))
        self.changes.changed()


# --- Kafka: topics and streams as an agent sees them -------------------------------


@dataclass(frozen=True)
class Record:
    """A consumed Kafka message, as Faust hands it to an agent (``event.message``)."""

    value: bytes | None
    key: bytes | None = None
    topic: str = "input"
    partition: int = 0
    offset: int = 0


@dataclass(frozen=True)
class Sent:
    key: bytes | None
    value: bytes
    partition: int | None


@dataclass
class RecordingTopic:
    """Records what is sent. The broker acknowledges each send at once, unless the
    test holds the acknowledgements (``hold``, then ``release``) or has the broker
    refuse a value (``refuse`` returns the error for it, or None)."""

    name: str
    sent: list[Sent] = field(default_factory=list)
    hold: bool = False
    held: list[asyncio.Future[None]] = field(default_factory=list)
    refuse: Callable[[bytes], BaseException | None] | None = None

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, *, key: bytes | None = None, value: bytes, partition: int | None = None) -> Any:
        self.sent.append(Sent(key, value, partition))
        # Faust's send returns a future of the broker's acknowledgement.
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        error = self.refuse(value) if self.refuse is not None else None
        if error is not None:
            acknowledged.set_exception(error)
        elif self.hold:
            self.held.append(acknowledged)
        else:
            acknowledged.set_result(None)
        return acknowledged

    def release(self) -> None:
        """The broker acknowledges what it was holding."""
        for future in self.held:
            future.set_result(None)
        self.held.clear()
        self.hold = False


def recording_topics() -> Topics:
    return Topics(
        matching=RecordingTopic("matching-events"),
        therapists=RecordingTopic("therapist-events"),
        commands=RecordingTopic("communication-commands"),
        events=RecordingTopic("communication-events"),
        dlq=RecordingTopic("communication-dlq"),
        inbox=RecordingTopic("svc-therapist-inbox"),
        send_commands=RecordingTopic("svc-send-commands"),
    )


def sent(topic: Any) -> list[Sent]:
    """What was sent to one of ``recording_topics()``."""
    assert isinstance(topic, RecordingTopic)
    return topic.sent


@dataclass(frozen=True)
class _Event:
    message: Record

    @property
    def value(self) -> bytes | None:
        return self.message.value


def taken(records: Iterable[Record]) -> list[_Event]:
    """Records as a consumer hands them on in one batch (``IngestAgent.take``)."""
    return [_Event(record) for record in records]


class RecordStream:
    """A finite stream of records, as ``stream.events()`` yields them."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records = list(records)
        self.acked: list[Record] = []

    async def events(self) -> AsyncIterator[_Event]:
        for record in self.records:
            yield _Event(record)

    async def noack_take(self, max_: int, within: float) -> AsyncIterator[list[_Event]]:
        """The records in lists of up to ``max_``, as the sender agent takes them."""
        events = [_Event(record) for record in self.records]
        for start in range(0, len(events), max_):
            yield events[start : start + max_]

    async def ack(self, event: _Event) -> None:
        self.acked.append(event.message)


class StagedRecordStream(RecordStream):
    """Records that come in stages, as batches: each stage once the awaitable given
    with it is done (the first at once)."""

    def __init__(self, *stages: tuple[Callable[[], Awaitable[Any]] | None, list[Record]]) -> None:
        super().__init__(record for _, records in stages for record in records)
        self.stages = stages

    async def noack_take(self, max_: int, within: float) -> AsyncIterator[list[_Event]]:
        for before, records in self.stages:
            if before is not None:
                await before()
            yield [_Event(record) for record in records]


# --- the database ------------------------------------------------------------------


class RecordingDatabase:
    """``Database.run`` without a database: each unit of work is recorded and called
    with a stand-in session, which the unit under test only hands on to persistence
    functions that the test has replaced."""

    def __init__(self) -> None:
        self.session = object()
        self.runs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    async def run(self, work: Callable[..., Any], *args: Any) -> Any:
        self.runs.append((work, args))
        return work(self.session, *args)


# --- metrics -----------------------------------------------------------------------


class RecordingMetrics(Metrics):
    """Every count, by what and its labels (``counts[("email_sent", "confirmation")]``),
    and every duration observed, by what (``durations["smtp_send"]``)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, ...]] = Counter()
        self.durations: dict[str, list[float]] = {}

    def input_event(self, topic: str, outcome: Outcome) -> None:
        self.counts["input_event", topic, outcome] += 1

    def dead_lettered(self, source: str) -> None:
        self.counts["dead_lettered", source] += 1

    def email_created(self, kind: str) -> None:
        self.counts["email_created", kind] += 1

    def email_sent(self, kind: str) -> None:
        self.counts["email_sent", kind] += 1

    def send_failed(self, kind: str, failure: SendFailure) -> None:
        self.counts["send_failed", kind, failure] += 1

    def smtp_send_took(self, seconds: float) -> None:
        self.durations.setdefault("smtp_send", []).append(seconds)

    def rate_waited(self, seconds: float) -> None:
        self.durations.setdefault("rate_wait", []).append(seconds)

    def batch_run_took(self, seconds: float) -> None:
        self.durations.setdefault("batch_run", []).append(seconds)

    def phone_call(self, event: str) -> None:
        self.counts["phone_call", event] += 1

    def alert(self, code: str) -> None:
        self.counts["alert", code] += 1

    def of(self, what: str) -> dict[tuple[str, ...], int]:
        """The counts of ``what``, by their labels."""
        return {labels[1:]: n for labels, n in self.counts.items() if labels[0] == what}
