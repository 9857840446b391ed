"""The sender agent: turns send commands into stored, queued emails (and keeps the
database copy of the therapist directory).

Storing is idempotent (the email key is unique), so a replayed command is a
no-op. Commands are stored in batches, one transaction each, and acknowledged
only after their batch is stored: a worker stopped during a database outage
leaves them to be delivered again, never acknowledged unstored. While the
database is unavailable the agent waits and retries; a command that fails for
any other reason goes to the DLQ (and the therapist agent is told that the email
it decided will not come, so the therapist's weekly window is not held forever).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, assert_never

import faust
from sqlalchemy.orm import Session

from domain.decisions import CONTACT_REQUEST
from domain.delivery_order import priority_of
from streams.delivery.wakeups import Wakeups
from streams.email import context
from streams.email.rendering import Renderer
from streams.kafka.dead_letters import dead_letter_waiting
from streams.kafka.topics import Topics
from streams.messages.codec import encode, loads
from streams.messages.inbox import EmailFailed
from streams.messages.send_commands import (
    BookCall,
    DirectoryUpdate,
    ForgetRequestDetails,
    RequestDetails,
    SendCommand,
    SendEmail,
    SettleRequest,
)
from streams.messages.send_commands import decode as decode_send_command
from streams.ops.logs import ThrottledWarning, bind_log_context, log_failure
from streams.ops.metrics import NO_METRICS, Metrics
from streams.persistence import call_booking, directory, email_creation, outbox, settled_requests, waiting_requests
from streams.persistence.db import Database, run_retrying
from streams.settings import Settings

log = logging.getLogger(__name__)

# Send commands taken at once, stored in transactions of STORE_GROUP; how long to
# wait to fill a batch (a batch is full at once under load, so this only delays a
# lone command).
BATCH = 500
STORE_GROUP = 100
BATCH_WITHIN = 0.005


class SenderAgent:
    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        database: Database,
        renderer: Renderer,
        channels: outbox.Channels,
        wakeups: Wakeups,
        clock: Callable[[], datetime],
        policy: call_booking.CallPolicy,
        identity: context.Identity,
        *,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.topics = topics
        self.database = database
        self.renderer = renderer
        self.channels = channels
        self.wakeups = wakeups
        self.clock = clock
        self.identity = identity
        self.metrics = metrics
        self.database_warning = ThrottledWarning(log)

    async def __call__(self, stream: faust.StreamT) -> None:
        # noack_take: the events are acknowledged here, after their batch is stored.
        async for events in stream.noack_take(BATCH, within=BATCH_WITHIN):
            # The therapists with an urgent email (a confirmation, say) first: under a
            # batch run's burst their emails are stored, and delivered, before the
            # contact requests taken with them.
            for group in store_groups(*urgent_first(events)):
                try:
                    await self._store(group)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Something in the group can never be stored: one by one, so
                    # only that one goes to the DLQ.
                    for event in group:
                        await self._one(event)
                self.wakeups.work_added()
            for event in events:
                await stream.ack(event)

    async def _one(self, event: Any) -> None:
        try:
            await self._store([event])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_failure(log, "sender agent: cannot carry out a command", exc)
            await dead_letter_waiting(
                self.topics.dlq,
                event.message,
                f"internal error: {type(exc).__name__}",
                self.clock(),
                self.database_warning,
                metrics=self.metrics,
            )
            await self._abandon(event)

    async def _abandon(self, event: Any) -> None:
        """A decided email that will not be created must not hold the window, even
        when the command is too broken to decode: its key and therapist suffice."""
        decided = _decided_email(event.value)
        if decided is not None:
            therapist_id, email_key = decided
            failed = EmailFailed(therapist_id, email_key)
            await self.topics.inbox.send(key=str(therapist_id).encode(), value=encode(failed))

    async def _store(self, events: list[Any]) -> None:
        commands = [decode_send_command(event.value) for event in events]
        await run_retrying(
            self.database,
            self._carry_out,
            commands,
            self.clock(),
            warn=lambda message, *args: self.database_warning("sender agent: " + message, *args),
        )

    def _carry_out(self, session: Session, commands: list[SendCommand], now: datetime) -> None:
        """All commands of a batch, in their order, in one transaction. A run of
        emails is stored in one call, and so is a run of request details."""
        emails: list[SendEmail] = []
        details: list[RequestDetails] = []

        def store_runs() -> None:
            if details:  # before anything that may need them
                waiting_requests.keep(session, details, now)
                details.clear()
            if emails:
                ids = email_creation.store_send_commands(
                    session, emails, self.renderer.render, self.identity, self.channels, now
                )
                stored = sum(1 for email_id in ids if email_id is not None)
                if stored:
                    log.info("%d email(s) stored", stored)
                emails.clear()

        for command in commands:
            bind_log_context(therapist_id=getattr(command, "therapist_id", None))
            match command:
                case SendEmail():
                    if details:
                        store_runs()
                    emails.append(command)
                case RequestDetails():
                    if emails:
                        store_runs()
                    details.append(command)
                case _:
                    store_runs()
                    self._carry_out_one(session, command, now)
        store_runs()

    def _carry_out_one(
        self,
        session: Session,
        command: SettleRequest | DirectoryUpdate | ForgetRequestDetails | BookCall,
        now: datetime,
    ) -> None:
        match command:
            case SettleRequest():
                settled_requests.settle_request(session, command, self.channels, now)
            case DirectoryUpdate():
                directory.update_directory(session, command, self.channels, now)
            case ForgetRequestDetails():
                waiting_requests.forget(session, command.placement_request_ids)
            case BookCall():
                call_booking.book_instead_of_email(session, command, self.policy, self.channels, now)
            case _:
                assert_never(command)


def store_groups(*parts: list[Any]) -> list[list[Any]]:
    """Each part in transactions of at most STORE_GROUP commands, part after part."""
    return [part[start : start + STORE_GROUP] for part in parts for start in range(0, len(part), STORE_GROUP)]


def urgent_first(events: list[Any]) -> tuple[list[Any], list[Any]]:
    """``events`` split: those of the therapists that have an urgent email among them
    (any kind the delivery order puts before contact requests), then the others.
    Each therapist's commands keep their order (an email may need the request
    details sent before it); only the order between therapists changes."""
    urgent: set[int] = set()
    therapists: list[int | None] = []
    for event in events:
        wire = _wire(event.value)
        therapist_id = _therapist_of(wire)
        therapists.append(therapist_id)
        if therapist_id is not None and wire.get("kind") == SendEmail.KIND and _is_urgent(wire.get("email_kind")):
            urgent.add(therapist_id)
    if not urgent:
        return [], events
    first = [e for e, t in zip(events, therapists, strict=True) if t in urgent]
    return first, [e for e, t in zip(events, therapists, strict=True) if t not in urgent]


def _wire(raw: bytes | None) -> dict[str, Any]:
    try:
        wire = loads(raw or b"")
    except ValueError:
        return {}
    return wire if isinstance(wire, dict) else {}


def _therapist_of(wire: dict[str, Any]) -> int | None:
    therapist = wire.get("therapist")
    therapist_id = therapist.get("therapist_id") if isinstance(therapist, dict) else wire.get("therapist_id")
    return therapist_id if isinstance(therapist_id, int) else None


def _is_urgent(kind: Any) -> bool:
    return isinstance(kind, str) and priority_of(kind) < priority_of(CONTACT_REQUEST)


def _decided_email(raw: bytes | None) -> tuple[int, str] | None:
    """The therapist and key of the email a ``send_email`` command decided, read as
    loosely as possible (the command may be what could not be decoded)."""
    try:
        command = decode_send_command(raw or b"")
    except Exception:
        try:
            wire = loads(raw or b"")
            if wire.get("kind") == SendEmail.KIND and wire.get("email_key"):
                return int(wire["therapist"]["therapist_id"]), str(wire["email_key"])
        except Exception:  # not even that: there is no decided email to abandon
            return None
        return None
    if isinstance(command, SendEmail) and command.email_key:
        return command.therapist_id, command.email_key
    return None
