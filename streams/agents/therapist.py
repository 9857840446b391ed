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
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

import faust

from domain import batching, schedule
from domain.decisions import (
    CONFIRMATION,
    BookCall,
    Decision,
    DropRequest,
    KeepRequestDetails,
    LiftSuppression,
    RejectCommand,
    SendEmail,
    SendManualEmail,
    SettleEmailedRequest,
    SuppressAddress,
    SyncDirectory,
)
from domain.placement import ACCEPTED
from domain.therapist_state import TherapistState, Undeliverable
from streams.agents.ticks import bookmark_key, partition_of
from streams.kafka.dead_letters import dead_letter_waiting
from streams.kafka.publishing import PublishRefused, until_published
from streams.kafka.topics import Topics
from streams.messages.codec import (
    dumps,
    loads,
    manual_email_command,
    profile_from_wire,
    profile_to_wire,
    request_from_wire,
    request_to_wire,
    send_email_command,
    state_to_wire,
)
from streams.messages.envelope import envelope
from streams.ops.logs import ThrottledWarning, log_failure
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
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.table = table
        self.clock = clock
        self.broker_warning = ThrottledWarning(log)

    async def __call__(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                message = loads(event.value)
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
                await dead_letter_waiting(self.topics.dlq, event.message, reason, self.clock(), self.broker_warning)

    async def handle(self, message: Mapping[str, Any], partition: int) -> None:
        kind = message["kind"]
        if kind == "tick":
            await self.batch_run(partition, datetime.fromisoformat(message["now"]))
            return
        therapist_id = int(message["therapist_id"])
        stored = self.table.get(therapist_id)
        state = stored.copy() if stored is not None else TherapistState(therapist_id)
        decisions = self._apply(state, kind, message, self.clock())
        if state.memory_size() > PRUNE_ABOVE:
            now = self.clock()
            state.forget_before(now - self.settings.dedup_retention, now, self.settings.contact_interval)
        _check_size(state)  # before anything is published: a refused event changes nothing
        await self._publish(therapist_id, decisions, message.get("event_id"))
        self.table[therapist_id] = state

    def _apply(self, state: TherapistState, kind: str, m: Mapping[str, Any], now: datetime) -> list[Decision]:
        if kind == "match_created":
            return state.match_created(m["event_id"], request_from_wire(m["request"]), now)
        if kind == "match_status_changed":
            return state.match_status_changed(
                m["event_id"], m["placement_request_id"], m["patient_id"], m["new_status"], now
            )
        if kind == "therapist_upserted":
            occurred_at = datetime.fromisoformat(m["occurred_at"])
            return state.therapist_upserted(
                m["event_id"],
                occurred_at,
                profile_from_wire(m["profile"]),
                now,
                keep_availability=bool(m.get("keep_availability")),
            )
        if kind == "therapist_deleted":
            return state.therapist_deleted(m["event_id"], datetime.fromisoformat(m["occurred_at"]), now)
        if kind == "email_sent":
            sent_at = datetime.fromisoformat(m["sent_at"])
            state.email_sent(m["email_key"], bool(m["limited"]), sent_at, self.settings.contact_interval)
            return []
        if kind == "email_failed":
            undeliverable = m.get("undeliverable")
            return state.email_failed(
                m["email_key"],
                tuple(request_from_wire(r) for r in m.get("returned", ())),
                None
                if undeliverable is None
                else Undeliverable(undeliverable["address"], undeliverable["reason"], undeliverable.get("email_id")),
                now,
            )
        if kind == "call_not_booked":
            state.call_not_booked(tuple(request_from_wire(r) for r in m["requests"]))
            return []
        if kind == "lift_email_suppression":
            return state.lift_suppression(m["event_id"], m["command"].get("reason"), now)
        if kind == "follow_up_email":
            sent = m.get("original_sent_at")
            return state.follow_up_email(
                batching.derived_key("follow_up", m["email_id"]),
                tuple(request_from_wire(r) for r in m["requests"]),
                datetime.fromisoformat(sent) if sent else None,
                now,
            )
        if kind == "create_email":
            command = m["command"]
            return state.manual_email(
                m["event_id"],
                command,
                command.get("queue", True),
                command.get("respect_contact_limit", True),
                bool(command.get("recipient_email")),
                now,
            )
        raise ValueError(f"unknown inbox message kind {kind!r}")

    async def batch_run(self, partition: int, now: datetime) -> None:
        """On a tick: if a scheduled run is due on this partition, email every
        eligible therapist of this partition, most-waiting first."""
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
            if updated.suppression is not None:
                # Email cannot reach them: with phone hours, a call for what waits.
                call = updated.plan_phone_call(
                    batching.derived_key("undeliverable_call", updated.therapist_id, run_at.isoformat()), run_at
                )
                if call is not None:
                    calls.append((updated, call))
                continue
            decision = updated.plan_contact_email(run_at, interval)
            if decision is not None:
                planned.append((updated, decision))
        # Whoever has waited longest goes first (their oldest request leads the batch).
        planned.sort(key=lambda item: (batching.oldest_registration(item[1].requests), item[0].therapist_id))
        pending = [
            await self._send_command(updated.therapist_id, send_email_command(decision, None, True))
            for updated, decision in planned
        ]
        pending.extend([await self._book_call(updated.therapist_id, call) for updated, call in calls])
        for future in pending:
            await future
        for updated, _ in [*planned, *calls]:
            self.table[updated.therapist_id] = updated
        self.table[key] = {"last_run": run_at.isoformat()}
        if planned:
            log.info(
                "batch run %s on partition %d: %d contact email(s) decided",
                run_at.isoformat(),
                partition,
                len(planned),
            )

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
            if isinstance(decision, SendEmail):
                limited = decision.kind != CONFIRMATION
                pending.append(await self._send_command(therapist_id, send_email_command(decision, causation, limited)))
            elif isinstance(decision, DropRequest):
                pending.append(await self._dropped(therapist_id, decision, causation))
                if decision.reason != ACCEPTED:  # an accepted one's details serve its confirmation
                    forget = {
                        "kind": "forget_request_details",
                        "therapist_id": therapist_id,
                        "placement_request_ids": [decision.placement_request_id],
                    }
                    pending.append(await self._send_command(therapist_id, dumps(forget)))
            elif isinstance(decision, KeepRequestDetails):
                # Not waited for (a wait per event would cost a broker round trip on
                # the hot path): Faust flushes it before the event's offset is
                # committed, and a replay of the event sends it again.
                details = {"kind": "request_details", "therapist_id": therapist_id}
                details["request"] = request_to_wire(decision.request)
                await self._send_command(therapist_id, dumps(details))
            elif isinstance(decision, BookCall):
                pending.append(await self._book_call(therapist_id, decision))
            elif isinstance(decision, SuppressAddress):
                payload = {
                    "therapist_id": therapist_id,
                    "address_hash": address_hash(decision.address),
                    "reason": decision.reason,
                    "email_id": decision.email_id,
                }
                key = batching.derived_key("email_suppressed", decision.email_key)
                pending.append(await self._event(therapist_id, "communication.email_suppressed", payload, key, None))
            elif isinstance(decision, LiftSuppression):
                payload = {
                    "therapist_id": therapist_id,
                    "address_hash": address_hash(decision.address),
                    "reason": decision.reason,
                }
                if decision.comment:
                    payload["comment"] = decision.comment
                key = batching.derived_key("email_suppression_lifted", decision.causation_id)
                pending.append(
                    await self._event(
                        therapist_id, "communication.email_suppression_lifted", payload, key, decision.causation_id
                    )
                )
            elif isinstance(decision, SendManualEmail):
                pending.append(await self._send_command(therapist_id, manual_email_command(therapist_id, decision)))
            elif isinstance(decision, SyncDirectory):
                directory = {
                    "kind": "therapist_profile",
                    "therapist_id": therapist_id,
                    "deleted": decision.deleted,
                    "profile": profile_to_wire(decision.profile) if decision.profile else None,
                }
                pending.append(await self._send_command(therapist_id, dumps(directory)))
            elif isinstance(decision, RejectCommand):
                pending.append(await self._rejected(therapist_id, decision))
            elif isinstance(decision, SettleEmailedRequest):
                pending.append(
                    await self._send_command(
                        therapist_id,
                        dumps(
                            {
                                "kind": "settle_request",
                                "therapist_id": therapist_id,
                                "placement_request_id": decision.placement_request_id,
                                "status": decision.status,
                            }
                        ),
                    )
                )
        for future in pending:
            await future

    async def _book_call(self, therapist_id: int, call: BookCall) -> Any:
        command = {
            "kind": "book_call",
            "therapist_id": therapist_id,
            "call_key": call.call_key,
            "reason": call.reason,
            "requests": [[r.placement_request_id, r.patient_id, r.registered_at.isoformat()] for r in call.requests],
            "decided_at": call.decided_at.isoformat(),
        }
        return await self._send_command(therapist_id, dumps(command))

    async def _event(
        self, therapist_id: int, event_type: str, payload: dict[str, Any], event_id: str, causation: str | None
    ) -> Any:
        document = envelope(event_type, payload, event_id=event_id, occurred_at=self.clock(), causation_id=causation)
        return await self.topics.events.send(key=str(therapist_id).encode(), value=dumps(document))

    async def _send_command(self, therapist_id: int, value: bytes) -> Any:
        return await self.topics.send_commands.send(key=str(therapist_id).encode(), value=value)

    async def _rejected(self, therapist_id: int, rejection: RejectCommand) -> Any:
        payload = {
            "therapist_id": therapist_id,
            "command_id": rejection.command_id,
            "command_type": rejection.command_type,
            "reason": rejection.reason,
        }
        key = batching.derived_key("command_rejected", rejection.command_id)
        return await self._event(therapist_id, "communication.command_rejected", payload, key, rejection.command_id)

    async def _dropped(self, therapist_id: int, drop: DropRequest, causation: str | None) -> Any:
        payload = {
            "therapist_id": therapist_id,
            "placement_request_id": drop.placement_request_id,
            "patient_id": drop.patient_id,
            "reason": drop.reason,
        }
        key = batching.derived_key("placement_dropped", causation, drop.placement_request_id)
        return await self._event(therapist_id, "communication.placement_dropped", payload, key, causation)


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
