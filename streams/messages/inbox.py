"""The therapist agent's inbox (``<app_id>-therapist-inbox``, internal, keyed by
therapist id): everything that may change a therapist's state.

- validated inputs, repartitioned by the ingest agents: ``MatchCreated``,
  ``MatchStatusChanged``, ``TherapistUpserted``, ``TherapistDeleted``;
- commands that need the therapist's state, from the command agent:
  ``CreateEmail``, ``LiftEmailSuppression``, ``SetContactPreference`` (also from
  the one-click opt-out page);
- batch-run ``Tick``s (streams.agents.ticks);
- what the database side reports back through the outbox: ``EmailSent``,
  ``EmailFailed``, ``FollowUpEmail``, ``CallNotBooked``, ``BounceRecorded``.

Each message is a frozen dataclass that encodes itself (``codec.encode``); the
therapist agent decodes with ``decode`` and dispatches on the type with ``match``.
The JSON form (``kind`` and the fields) keeps the names and shapes the service has
always written, so messages already in the topic or in the outbox decode across an
upgrade. Only the service writes this topic, so messages are decoded without a
second validation pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from domain.bounces import Bounce
from domain.decisions import ManualEmailContent
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import Undeliverable
from streams.messages.bundles import Bundle
from streams.messages.bundles import decode_record as decode_bundle_or_message
from streams.messages.codec import (
    content_from_wire,
    content_to_wire,
    decode_kind,
    profile_from_wire,
    profile_to_wire,
    request_from_wire,
    request_to_wire,
    requests_from_wire,
    time_from_wire,
)

# -- inputs and commands ----------------------------------------------------------------


@dataclass(frozen=True)
class MatchCreated:
    KIND: ClassVar[str] = "match_created"
    event_id: str
    therapist_id: int
    request: PlacementRequest

    def to_wire(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "therapist_id": self.therapist_id, "request": request_to_wire(self.request)}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(wire["event_id"], int(wire["therapist_id"]), request_from_wire(wire["request"]))


@dataclass(frozen=True)
class MatchStatusChanged:
    KIND: ClassVar[str] = "match_status_changed"
    event_id: str
    therapist_id: int
    placement_request_id: int
    patient_id: int
    new_status: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "therapist_id": self.therapist_id,
            "placement_request_id": self.placement_request_id,
            "patient_id": self.patient_id,
            "new_status": self.new_status,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(
            wire["event_id"],
            int(wire["therapist_id"]),
            int(wire["placement_request_id"]),
            int(wire["patient_id"]),
            wire["new_status"],
        )


@dataclass(frozen=True)
class TherapistUpserted:
    """``therapist.created``/``updated``; ``keep_availability``: the event's
    availability was refused (dead-lettered), so the previous one stays."""

    KIND: ClassVar[str] = "therapist_upserted"
    event_id: str
    therapist_id: int
    occurred_at: datetime
    profile: TherapistProfile
    keep_availability: bool = False

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "event_id": self.event_id,
            "therapist_id": self.therapist_id,
            "occurred_at": self.occurred_at.isoformat(),
            "profile": profile_to_wire(self.profile),
        }
        if self.keep_availability:
            wire["keep_availability"] = True
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(
            wire["event_id"],
            int(wire["therapist_id"]),
            time_from_wire(wire["occurred_at"]),
            profile_from_wire(wire["profile"]),
            bool(wire.get("keep_availability")),
        )


@dataclass(frozen=True)
class TherapistDeleted:
    KIND: ClassVar[str] = "therapist_deleted"
    event_id: str
    therapist_id: int
    occurred_at: datetime

    def to_wire(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "therapist_id": self.therapist_id,
            "occurred_at": self.occurred_at.isoformat(),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(wire["event_id"], int(wire["therapist_id"]), time_from_wire(wire["occurred_at"]))


@dataclass(frozen=True)
class CreateEmail:
    """``communication.create_email``: needs the therapist's directory entry and
    weekly window. On the wire ``command`` is the command's payload."""

    KIND: ClassVar[str] = "create_email"
    event_id: str
    therapist_id: int
    content: ManualEmailContent

    def to_wire(self) -> dict[str, Any]:
        command = {"therapist_id": self.therapist_id, **content_to_wire(self.content)}
        return {"event_id": self.event_id, "therapist_id": self.therapist_id, "command": command}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(wire["event_id"], int(wire["therapist_id"]), content_from_wire(wire["command"]))


@dataclass(frozen=True)
class LiftEmailSuppression:
    KIND: ClassVar[str] = "lift_email_suppression"
    event_id: str
    therapist_id: int
    reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        command: dict[str, Any] = {"therapist_id": self.therapist_id}
        if self.reason is not None:
            command["reason"] = self.reason
        return {"event_id": self.event_id, "therapist_id": self.therapist_id, "command": command}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(wire["event_id"], int(wire["therapist_id"]), (wire.get("command") or {}).get("reason"))


@dataclass(frozen=True)
class SetContactPreference:
    """``communication.set_contact_preference`` (``source`` command), or the
    therapist's one-click opt-out (``source`` one_click, with the ``address`` the
    link was made for: it changes nothing once the therapist's address has changed)."""

    KIND: ClassVar[str] = "set_contact_preference"
    event_id: str
    therapist_id: int
    channel: str  # "email" | "phone_only"
    source: str  # "command" | "one_click"
    comment: str | None = None
    address: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "event_id": self.event_id,
            "therapist_id": self.therapist_id,
            "channel": self.channel,
            "source": self.source,
        }
        if self.comment is not None:
            wire["comment"] = self.comment
        if self.address is not None:
            wire["address"] = self.address
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(
            wire["event_id"],
            int(wire["therapist_id"]),
            wire["channel"],
            wire["source"],
            wire.get("comment"),
            wire.get("address"),
        )


@dataclass(frozen=True)
class Tick:
    """Time for a batch run, if one is due, on the partition the tick arrives on."""

    KIND: ClassVar[str] = "tick"
    now: datetime

    def to_wire(self) -> dict[str, Any]:
        return {"now": self.now.isoformat()}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(time_from_wire(wire["now"]))


# -- what the database side reports back ---------------------------------------------------


@dataclass(frozen=True)
class EmailSent:
    KIND: ClassVar[str] = "email_sent"
    therapist_id: int
    email_key: str
    limited: bool
    sent_at: datetime

    def to_wire(self) -> dict[str, Any]:
        return {
            "email_key": self.email_key,
            "limited": self.limited,
            "sent_at": self.sent_at.isoformat(),
            "therapist_id": self.therapist_id,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(int(wire["therapist_id"]), wire["email_key"], bool(wire["limited"]), time_from_wire(wire["sent_at"]))


@dataclass(frozen=True)
class EmailFailed:
    """A decided email will not go out (so it stops holding the therapist's window).
    ``returned``: requests that never reached the therapist and wait again;
    ``undeliverable``: the address itself cannot be reached."""

    KIND: ClassVar[str] = "email_failed"
    therapist_id: int
    email_key: str
    returned: tuple[PlacementRequest, ...] = ()
    undeliverable: Undeliverable | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"email_key": self.email_key}
        if self.returned:
            wire["returned"] = [request_to_wire(r) for r in self.returned]
        if self.undeliverable is not None:
            u = self.undeliverable
            wire["undeliverable"] = {"address": u.address, "reason": u.reason, "email_id": u.email_id}
        wire["therapist_id"] = self.therapist_id
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        u = wire.get("undeliverable")
        return cls(
            int(wire["therapist_id"]),
            wire["email_key"],
            requests_from_wire(wire.get("returned")),
            None if u is None else Undeliverable(u["address"], u["reason"], u.get("email_id")),
        )


@dataclass(frozen=True)
class FollowUpEmail:
    """A sent contact email is still unanswered and no call can be made: the
    therapist agent decides a follow-up email (it is subject to the weekly rule)."""

    KIND: ClassVar[str] = "follow_up_email"
    therapist_id: int
    email_id: int
    original_sent_at: datetime | None
    requests: tuple[PlacementRequest, ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "therapist_id": self.therapist_id,
            "email_id": self.email_id,
            "original_sent_at": None if self.original_sent_at is None else self.original_sent_at.isoformat(),
            "requests": [request_to_wire(r) for r in self.requests],
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        sent = wire.get("original_sent_at")
        return cls(
            int(wire["therapist_id"]),
            int(wire["email_id"]),
            time_from_wire(sent) if sent else None,
            requests_from_wire(wire["requests"]),
        )


@dataclass(frozen=True)
class CallNotBooked:
    """A call decided instead of an email found no slot: its requests wait again."""

    KIND: ClassVar[str] = "call_not_booked"
    therapist_id: int
    requests: tuple[PlacementRequest, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"therapist_id": self.therapist_id, "requests": [request_to_wire(r) for r in self.requests]}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(int(wire["therapist_id"]), requests_from_wire(wire["requests"]))


@dataclass(frozen=True)
class BounceRecorded:
    """``communication.record_bounce`` about a sent email, with what the database
    knows of it: the address it went to, when, the first later email to that
    address (``bounce.next_sent_at``) and, for a contact or follow-up email, the
    requests it carried (``returned``), which wait again if the bounce stops email."""

    KIND: ClassVar[str] = "bounce_recorded"
    command_id: str
    therapist_id: int
    email_key: str
    bounce: Bounce
    returned: tuple[PlacementRequest, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        b = self.bounce
        wire: dict[str, Any] = {
            "command_id": self.command_id,
            "therapist_id": self.therapist_id,
            "email_key": self.email_key,
            "email_id": b.email_id,
            "address": b.address,
            "type": b.type,
            "sent_at": b.sent_at.isoformat(),
            "next_sent_at": None if b.next_sent_at is None else b.next_sent_at.isoformat(),
        }
        if self.returned:
            wire["returned"] = [request_to_wire(r) for r in self.returned]
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        following = wire.get("next_sent_at")
        bounce = Bounce(
            wire["type"],
            wire["address"],
            int(wire["email_id"]),
            time_from_wire(wire["sent_at"]),
            None if following is None else time_from_wire(following),
        )
        return cls(
            wire["command_id"],
            int(wire["therapist_id"]),
            wire["email_key"],
            bounce,
            requests_from_wire(wire.get("returned")),
        )


# The inputs the ingest agents repartition by therapist.
Repartitioned = MatchCreated | MatchStatusChanged | TherapistUpserted | TherapistDeleted

# What the database side reports to the therapist agent, through the outbox.
Feedback = EmailSent | EmailFailed | FollowUpEmail | CallNotBooked | BounceRecorded

InboxMessage = (
    MatchCreated
    | MatchStatusChanged
    | TherapistUpserted
    | TherapistDeleted
    | CreateEmail
    | LiftEmailSuppression
    | SetContactPreference
    | Tick
    | EmailSent
    | EmailFailed
    | FollowUpEmail
    | CallNotBooked
    | BounceRecorded
)

_KINDS: dict[str, type[InboxMessage]] = {
    m.KIND: m
    for m in (
        MatchCreated,
        MatchStatusChanged,
        TherapistUpserted,
        TherapistDeleted,
        CreateEmail,
        LiftEmailSuppression,
        SetContactPreference,
        Tick,
        EmailSent,
        EmailFailed,
        FollowUpEmail,
        CallNotBooked,
        BounceRecorded,
    )
}


def decode(raw: bytes | str) -> InboxMessage:
    message: InboxMessage = decode_kind(raw, _KINDS, "inbox")
    return message


def decode_record(raw: bytes | str) -> InboxMessage | Bundle[InboxMessage]:
    """An inbox record: one message, or a bundle of them (streams.messages.bundles)."""
    record: InboxMessage | Bundle[InboxMessage] = decode_bundle_or_message(raw, _KINDS, "inbox")
    return record
