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
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, assert_never

import faust
from sqlalchemy.orm import Session

from domain.decisions import CONTACT_REQUEST
from domain.delivery_order import priority_of
from streams.agents.send_backlog import Backlog
from streams.delivery.wakeups import Wakeups
from streams.email import context
from streams.email.rendering import Renderer
from streams.kafka.dead_letters import dead_letter_waiting
from streams.kafka.topics import Topics
from streams.messages.bundles import KIND as BUNDLE
from streams.messages.bundles import MemberRecord
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
    unpack,
)
from streams.ops.logs import ThrottledWarning, bind_log_context, log_failure
from streams.ops.metrics import NO_METRICS, Metrics
from streams.persistence import call_booking, directory, email_creation, outbox, settled_requests, waiting_requests
from streams.persistence.db import Database, run_retrying
from streams.settings import Settings

log = logging.getLogger(__name__)

# Records taken at once (each one command or a bundle of them), and how long to wait
# to fill a batch (under load a batch is full at once, so this only delays a lone
# command); at most BACKLOG records held unstored (and about 32 MiB: see
# send_backlog.Backlog); commands stored in transactions
# of at most STORE_GROUP (an urgent email waits for at most one group in hand).
BATCH = 100
BATCH_WITHIN = 0.005
BACKLOG = 1000
STORE_GROUP = 100


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
        # Records are taken while earlier ones are stored (streams.agents.send_backlog),
        # and acknowledged (noack_take) once stored, in the order taken.
        backlog = Backlog(BACKLOG, STORE_GROUP, is_urgent)
        storing = asyncio.create_task(self._store_backlog(backlog, stream))
        try:
            async for events in stream.noack_take(BATCH, within=BATCH_WITHIN):
                for event in events:
                    try:
                        commands = unpack(event.value)
                    except Exception:
                        commands = None  # dead-lettered by the storer, in its turn
                    backlog.add(event, commands)
                if backlog.full() or storing.done():
                    await _unless_done(backlog.room(), storing)
            backlog.close()
            await storing
        finally:
            storing.cancel()

    async def _store_backlog(self, backlog: Backlog, stream: faust.StreamT) -> None:
        while (group := await backlog.next_group()) is not None:
            if group.unreadable is not None:
                await self._one(group.unreadable.event)
                done = backlog.stored(group)
            elif not group.commands:
                done = backlog.stored(group)
            else:
                try:
                    await self._store([command for _, command in group.commands])
                    done = backlog.stored(group)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Something can never be stored: the group's records one at a
                    # time, each command alone, so only the one at fault goes to the
                    # DLQ (storing again what was stored changes nothing).
                    records = group.records()
                    for taken in records:
                        await self._one(taken.event)
                    done = backlog.settled(records)
                self.wakeups.work_added()
            for event in done:
                await stream.ack(event)

    async def _one(self, event: Any) -> None:
        """One record's commands (one, or a bundle), each stored on its own."""
        message = event.message
        try:
            commands = unpack(event.value)
        except Exception as exc:
            await self._dead_letter(message, exc)
            for therapist_id, email_key in _decided_emails(event.value):
                await self._abandon(therapist_id, email_key)
            return
        for command in commands:
            try:
                await self._store([command])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if len(commands) > 1:
                    key = str(command.therapist_id).encode()
                    message = MemberRecord(message.topic, message.partition, message.offset, key, encode(command))
                await self._dead_letter(message, exc)
                if isinstance(command, SendEmail) and command.email_key:
                    await self._abandon(command.therapist_id, command.email_key)

    async def _dead_letter(self, message: Any, exc: Exception) -> None:
        log_failure(log, "sender agent: cannot carry out a command", exc)
        await dead_letter_waiting(
            self.topics.dlq,
            message,
            f"internal error: {type(exc).__name__}",
            self.clock(),
            self.database_warning,
            metrics=self.metrics,
        )

    async def _abandon(self, therapist_id: int, email_key: str) -> None:
        """A decided email that will not be created must not hold the window."""
        failed = EmailFailed(therapist_id, email_key)
        await self.topics.inbox.send(key=str(therapist_id).encode(), value=encode(failed))

    async def _store(self, commands: list[SendCommand]) -> None:
        await run_retrying(
            self.database,
            self._carry_out,
            commands,
            self.clock(),
            warn=lambda message, *args: self.database_warning("sender agent: " + message, *args),
        )

    def _carry_out(self, session: Session, commands: list[SendCommand], now: datetime) -> None:
        """All commands of a batch in one transaction, each therapist's in their
        order. A run of emails is stored in one call, and so is a run of request
        details (``in_runs`` makes the runs long)."""
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

        for command in in_runs(commands):
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


def in_runs(commands: list[SendCommand]) -> list[SendCommand]:
    """``commands`` reordered so that emails, and request details, come in long runs:
    every therapist's first command, then every second one, and so on, each round
    with the details first, then the emails, then the rest. Each therapist's commands
    keep their order; the order between therapists does not matter (a confirmation
    comes as a settled request and an email: 50 of them make one run of 50 emails,
    not 50 runs of one)."""
    by_therapist: dict[int, list[SendCommand]] = {}
    for command in commands:
        by_therapist.setdefault(command.therapist_id, []).append(command)
    if len(by_therapist) < 2:
        return commands
    rounds: list[SendCommand] = []
    for depth in range(max(len(own) for own in by_therapist.values())):
        round_ = [own[depth] for own in by_therapist.values() if depth < len(own)]
        rounds += sorted(round_, key=_run_order)
    return rounds


def _run_order(command: SendCommand) -> int:
    return 0 if isinstance(command, RequestDetails) else 1 if isinstance(command, SendEmail) else 2


def is_urgent(command: SendCommand) -> bool:
    """An email the delivery order puts before contact requests (a confirmation, say)."""
    return isinstance(command, SendEmail) and priority_of(command.email_kind) < priority_of(CONTACT_REQUEST)


async def _unless_done(waiting: Awaitable[None], storing: asyncio.Task[None]) -> None:
    """Await ``waiting``; if the storing task ends first (a bug), raise what ended it."""
    wait = asyncio.ensure_future(waiting)
    await asyncio.wait([wait, storing], return_when=asyncio.FIRST_COMPLETED)
    if storing.done():
        wait.cancel()
        storing.result()
        raise RuntimeError("sender agent: the storing task ended before the stream")


def _decided_emails(raw: bytes | None) -> list[tuple[int, str]]:
    """The therapist and key of each email that the ``send_email`` commands of a
    record that cannot be decoded decided, read as loosely as possible."""
    try:
        wire = loads(raw or b"")
    except Exception:  # not even JSON: there is no decided email to abandon
        return []
    members = wire.get("messages") if isinstance(wire, dict) and wire.get("kind") == BUNDLE else [wire]
    decided = []
    for member in members if isinstance(members, list) else []:
        try:
            if member.get("kind") == SendEmail.KIND and member.get("email_key"):
                decided.append((int(member["therapist"]["therapist_id"]), str(member["email_key"])))
        except Exception:  # noqa: S112 - this one names no email; the others may
            continue
    return decided
