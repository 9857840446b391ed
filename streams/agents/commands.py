"""The command agent: ``communication-commands`` in (CONTRACT §3).

Thin: validate (malformed -> DLQ), then either hand the command to the therapist
agent (``create_email`` needs the therapist's directory entry and weekly window,
``set_contact_preference`` and ``lift_email_suppression`` change the therapist's state)
or carry it out on the stored emails in one transaction (streams.persistence.processed_commands),
retrying while the database is unavailable so that no command is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

import faust

from domain.decisions import ManualEmailContent
from streams.delivery.wakeups import Wakeups
from streams.email.context import Identity
from streams.email.rendering import Renderer
from streams.kafka.dead_letters import dead_letter_waiting
from streams.kafka.publishing import PublishRefused, until_published
from streams.kafka.topics import Topics
from streams.messages import inbox
from streams.messages.codec import encode
from streams.messages.commands import COMMANDS, CreateEmail, LiftEmailSuppression, SetContactPreference
from streams.messages.parsing import InputEvent, Rejection, parse_input
from streams.ops.logs import ThrottledWarning, bind_log_context, log_failure
from streams.ops.metrics import NO_METRICS, Metrics, Outcome
from streams.persistence import bounces, call_booking, call_commands, email_commands, erasure, processed_commands
from streams.persistence.db import Database, run_retrying
from streams.persistence.email_creation import Render
from streams.persistence.outbox import Channels
from streams.settings import Settings

log = logging.getLogger(__name__)

# processed_commands.execute's outcome -> commsvc_input_events_total{outcome}
OUTCOMES = {"done": Outcome.ACCEPTED, "rejected": Outcome.REJECTED, "replayed": Outcome.DUPLICATE}


class CommandAgent:
    def __init__(
        self,
        topics: Topics,
        database: Database,
        channels: Channels,
        wakeups: Wakeups,
        clock: Callable[[], datetime],
        policy: call_booking.CallPolicy,
        settings: Settings,
        *,
        metrics: Metrics = NO_METRICS,
        render: Render | None = None,
        identity: Identity | None = None,
    ) -> None:
        # Erasure renders stored emails again: the worker's renderer and sender, when given.
        render = render or Renderer(settings.timezone, settings.template_dir).render
        identity = identity or Identity(settings.sender_email, settings.sender_name)
        # The call commands need the booking rules (slot, notice, horizon, capacity, attempts).
        self.handlers: dict[str, processed_commands.Handler] = {
            **email_commands.HANDLERS,
            **bounces.HANDLERS,
            **erasure.handlers(render, identity),
            **{name: partial(handler, policy=policy) for name, handler in call_commands.CALL_HANDLERS.items()},
        }
        self.topics = topics
        self.database = database
        self.channels = channels
        self.wakeups = wakeups
        self.clock = clock
        self.max_bytes = settings.max_command_bytes
        # Commands handed to the therapist agent are counted there, once applied.
        self.metrics = metrics
        self.database_warning = ThrottledWarning(log)

    async def __call__(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                parsed = parse_input(
                    message.value, COMMANDS, max_bytes=self.max_bytes, limit_name="COMM_MAX_COMMAND_BYTES"
                )
                bind_log_context(event_id=parsed.event_id, therapist_id=_therapist_of(message.key))
                if isinstance(parsed, Rejection) and _answerable(parsed, message.value, self.max_bytes):
                    # Well-formed but too large (e.g. an image pasted into body_html):
                    # the sender is answered, as for any command that cannot be carried out.
                    await self.refuse(parsed, message.key)
                    self.metrics.input_event(message.topic, Outcome.REJECTED)
                    continue
                if isinstance(parsed, Rejection):
                    log.warning(
                        "dead-lettered command %s[%d]@%d: %s",
                        message.topic,
                        message.partition,
                        message.offset,
                        parsed.reason,
                    )
                    await self._dead_letter(
                        message, parsed.reason, event_id=parsed.event_id, event_type=parsed.event_type
                    )
                    self.metrics.input_event(message.topic, Outcome.REJECTED)
                    continue
                outcome = await self.carry_out(parsed, message.key)
                if outcome is not None:
                    self.metrics.input_event(message.topic, OUTCOMES.get(outcome, Outcome.ACCEPTED))
            except asyncio.CancelledError:
                raise
            except PublishRefused as refused:
                log.warning("command agent: %s", refused)
                await self._dead_letter(message, f"internal error: {refused}")
                self.metrics.input_event(message.topic, Outcome.ERROR)
            except Exception as exc:
                log_failure(log, "command agent: cannot carry out a command", exc)
                await self._dead_letter(message, f"internal error: {type(exc).__name__}")
                self.metrics.input_event(message.topic, Outcome.ERROR)

    async def _dead_letter(
        self, message: Any, reason: str, *, event_id: str | None = None, event_type: str | None = None
    ) -> None:
        await dead_letter_waiting(
            self.topics.dlq,
            message,
            reason,
            self.clock(),
            self.database_warning,
            event_id=event_id,
            event_type=event_type,
            metrics=self.metrics,
        )

    async def refuse(self, rejection: Rejection, key: bytes | None) -> None:
        """Answer a command with ``command_rejected`` (recorded, so a replay is answered once)."""
        assert rejection.event_id is not None and rejection.event_type is not None
        log.warning("command %s (%s) rejected: %s", rejection.event_id, rejection.event_type, rejection.reason)
        stored = processed_commands.Command(rejection.event_id, rejection.event_type, None, _therapist_of(key))

        def reject(*_: Any) -> list[dict[str, Any]]:
            raise processed_commands.Rejected(rejection.reason)

        await run_retrying(
            self.database,
            processed_commands.execute,
            stored,
            self.channels,
            self.clock(),
            {rejection.event_type: reject},
            warn=lambda message, *args: self.database_warning("command agent: " + message, *args),
        )
        self.wakeups.work_added()

    async def carry_out(self, command: InputEvent, key: bytes | None) -> str | None:
        """Carry out ``command``, or hand it to the therapist agent (then None);
        ``processed_commands.execute``'s outcome."""
        forwarded = _for_therapist(command)
        if forwarded is not None:
            inbox_key, value = str(forwarded.therapist_id).encode(), encode(forwarded)
            await until_published(
                lambda: self.topics.inbox.send(key=inbox_key, value=value),
                self.database_warning,
            )
            return None
        stored = processed_commands.Command(command.event_id, command.event_type, command.payload, _therapist_of(key))
        # A database outage is waited out; an error retrying cannot cure goes to the DLQ.
        outcome = await run_retrying(
            self.database,
            processed_commands.execute,
            stored,
            self.channels,
            self.clock(),
            self.handlers,
            warn=lambda message, *args: self.database_warning("command agent: " + message, *args),
        )
        log.info("command %s (%s): %s", command.event_id, command.event_type, outcome)
        self.wakeups.work_added()
        return outcome


def _for_therapist(
    command: InputEvent,
) -> inbox.CreateEmail | inbox.LiftEmailSuppression | inbox.SetContactPreference | None:
    """The inbox message for a command that needs the therapist agent's state, or None."""
    match command.payload:
        case CreateEmail() as payload:
            content = ManualEmailContent(
                template=payload.template,
                context=payload.context or {},
                subject=payload.subject,
                body_html=payload.body_html,
                body_text=payload.body_text,
                placement_request_ids=tuple(payload.placement_request_ids),
                recipient_email=payload.recipient_email,
                recipient_name=payload.recipient_name,
                queue=payload.queue,
                respect_contact_limit=payload.respect_contact_limit,
            )
            return inbox.CreateEmail(command.event_id, payload.therapist_id, content)
        case LiftEmailSuppression() as payload:
            return inbox.LiftEmailSuppression(command.event_id, payload.therapist_id, payload.reason)
        case SetContactPreference() as payload:
            return inbox.SetContactPreference(
                command.event_id, payload.therapist_id, payload.channel, "command", comment=payload.reason
            )
    return None


def _answerable(rejection: Rejection, value: bytes | None, limit: int) -> bool:
    """An oversize command whose envelope names a known command and an id."""
    return (
        value is not None
        and len(value) > limit
        and rejection.event_type in COMMANDS
        and rejection.event_id is not None
        and 0 < len(rejection.event_id) <= 64
    )


def _therapist_of(key: bytes | None) -> int | None:
    """The topic is keyed by therapist id (CONTRACT §2); used for rejections."""
    try:
        return int(key) if key else None
    except ValueError:
        return None
