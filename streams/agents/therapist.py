"""The therapist agent: one consumer of the inbox, the only writer of the table.

Thin by design: decode → domain → publish the decisions → store the new state.
Decisions are published (and acknowledged by the broker) before the new state is
written, so a crash in between replays the event and publishes the same
decisions again under the same keys, which downstream recognises, instead of
losing them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import faust

from domain import batching
from domain.decisions import Decision, RejectCommand
from domain.therapist_state import TherapistState
from streams.agents.batch_runs import BatchRuns
from streams.agents.inbox_items import Item, Refusal, across_partitions, by_therapist
from streams.agents.outbound import Outbound
from streams.agents.ticks import partition_of
from streams.kafka.current_event import processing
from streams.kafka.dead_letters import dead_letter_waiting
from streams.kafka.publishing import PublishRefused, until_published
from streams.kafka.table_gate import TableGate, TablesClosed
from streams.kafka.taking import noack_batches
from streams.kafka.topics import Topics
from streams.messages import inbox
from streams.messages.bundles import Bundle
from streams.messages.codec import dumps, state_to_wire
from streams.ops.logs import ThrottledWarning, bind_log_context, log_failure
from streams.ops.metrics import NO_METRICS, Metrics, Outcome
from streams.settings import Settings

log = logging.getLogger(__name__)

# Inbox records taken at most at once, and how long to wait for more: under load a
# batch fills in well under that; a lone record waits at most this long.
BATCH = 100
BATCH_WITHIN = 0.005

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


class TherapistAgent:
    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        table: faust.Table,
        clock: Callable[[], datetime],
        *,
        metrics: Metrics = NO_METRICS,
        gate: TableGate | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.table = table
        self.clock = clock
        self.metrics = metrics
        # Held by the app while it gives the table's partitions up (a stop, a rebalance).
        self.gate = gate if gate is not None else TableGate()
        self.runs = BatchRuns(settings, topics, table, clock, self.gate, metrics)
        self._last_sliced = -1  # the partition whose run had the last slice
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
        # Unacknowledged batches (streams.kafka.taking): each record is acknowledged
        # here, once its state is written.
        async for events in noack_batches(stream, BATCH, BATCH_WITHIN):
            try:
                async with self.gate.batch():
                    await self._take(events)
            except TablesClosed as exc:
                # Not acknowledged: they come again, after the restart or to the new owner.
                log.info("therapist agent: %d inbox record(s) left for later (%s)", len(events), exc)
                continue
            for event in events:
                await stream.ack(event)

    async def _take(self, events: Sequence[Any]) -> None:
        """A batch of inbox records: first every message, in order, then the ticks,
        and at most one slice of a batch run: the partitions with a run take turns,
        the others' runs get their continuation tick and go on when it comes back.
        So an acceptance waits for at most one slice, however many runs tick."""
        items: list[Item] = []
        ticks: dict[int, list[tuple[inbox.Tick, Any]]] = {}  # partition -> its ticks, in order
        for event in events:
            try:
                record = inbox.decode_record(event.value)
            except Exception as exc:
                await self._refuse(event.message, None, exc)
                continue
            if isinstance(record, inbox.Tick):
                ticks.setdefault(event.message.partition, []).append((record, event))
            elif isinstance(record, Bundle):
                items.extend(await self._members(record, event))
            else:
                items.append(Item(record, event))
        await self._apply_all(items)
        if not ticks:
            return
        working = [p for p, taken in ticks.items() if self.runs.has_work(p, max(t.now for t, _ in taken))]
        sliced = self._next_turn(working)
        for partition, taken in ticks.items():
            await self._ticks(partition, taken, slice_=partition == sliced or partition not in working)

    def _next_turn(self, partitions: list[int]) -> int | None:
        """Of ``partitions``, the first after the one whose run had the last slice."""
        if not partitions:
            return None
        later = [p for p in sorted(partitions) if p > self._last_sliced]
        self._last_sliced = later[0] if later else min(partitions)
        return self._last_sliced

    async def _members(self, bundle: Bundle[inbox.InboxMessage], event: Any) -> list[Item]:
        """A bundle's messages; only those of therapists of its own partition (a table
        write goes to the changelog partition of the record that caused it)."""
        partition = event.message.partition
        members = []
        for message in bundle.messages:
            item = Item(message, event, bundled=True)
            therapist_id = getattr(message, "therapist_id", None)
            if therapist_id is not None and partition_of(therapist_id, self.settings.partitions) == partition:
                members.append(item)
            else:
                await self._refuse(item.record, message, ValueError(f"not of inbox partition {partition}"))
        return members

    async def _ticks(self, partition: int, ticks: list[tuple[inbox.Tick, Any]], *, slice_: bool) -> None:
        """A partition's ticks of a batch: one slice of its batch run, or (``slice_``
        false) only its continuation."""
        tick, event = ticks[-1]  # the slice's table writes go to the partition's changelog
        with processing(event):
            try:
                await until_published(
                    partial(self.runs.on_ticks, partition, [tick for tick, _ in ticks], slice_=slice_),
                    self.broker_warning,
                )
            except TablesClosed:
                raise
            except Exception as exc:
                await self._refuse(event.message, tick, exc)

    async def _apply_all(self, items: Sequence[Item]) -> None:
        """Broker trouble is waited out (applying is safe to repeat: the state is
        written last). If publishing fails for good, or a bug shows, the messages are
        applied one by one, so that only the one at fault goes to the DLQ."""
        if not items:
            return
        try:
            refusals = await until_published(partial(self._apply, items), self.broker_warning)
        except TablesClosed:
            raise
        except Exception as exc:
            if len(items) == 1:
                refusals = [Refusal(items[0], exc)]
            else:
                log.warning("therapist agent: %d messages failed together (%s); one by one", len(items), exc)
                refusals = []
                for item in items:
                    try:
                        refusals += await until_published(partial(self._apply, [item]), self.broker_warning)
                    except TablesClosed:
                        raise
                    except Exception as alone:
                        refusals.append(Refusal(item, alone))
        for refusal in refusals:
            message = refusal.item.message
            bind_log_context(
                event_id=getattr(message, "event_id", None), therapist_id=getattr(message, "therapist_id", None)
            )
            await self._refuse(refusal.item.record, message, refusal.error)

    async def _refuse(self, record: Any, message: inbox.InboxMessage | None, exc: BaseException) -> None:
        """Dead-letter ``record`` (holding ``message``, if it could be decoded) for ``exc``."""
        refused = isinstance(exc, StateTooLarge | PublishRefused)
        if refused:
            reason = str(exc)
            log.warning("therapist agent: inbox message refused: %s", reason)
        else:
            log_failure(log, "therapist agent: cannot process an inbox message", exc)
            reason = f"internal error: {type(exc).__name__}"
        await dead_letter_waiting(
            self.topics.dlq,
            record,
            reason,
            self.clock(),
            self.broker_warning,
            event_id=getattr(message, "event_id", None),
            metrics=self.metrics,
        )
        if message is not None:
            self._count_input(message, Outcome.REJECTED if refused else Outcome.ERROR)

    async def handle(self, message: inbox.InboxMessage, partition: int) -> None:
        """One message, outside a stream (a refusal is raised)."""
        if isinstance(message, inbox.Tick):
            await self.batch_run(partition, message.now)
            return
        for refusal in await self._apply([Item(message, None)]):
            raise refusal.error

    async def _apply(self, items: Sequence[Item]) -> list[Refusal]:
        """Apply the messages in order: per therapist, the state is read once and
        written once, after every decision was published and acknowledged. A
        message that cannot be applied (the state would grow too large, or a bug)
        changes nothing and is returned; the others apply."""
        now = self.clock()
        outbound = Outbound(self.topics, self.settings.partitions, self.clock)
        refusals: list[Refusal] = []
        applied: list[tuple[inbox.InboxMessage, Outcome]] = []
        states: dict[int, tuple[TherapistState, Any]] = {}  # the new state, and the event it is written in
        for therapist_id, group in by_therapist(items).items():
            self.gate.check()
            stored = self.table.get(therapist_id)
            state = stored if stored is not None else TherapistState(therapist_id)
            for item in group:
                message = item.message
                event_id = getattr(message, "event_id", None)
                bind_log_context(event_id=event_id, therapist_id=therapist_id)
                try:
                    updated, decisions = self._decide(state, message, now)
                except Exception as exc:
                    refusals.append(Refusal(item, exc))
                    continue
                duplicate = event_id is not None and event_id in state.seen_events
                state = updated
                states[therapist_id] = (updated, item.event)
                await outbound.add(therapist_id, decisions, event_id)
                refused = any(isinstance(decision, RejectCommand) for decision in decisions)
                applied.append(
                    (message, Outcome.DUPLICATE if duplicate else Outcome.REJECTED if refused else Outcome.ACCEPTED)
                )
        await outbound.flush()
        self.gate.check()
        active = self._active_partitions()
        for therapist_id, (state, event) in across_partitions(states):
            if event is None:
                self.table[therapist_id] = state
            elif active is None or event.message.tp in active:
                with processing(event):
                    self.table[therapist_id] = state
            else:
                # A rebalance during the batch gave the partition to another worker,
                # which processes the record again.
                log.info("therapist agent: %s was reassigned; its state is left to its new owner", event.message.tp)
        for message, outcome in applied:
            self._count_input(message, outcome)
        return refusals

    def _active_partitions(self) -> set[Any] | None:
        """The partitions this worker processes now (None: a table without an app, in tests)."""
        app = getattr(self.table, "app", None)
        return None if app is None else set(app.assignor.assigned_actives())

    def _decide(
        self, state: TherapistState, message: inbox.InboxMessage, now: datetime
    ) -> tuple[TherapistState, list[Decision]]:
        """The state after ``message`` (a copy: ``state`` stays as it was) and the decisions."""
        updated = state.copy()
        decisions = self.apply(updated, message, now)
        if updated.memory_size() > PRUNE_ABOVE:
            updated.forget_before(now - self.settings.dedup_retention, now, self.settings.contact_interval)
        _check_size(updated)  # before anything is published: a refused message changes nothing
        return updated, decisions

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
        """The batch run due at ``now`` on this partition, all of it (streams.agents.batch_runs)."""
        await self.runs.run(partition, now)


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
