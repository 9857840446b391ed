"""Ingest agents: validate what comes in, dead-letter what is bad, and repartition
the rest by therapist into the inbox (CONTRACT §3, §5.8)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from domain.availability import InvalidAvailability, parse_availability
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from streams.kafka.dead_letters import dead_letter_waiting
from streams.kafka.publishing import PublishRefused, until_published
from streams.kafka.topics import Topics
from streams.messages import inbox
from streams.messages.bundles import Entry, Packed, pack, partition_of
from streams.messages.codec import encode
from streams.messages.inputs import (
    MATCHING_EVENTS,
    THERAPIST_EVENTS,
    MatchCreated,
    MatchStatusChanged,
    TherapistDeleted,
    TherapistUpserted,
)
from streams.messages.parsing import InputEvent, Rejection, parse_input
from streams.ops.logs import ThrottledWarning, bind_log_context, log_failure
from streams.ops.metrics import NO_METRICS, Metrics, Outcome
from streams.settings import Settings

log = logging.getLogger(__name__)

# Inputs validated between two turns of the event loop to the other agents.
YIELD_EVERY = 250


def match_message(event: InputEvent) -> tuple[inbox.Repartitioned, str | None]:
    payload = event.payload
    if isinstance(payload, MatchCreated):
        patient = payload.patient.model_dump(exclude={"registered_at"}, exclude_none=True)
        request = PlacementRequest(
            payload.placement_request_id, payload.patient_id, payload.patient.registered_at, patient
        )
        return inbox.MatchCreated(event.event_id, payload.therapist_id, request), None
    assert isinstance(payload, MatchStatusChanged)
    changed = inbox.MatchStatusChanged(
        event.event_id, payload.therapist_id, payload.placement_request_id, payload.patient_id, payload.new_status
    )
    return changed, None


def therapist_message(event: InputEvent) -> tuple[inbox.Repartitioned, str | None]:
    """The inbox message for a therapist event, and why its phone availability was
    refused, if it was: an invalid one is refused on its own (see IngestAgent), the
    rest still applies."""
    payload = event.payload
    if isinstance(payload, TherapistDeleted):
        return inbox.TherapistDeleted(event.event_id, payload.therapist_id, event.occurred_at), None
    assert isinstance(payload, TherapistUpserted)
    availability: Mapping[str, Any] = {}
    refused = None
    if payload.availability is not None:
        try:
            availability = parse_availability(payload.availability).as_mapping()
        except InvalidAvailability as refusal:
            refused = str(refusal)
    profile = TherapistProfile(
        therapist_id=payload.therapist_id,
        email=payload.email,
        first_name=payload.first_name,
        last_name=payload.last_name,
        title=payload.title,
        salutation=payload.salutation,
        phone=payload.phone,
        timezone=payload.timezone,
        contact_blocked=payload.contact_blocked,
        availability=availability,
    )
    upserted = inbox.TherapistUpserted(
        event.event_id, payload.therapist_id, event.occurred_at, profile, keep_availability=refused is not None
    )
    return upserted, refused


@dataclass(frozen=True)
class InputLimits:
    """What an input may be (issue 12): its size, each free-text field's size, and
    for directory events how far ``occurred_at`` may be ahead of this clock."""

    max_bytes: int
    max_text_bytes: int
    # None: occurred_at is not checked (its events do not order anything by it).
    future_tolerance: timedelta | None = None

    @classmethod
    def of(cls, settings: Settings, *, check_time: bool = False) -> InputLimits:
        return cls(
            settings.max_event_bytes,
            settings.max_text_field_bytes,
            settings.clock_skew_tolerance if check_time else None,
        )


class IngestAgent:
    """One input topic's validation and forwarding. The worker's input consumer
    (streams.agents.ingest_consumer) hands it each read with ``take`` and commits the
    read's offsets once ``take`` has returned."""

    def __init__(
        self,
        topics: Topics,
        known: dict[str, type],
        translate: Callable[[InputEvent], tuple[inbox.Repartitioned, str | None]],
        clock: Callable[[], datetime],
        limits: InputLimits,
        metrics: Metrics = NO_METRICS,
        partitions: int = 1,
    ) -> None:
        self.topics = topics
        self.partitions = partitions  # of the inbox
        # Counts what is refused here; the therapist agent counts what it applies.
        self.metrics = metrics
        self.known = known
        self.translate = translate
        self.clock = clock
        self.limits = limits
        self.broker_warning = ThrottledWarning(log)

    def _parse(self, value: bytes | None) -> InputEvent | Rejection:
        limits = self.limits
        parsed = parse_input(value, self.known, max_bytes=limits.max_bytes, max_text_bytes=limits.max_text_bytes)
        if isinstance(parsed, InputEvent) and limits.future_tolerance is not None:
            ahead = parsed.occurred_at - self.clock()
            if ahead > limits.future_tolerance:
                return Rejection(
                    reason=f"occurred_at: {parsed.occurred_at.isoformat()} is {_rounded(ahead)} ahead of this "
                    f"service's clock, more than the {_rounded(limits.future_tolerance)} allowed "
                    "(COMM_CLOCK_SKEW_TOLERANCE); check the producer's clock",
                    event_id=parsed.event_id,
                    event_type=parsed.event_type,
                )
        return parsed

    async def take(self, events: Sequence[Any]) -> None:
        """A batch of inputs (as streams.agents.ingest_consumer reads them):
        each forwarded to the inbox (and acknowledged by the broker) or dead-lettered."""
        entries = []
        for count, event in enumerate(events, 1):
            entry = await self._accept(event)
            if entry is not None:
                entries.append(entry)
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a large batch does not hold up the other agents
        await asyncio.gather(*(self._forward(run) for run in _by_partition(pack(entries))))

    async def _accept(self, event: Any) -> Entry[Any] | None:
        """The inbox message for one input, ready to pack; or None, the input having
        been dead-lettered."""
        message = event.message
        try:
            parsed = self._parse(message.value)
            bind_log_context(event_id=parsed.event_id)
            if isinstance(parsed, Rejection):
                await self.reject(message, parsed)
                self.metrics.input_event(message.topic, Outcome.REJECTED)
                return None
            forwarded, refused = self.translate(parsed)
            bind_log_context(event_id=parsed.event_id, therapist_id=forwarded.therapist_id)
            if refused is not None:
                # The availability goes to the DLQ for a person to fix; the rest applies.
                reason = (
                    f"payload.{refused} (the availability was refused; the rest of the event was applied, "
                    "so a corrected availability must be sent with a new event_id)"
                )
                await self.reject(
                    message, Rejection(reason=reason, event_id=parsed.event_id, event_type=parsed.event_type)
                )
            partition = partition_of(forwarded.therapist_id, self.partitions)
            return Entry(partition, str(forwarded.therapist_id).encode(), encode(forwarded), event)
        except Exception as exc:
            log_failure(log, "ingest: unexpected failure", exc)
            await self.reject(message, Rejection(reason=f"internal error: {type(exc).__name__}"))
            self.metrics.input_event(message.topic, Outcome.ERROR)
            return None

    async def _forward(self, records: list[Packed[Any]]) -> None:
        """One inbox partition's records, in order, each acknowledged by the broker
        before the next is sent. A record the broker refuses for good sends its
        inputs to the DLQ."""
        for record in records:

            async def publish(record: Packed[Any] = record) -> None:
                await (await self.topics.inbox.send(key=record.key, value=record.value, partition=record.partition))

            try:
                await until_published(publish, self.broker_warning)
            except Exception as exc:
                if isinstance(exc, PublishRefused):
                    reason = f"internal error: {exc}"
                else:
                    log_failure(log, "ingest: unexpected failure", exc)
                    reason = f"internal error: {type(exc).__name__}"
                for event in record.items:
                    await self.reject(event.message, Rejection(reason=reason))
                    self.metrics.input_event(event.message.topic, Outcome.ERROR)

    async def reject(self, message: Any, rejection: Rejection) -> None:
        # The reason names the field, never its value; the value travels in the record.
        log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, rejection.reason)
        await dead_letter_waiting(
            self.topics.dlq,
            message,
            rejection.reason,
            self.clock(),
            self.broker_warning,
            event_id=rejection.event_id,
            event_type=rejection.event_type,
            metrics=self.metrics,
        )


def _rounded(delta: timedelta) -> str:
    seconds = round(delta.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def matching_ingest(
    topics: Topics, clock: Callable[[], datetime], settings: Settings, metrics: Metrics = NO_METRICS
) -> IngestAgent:
    limits = InputLimits.of(settings)
    return IngestAgent(topics, MATCHING_EVENTS, match_message, clock, limits, metrics, settings.partitions)


def therapist_ingest(
    topics: Topics, clock: Callable[[], datetime], settings: Settings, metrics: Metrics = NO_METRICS
) -> IngestAgent:
    # Directory events are ordered per therapist: a clock far ahead must not outrank the next.
    limits = InputLimits.of(settings, check_time=True)
    return IngestAgent(topics, THERAPIST_EVENTS, therapist_message, clock, limits, metrics, settings.partitions)


def _by_partition(records: list[Packed[Any]]) -> list[list[Packed[Any]]]:
    runs: dict[int, list[Packed[Any]]] = {}
    for record in records:
        runs.setdefault(record.partition, []).append(record)
    return list(runs.values())
