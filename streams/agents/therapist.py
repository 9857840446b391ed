"""The therapist agent: one consumer of the inbox, the only writer of the table.

Thin by design: decode → domain → publish the decisions → store the new state.
Decisions are published (and acknowledged by the broker) before the new state is
written, so a crash in between replays the event and publishes the same
decisions again under the same keys, which downstream recognises, instead of
losing them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, tzinfo
from functools import partial
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import faust

from domain import batching, schedule, send_window
from domain.decisions import (
    CONFIRMATION,
    AlertStaff,
    BookCall,
    Decision,
    DropRequest,
    ForgetRequestDetails,
    KeepRequestDetails,
    LiftSuppression,
    RejectCommand,
    ReportBounce,
    ReportContactPreference,
    SendEmail,
    SendManualEmail,
    SettleEmailedRequest,
    SuppressAddress,
    SyncDirectory,
)
from domain.placement import ACCEPTED
from domain.therapist_state import TherapistState
from streams.agents.ticks import bookmark_key, partition_of
from streams.kafka.dead_letters import dead_letter_waiting
from streams.kafka.publishing import PublishRefused, until_published
from streams.kafka.topics import Topics
from streams.messages import inbox, send_commands
from streams.messages.codec import dumps, encode, state_to_wire
from streams.messages.outputs import (
    Alert,
    BounceRecorded,
    BounceType,
    CommandRejected,
    ContactChannel,
    ContactPreferenceChanged,
    DropReason,
    EmailSuppressed,
    EmailSuppressionLifted,
    LiftReason,
    OutputPayload,
    PlacementDropped,
    PreferenceSource,
    Severity,
    encode_event,
)
from streams.ops.logs import ThrottledWarning, bind_log_context, log_failure
from streams.ops.metrics import NO_METRICS, Metrics, Outcome
from streams.settings import Settings

log = logging.getLogger(__name__)

# Replay memory is pruned once a therapist's grows past this many records.
PRUNE_ABOVE = 200

# A therapist's table value must stay far below the broker's message limit (1 MB by
# default): its changelog record is written by Faust's producer in the background,
# where a refusal would stop the worker. Values are measured once they hold this
# many records, and an event that would grow one past MAX_STATE_BYTES is refused.
MEASURE_ABOVE = 1000
MAX_STATE_BYTES = 512 * 1024


class StateTooLarge(Exception):
    pass


def address_hash(address: str) -> str:
    """Names an address in events without spelling it out."""
    return hashlib.sha256(address.strip().casefold().encode("utf-8")).hexdigest()


class TherapistAgent:
    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        table: faust.Table,
        clock: Callable[[], datetime],
        *,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.table = table
        self.clock = clock
        self.metrics = metrics
        # Inputs are counted here, once applied (the ingest and command agents count
        # what they refuse), under the topic they came in on.
        self.sources: dict[type, str] = {
            inbox.MatchCreated: settings.topic_matching,
            inbox.MatchStatusChanged: settings.topic_matching,
            inbox.TherapistUpserted: settings.topic_therapists,
            inbox.TherapistDeleted: settings.topic_therapists,
            inbox.CreateEmail: settings.topic_commands,
            inbox.LiftEmailSuppression: settings.topic_commands,
            inbox.SetContactPreference: settings.topic_commands,
        }
        self.broker_warning = ThrottledWarning(log)

    async def __call__(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            message: inbox.InboxMessage | None = None
            try:
                message = inbox.decode(event.value)
                bind_log_context(
                    event_id=getattr(message, "event_id", None), therapist_id=getattr(message, "therapist_id", None)
                )
                # Broker trouble is waited out (handling is safe to repeat: the
                # state is written last); anything else is a bug for a person.
                await until_published(partial(self.handle, message, event.message.partition), self.broker_warning)
            except Exception as exc:
                # A bug must not stop the stream; the message goes to the DLQ for a person.
                if isinstance(exc, StateTooLarge | PublishRefused):
                    reason = str(exc)
                    log.warning("therapist agent: inbox message refused: %s", reason)
                else:
                    log_failure(log, "therapist agent: cannot process an inbox message", exc)
                    reason = f"internal error: {type(exc).__name__}"
                await dead_letter_waiting(
                    self.topics.dlq, event.message, reason, self.clock(), self.broker_warning, metrics=self.metrics
                )
                if message is not None:
                    refused = isinstance(exc, StateTooLarge | PublishRefused)
                    self._count_input(message, Outcome.REJECTED if refused else Outcome.ERROR)

    async def handle(self, message: inbox.InboxMessage, partition: int) -> None:
        if isinstance(message, inbox.Tick):
            await self.batch_run(partition, message.now)
            return
        therapist_id = message.therapist_id
        stored = self.table.get(therapist_id)
        event_id = getattr(message, "event_id", None)
        duplicate = stored is not None and event_id in stored.seen_events
        state = stored.copy() if stored is not None else TherapistState(therapist_id)
        decisions = self.apply(state, message, self.clock())
        if state.memory_size() > PRUNE_ABOVE:
            now = self.clock()
            state.forget_before(now - self.settings.dedup_retention, now, self.settings.contact_interval)
        _check_size(state)  # before anything is published: a refused event changes nothing
        await self._publish(therapist_id, decisions, event_id)
        self.table[therapist_id] = state
        refused = any(isinstance(decision, RejectCommand) for decision in decisions)
        self._count_input(
            message, Outcome.DUPLICATE if duplicate else Outcome.REJECTED if refused else Outcome.ACCEPTED
        )

    def _count_input(self, message: inbox.InboxMessage, outcome: Outcome) -> None:
        if isinstance(message, inbox.SetContactPreference) and message.source != "command":
            return  # the one-click opt-out came over HTTP, not on an input topic
        source = self.sources.get(type(message))
        if source is not None:
            self.metrics.input_event(source, outcome)

    def apply(self, state: TherapistState, message: inbox.InboxMessage, now: datetime) -> list[Decision]:
        """What the therapist's rules decide on ``message`` (``state`` changes in place)."""
        match message:
            case inbox.MatchCreated(event_id=event_id, request=request):
                return state.match_created(event_id, request, now)
            case inbox.MatchStatusChanged(event_id=event_id, new_status=new_status):
                return state.match_status_changed(
                    event_id, message.placement_request_id, message.patient_id, new_status, now
                )
            case inbox.TherapistUpserted(event_id=event_id, occurred_at=occurred_at, profile=profile):
                return state.therapist_upserted(
                    event_id, occurred_at, profile, now, keep_availability=message.keep_availability
                )
            case inbox.TherapistDeleted(event_id=event_id, occurred_at=occurred_at):
                return state.therapist_deleted(event_id, occurred_at, now)
            case inbox.EmailSent(email_key=email_key, limited=limited, sent_at=sent_at):
                state.email_sent(email_key, limited, sent_at, self.settings.contact_interval)
                return []
            case inbox.EmailFailed(email_key=email_key, returned=returned, undeliverable=undeliverable):
                return state.email_failed(email_key, returned, undeliverable, now)
            case inbox.CallNotBooked(requests=requests):
                state.call_not_booked(requests)
                return []
            case inbox.LiftEmailSuppression(event_id=event_id, reason=reason):
                return state.lift_suppression(event_id, reason, now)
            case inbox.BounceRecorded(command_id=command_id, bounce=bounce, returned=returned):
                return state.bounce_recorded(command_id, bounce, returned, self.settings.soft_bounce_limit, now)
            case inbox.SetContactPreference(event_id=event_id, channel=channel, source=source):
                return state.set_contact_preference(event_id, channel, source, message.comment, message.address, now)
            case inbox.FollowUpEmail(email_id=email_id, requests=requests, original_sent_at=sent_at):
                return state.follow_up_email(batching.derived_key("follow_up", email_id), requests, sent_at, now)
            case inbox.CreateEmail(event_id=event_id, content=content):
                return state.manual_email(event_id, content, now)
            case inbox.Tick():
                raise ValueError("a tick is not about one therapist")

    async def batch_run(self, partition: int, now: datetime) -> None:
        """On a tick: if a scheduled run is due on this partition, email every
        eligible therapist of this partition, most-waiting first (or book a call for
        those whom email does not reach or who asked for phone only). A therapist
        whose send window (``COMM_SEND_WINDOW``) is closed at the run is left out:
        the requests wait for the first run inside it."""
        started = time.perf_counter()
        key = bookmark_key(partition)
        bookmark = self.table.get(key)
        plan = self.settings.batch_schedule
        if bookmark is None:
            # First tick here: runs start from now on; none are invented for the past.
            self.table[key] = {"last_run": plan.latest_at_or_before(now).isoformat()}
            return
        run_at = schedule.due_run(plan, datetime.fromisoformat(bookmark["last_run"]), now)
        if run_at is None:
            return
        interval = self.settings.contact_interval
        planned: list[tuple[TherapistState, SendEmail]] = []
        calls: list[tuple[TherapistState, BookCall]] = []
        for state in self._states_of(partition):
            if not state.pending:
                continue
            updated = state.copy()
            reason = updated.phone_reason
            if reason is not None:
                # Email cannot reach them, or they want none: with phone hours, a call for what waits.
                call = updated.plan_phone_call(
                    batching.derived_key(f"{reason}_call", updated.therapist_id, run_at.isoformat()), run_at
                )
                if call is not None:
                    calls.append((updated, call))
                continue
            if not self._window_open(updated, run_at):
                continue
            decision = updated.plan_contact_email(run_at, interval)
            if decision is not None:
                planned.append((updated, decision))
        # Whoever has waited longest goes first (their oldest request leads the batch).
        planned.sort(key=lambda item: (batching.oldest_registration(item[1].requests), item[0].therapist_id))
        pending = [await self._send(send_commands.SendEmail.decided(decision, None, True)) for _, decision in planned]
        pending.extend(
            [await self._send(send_commands.BookCall.decided(updated.therapist_id, call)) for updated, call in calls]
        )
        for future in pending:
            await future
        for updated, _ in [*planned, *calls]:
            self.table[updated.therapist_id] = updated
        self.table[key] = {"last_run": run_at.isoformat()}
        self.metrics.batch_run_took(time.perf_counter() - started)
        if planned:
            log.info(
                "batch run %s on partition %d: %d contact email(s) decided",
                run_at.isoformat(),
                partition,
                len(planned),
            )

    def _window_open(self, state: TherapistState, at: datetime) -> bool:
        window = self.settings.send_window
        if window is None:
            return True
        return send_window.is_open(window, self._zone_of(state), at)

    def _zone_of(self, state: TherapistState) -> tzinfo:
        """The therapist's time zone (validated at ingest), else ``COMM_TIMEZONE``."""
        name = state.profile.timezone if state.profile is not None else None
        try:
            return ZoneInfo(name) if name else cast(tzinfo, self.settings.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return cast(tzinfo, self.settings.timezone)

    def _states_of(self, partition: int) -> Iterable[TherapistState]:
        """The therapists whose inbox messages arrive on ``partition`` (the table may
        also hold standby copies of other partitions' therapists)."""
        partitions = self.settings.partitions
        for key, value in list(self.table.items()):
            if isinstance(value, TherapistState) and partition_of(key, partitions) == partition:
                yield value

    async def _publish(self, therapist_id: int, decisions: list[Decision], causation: str | None) -> None:
        pending = []
        for decision in decisions:
            match decision:
                case SendEmail():
                    limited = decision.kind != CONFIRMATION
                    pending.append(await self._send(send_commands.SendEmail.decided(decision, causation, limited)))
                case DropRequest():
                    pending.append(await self._dropped(therapist_id, decision, causation))
                    if decision.reason != ACCEPTED:  # an accepted one's details serve its confirmation
                        forget = send_commands.ForgetRequestDetails(therapist_id, (decision.placement_request_id,))
                        pending.append(await self._send(forget))
                case KeepRequestDetails(request=request):
                    # Not waited for (a wait per event would cost a broker round trip on
                    # the hot path): Faust flushes it before the event's offset is
                    # committed, and a replay of the event sends it again.
                    await self._send(send_commands.RequestDetails(therapist_id, request))
                case BookCall():
                    pending.append(await self._send(send_commands.BookCall.decided(therapist_id, decision)))
                case SuppressAddress():
                    suppressed = EmailSuppressed(
                        therapist_id=therapist_id,
                        address_hash=address_hash(decision.address),
                        reason=decision.reason,
                        email_id=decision.email_id,
                    )
                    key = batching.derived_key("email_suppressed", decision.email_key)
                    pending.append(await self._event(suppressed, key, None))
                case LiftSuppression():
                    lifted = EmailSuppressionLifted(
                        therapist_id=therapist_id,
                        address_hash=address_hash(decision.address),
                        reason=cast(LiftReason, decision.reason),
                        comment=decision.comment or None,
                    )
                    key = batching.derived_key("email_suppression_lifted", decision.causation_id)
                    pending.append(await self._event(lifted, key, decision.causation_id))
                case ReportBounce():
                    recorded = BounceRecorded(
                        therapist_id=therapist_id,
                        email_id=decision.email_id,
                        type=cast(BounceType, decision.type),
                        soft_bounce_count=decision.soft_bounce_count,
                        suppressed=decision.suppressed,
                    )
                    key = batching.derived_key("bounce_recorded", decision.command_id)
                    pending.append(await self._event(recorded, key, decision.command_id))
                case ReportContactPreference():
                    changed = ContactPreferenceChanged(
                        therapist_id=therapist_id,
                        channel=cast(ContactChannel, decision.channel),
                        source=cast(PreferenceSource, decision.source),
                        comment=decision.comment or None,
                    )
                    key = batching.derived_key("contact_preference_changed", decision.causation_id)
                    pending.append(await self._event(changed, key, causation))
                case AlertStaff():
                    alert = Alert(
                        therapist_id=therapist_id,
                        severity=cast(Severity, decision.severity),
                        code=decision.code,
                        email_id=decision.email_id,
                        message=decision.message,
                    )
                    pending.append(await self._event(alert, batching.derived_key("alert", decision.key), causation))
                case SendManualEmail():
                    pending.append(await self._send(send_commands.SendEmail.manual(therapist_id, decision)))
                case SyncDirectory(profile=profile, deleted=deleted):
                    pending.append(await self._send(send_commands.DirectoryUpdate(therapist_id, profile, deleted)))
                case RejectCommand():
                    pending.append(await self._rejected(therapist_id, decision))
                case SettleEmailedRequest(placement_request_id=request_id, status=status):
                    pending.append(await self._send(send_commands.SettleRequest(therapist_id, request_id, status)))
                case ForgetRequestDetails(placement_request_ids=request_ids):
                    pending.append(await self._send(send_commands.ForgetRequestDetails(therapist_id, request_ids)))
        for future in pending:
            await future

    async def _event(self, payload: OutputPayload, event_id: str, causation: str | None) -> Any:
        value = encode_event(payload, event_id=event_id, occurred_at=self.clock(), causation_id=causation)
        return await self.topics.events.send(key=str(payload.therapist_id).encode(), value=value)

    async def _send(self, command: send_commands.SendCommand) -> Any:
        return await self.topics.send_commands.send(key=str(command.therapist_id).encode(), value=encode(command))

    async def _rejected(self, therapist_id: int, rejection: RejectCommand) -> Any:
        payload = CommandRejected(
            therapist_id=therapist_id,
            command_id=rejection.command_id,
            command_type=rejection.command_type,
            reason=rejection.reason,
        )
        key = batching.derived_key("command_rejected", rejection.command_id)
        return await self._event(payload, key, rejection.command_id)

    async def _dropped(self, therapist_id: int, drop: DropRequest, causation: str | None) -> Any:
        payload = PlacementDropped(
            therapist_id=therapist_id,
            placement_request_id=drop.placement_request_id,
            patient_id=drop.patient_id,
            reason=cast(DropReason, drop.reason),
        )
        key = batching.derived_key("placement_dropped", causation, drop.placement_request_id)
        return await self._event(payload, key, causation)


def _check_size(state: TherapistState) -> None:
    records = len(state.pending) + len(state.awaiting_confirmation) + state.memory_size()
    if records < MEASURE_ABOVE:
        return
    size = len(dumps(state_to_wire(state)))
    if size > MAX_STATE_BYTES:
        raise StateTooLarge(
            f"therapist {state.therapist_id}'s state would grow to {size} bytes (limit {MAX_STATE_BYTES}) "
            f"with {len(state.pending)} requests waiting; the event was not applied"
        )
