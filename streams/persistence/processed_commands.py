"""Carrying out a command of ``communication-commands`` (CONTRACT §3) once: the
handlers are in streams.persistence.email_commands and call_commands.

Each runs in one transaction: it is recorded in ``processed_commands`` so that a
replay changes nothing, and either all of its effects and events are written or,
when it cannot be carried out, only a ``communication.command_rejected`` event
with a reason a person can act on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from streams.messages.fields import WireModel
from streams.persistence.models import ProcessedCommand
from streams.persistence.outbox import Channels, add_rows, command_rejected_row


class Rejected(Exception):
    """A well-formed command that cannot be carried out; the message says why."""


Payload = TypeVar("Payload", bound=WireModel)


@dataclass(frozen=True)
class Command:
    command_id: str
    command_type: str
    # The validated payload (streams.messages.commands); None for a command refused
    # before its payload could be read (too large).
    payload: WireModel | None
    # The therapist the command was keyed by (the topic's key), for the rejection.
    therapist_id: int | None

    def payload_as(self, model: type[Payload]) -> Payload:
        """The payload as the model its handler is for (a mismatch is a wiring bug)."""
        if not isinstance(self.payload, model):
            raise TypeError(
                f"command {self.command_id} ({self.command_type}): expected a {model.__name__} payload, "
                f"got {type(self.payload).__name__}"
            )
        return self.payload


Handler = Callable[[Session, Command, Channels, datetime], list[dict[str, Any]]]


def execute(
    session: Session,
    command: Command,
    channels: Channels,
    now: datetime,
    handlers: Mapping[str, Handler],
) -> str:
    """Carry out or reject ``command``; "done", "rejected" or "replayed"."""
    if session.get(ProcessedCommand, command.command_id) is not None:
        return "replayed"
    handler = handlers[command.command_type]
    try:
        # Every check comes before the first change, so a rejection leaves nothing behind.
        events = handler(session, command, channels, now)
        outcome = "done"
    except Rejected as rejection:
        events = [rejected(command, str(rejection), channels, now)]
        outcome = "rejected"
    add_rows(session, events)
    session.add(
        ProcessedCommand(
            command_id=command.command_id, command_type=command.command_type, outcome=outcome, processed_at=now
        )
    )
    return outcome


def rejected(command: Command, reason: str, channels: Channels, now: datetime) -> dict[str, Any]:
    return command_rejected_row(
        channels.events, command.command_id, command.command_type, command.therapist_id, reason, now
    )
