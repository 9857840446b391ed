"""The messages the service's agents send each other (CONTRACT §2, internal topics).

Two topics carry them, both keyed by therapist id:

- the **inbox** (``<app_id>-therapist-inbox``), read by the therapist agent:
  validated inputs repartitioned by the ingest agents (``MatchCreated``,
  ``MatchStatusChanged``, ``TherapistUpserted``, ``TherapistDeleted``), commands
  that need the therapist's state (``CreateEmail``, ``LiftEmailSuppression``),
  batch-run ``Tick``s, and what the database side reports back through the
  outbox (``EmailSent``, ``EmailFailed``, ``FollowUpEmail``, ``CallNotBooked``);
- the **send commands** (``<app_id>-send-commands``), read by the sender agent:
  what the therapist agent decided (``SendEmail``, ``SettleRequest``,
  ``DirectoryUpdate``, ``RequestDetails``, ``ForgetRequestDetails``, ``BookCall``).

Each message is a frozen dataclass that encodes itself (``encode``); the agents
decode a topic's messages with ``decode_inbox`` / ``decode_send_command`` and
dispatch on the type with ``match``. The JSON form (``kind`` and the fields) is the
one the service has always written, so messages already in the topics or in the
outbox decode unchanged across an upgrade. Only the service writes these topics,
so they are decoded without a second validation pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Self

from domain.decisions import MANUAL, SendManualEmail
from domain.decisions import BookCall as BookCallDecision
from domain.decisions import SendEmail as SendEmailDecision
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import Undeliverable
from streams.messages.codec import dumps, loads, profile_from_wire, profile_to_wire, request_from_wire, request_to_wire


class UnknownMessage(ValueError):
    """A message whose ``kind`` this version does not know (a bug, or a newer writer)."""


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _requests(wires: Any) -> tuple[PlacementRequest, ...]:
    return tuple(request_from_wire(r) for r in wires or ())


# -- the inbox: inputs and commands ------------------------------------------------------


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
            _time(wire["occurred_at"]),
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
        return cls(wire["event_id"], int(wire["therapist_id"]), _time(wire["occurred_at"]))


@dataclass(frozen=True)
class CreateEmail:
    """``communication.create_email``: needs the therapist's directory entry and
    weekly window. ``command`` is its validated payload (JSON form); the rules do not
    look inside beyond the flags below."""

    KIND: ClassVar[str] = "create_email"
    event_id: str
    therapist_id: int
    command: Mapping[str, Any]

    @property
    def queue(self) -> bool:
        return bool(self.command.get("queue", True))

    @property
    def respect_contact_limit(self) -> bool:
        return bool(self.command.get("respect_contact_limit", True))

    @property
    def has_recipient(self) -> bool:
        return bool(self.command.get("recipient_email"))

    def to_wire(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "therapist_id": self.therapist_id, "command": dict(self.command)}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(wire["event_id"], int(wire["therapist_id"]), wire["command"])


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
class Tick:
    """Time for a batch run, if one is due, on the partition the tick arrives on."""

    KIND: ClassVar[str] = "tick"
    now: datetime

    def to_wire(self) -> dict[str, Any]:
        return {"now": self.now.isoformat()}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(_time(wire["now"]))


# -- the inbox: what the database side reports back ---------------------------------------


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
        return cls(int(wire["therapist_id"]), wire["email_key"], bool(wire["limited"]), _time(wire["sent_at"]))


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
            _requests(wire.get("returned")),
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
            int(wire["therapist_id"]), int(wire["email_id"]), _time(sent) if sent else None, _requests(wire["requests"])
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
        return cls(int(wire["therapist_id"]), _requests(wire["requests"]))


# What the database side reports to the therapist agent, through the outbox.
Feedback = EmailSent | EmailFailed | FollowUpEmail | CallNotBooked

InboxMessage = (
    MatchCreated
    | MatchStatusChanged
    | TherapistUpserted
    | TherapistDeleted
    | CreateEmail
    | LiftEmailSuppression
    | Tick
    | EmailSent
    | EmailFailed
    | FollowUpEmail
    | CallNotBooked
)


# -- send commands: therapist agent -> sender agent ---------------------------------------


@dataclass(frozen=True)
class SendEmail:
    """Create (render, store, queue) one email. ``therapist`` is None for a manual
    email to a therapist without a directory entry (it names ``recipient_email``);
    ``content`` is a manual email's ``create_email`` payload."""

    KIND: ClassVar[str] = "send_email"
    email_key: str
    email_kind: str
    therapist_id: int
    therapist: TherapistProfile | None
    requests: tuple[PlacementRequest, ...]
    decided_at: datetime
    limited: bool
    template: str | None = None
    causation_id: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    content: Mapping[str, Any] | None = None
    queue: bool = True
    respect_contact_limit: bool = True
    command_id: str | None = None

    @classmethod
    def decided(cls, decision: SendEmailDecision, causation_id: str | None, limited: bool) -> Self:
        return cls(
            email_key=decision.email_key,
            email_kind=decision.kind,
            therapist_id=decision.therapist.therapist_id,
            therapist=decision.therapist,
            requests=decision.requests,
            decided_at=decision.decided_at,
            limited=limited,
            template=decision.template,
            causation_id=causation_id,
            context=decision.context,
        )

    @classmethod
    def manual(cls, therapist_id: int, decision: SendManualEmail) -> Self:
        content = decision.content
        return cls(
            email_key=decision.email_key,
            email_kind=MANUAL,
            therapist_id=therapist_id,
            therapist=decision.therapist,
            requests=decision.requests,
            decided_at=decision.decided_at,
            limited=decision.limited,
            template=content.get("template"),
            causation_id=decision.command_id,
            content=content,
            queue=decision.queue,
            respect_contact_limit=bool(content.get("respect_contact_limit", True)),
            command_id=decision.command_id,
        )

    def to_wire(self) -> dict[str, Any]:
        therapist = profile_to_wire(self.therapist) if self.therapist else {"therapist_id": self.therapist_id}
        wire: dict[str, Any] = {
            "email_key": self.email_key,
            "email_kind": self.email_kind,
            "template": self.template,
            "therapist": therapist,
            "requests": [request_to_wire(r) for r in self.requests],
            "decided_at": self.decided_at.isoformat(),
            "causation_id": self.causation_id,
            "limited": self.limited,
            "context": dict(self.context),
        }
        if self.content is not None:
            wire.update(
                content=dict(self.content),
                queue=self.queue,
                respect_contact_limit=self.respect_contact_limit,
                command_id=self.command_id,
            )
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        therapist = wire["therapist"]
        return cls(
            email_key=wire["email_key"],
            email_kind=wire["email_kind"],
            therapist_id=int(therapist["therapist_id"]),
            therapist=profile_from_wire(therapist) if therapist.get("email") else None,
            requests=_requests(wire["requests"]),
            decided_at=_time(wire["decided_at"]),
            limited=bool(wire.get("limited", True)),
            template=wire.get("template"),
            causation_id=wire.get("causation_id"),
            context=wire.get("context") or {},
            content=wire.get("content"),
            queue=bool(wire.get("queue", True)),
            respect_contact_limit=bool(wire.get("respect_contact_limit", True)),
            command_id=wire.get("command_id"),
        )


@dataclass(frozen=True)
class SettleRequest:
    """A request already emailed was closed or accepted (CONTRACT §3)."""

    KIND: ClassVar[str] = "settle_request"
    therapist_id: int
    placement_request_id: int
    status: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "therapist_id": self.therapist_id,
            "placement_request_id": self.placement_request_id,
            "status": self.status,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(int(wire["therapist_id"]), int(wire["placement_request_id"]), wire["status"])


@dataclass(frozen=True)
class DirectoryUpdate:
    """The therapist's directory entry changed, or the therapist was deleted."""

    KIND: ClassVar[str] = "therapist_profile"
    therapist_id: int
    profile: TherapistProfile | None
    deleted: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "therapist_id": self.therapist_id,
            "deleted": self.deleted,
            "profile": None if self.profile is None else profile_to_wire(self.profile),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        profile = wire.get("profile")
        return cls(
            int(wire["therapist_id"]),
            None if profile is None else profile_from_wire(profile),
            bool(wire.get("deleted")),
        )


@dataclass(frozen=True)
class RequestDetails:
    """Keep the patient details of a waiting request (the table holds none)."""

    KIND: ClassVar[str] = "request_details"
    therapist_id: int
    request: PlacementRequest

    def to_wire(self) -> dict[str, Any]:
        return {"therapist_id": self.therapist_id, "request": request_to_wire(self.request)}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(int(wire["therapist_id"]), request_from_wire(wire["request"]))


@dataclass(frozen=True)
class ForgetRequestDetails:
    KIND: ClassVar[str] = "forget_request_details"
    therapist_id: int
    placement_request_ids: tuple[int, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"therapist_id": self.therapist_id, "placement_request_ids": list(self.placement_request_ids)}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(int(wire["therapist_id"]), tuple(int(r) for r in wire["placement_request_ids"]))


@dataclass(frozen=True)
class BookCall:
    """Book a call about these requests instead of an email (the address is
    suppressed), at the next free slot."""

    KIND: ClassVar[str] = "book_call"
    therapist_id: int
    call_key: str
    reason: str
    requests: tuple[PlacementRequest, ...]
    decided_at: datetime

    @classmethod
    def decided(cls, therapist_id: int, decision: BookCallDecision) -> Self:
        return cls(therapist_id, decision.call_key, decision.reason, decision.requests, decision.decided_at)

    def to_wire(self) -> dict[str, Any]:
        return {
            "therapist_id": self.therapist_id,
            "call_key": self.call_key,
            "reason": self.reason,
            "requests": [[r.placement_request_id, r.patient_id, r.registered_at.isoformat()] for r in self.requests],
            "decided_at": self.decided_at.isoformat(),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        return cls(
            int(wire["therapist_id"]),
            wire["call_key"],
            wire.get("reason", "undeliverable"),
            tuple(PlacementRequest(int(r[0]), int(r[1]), _time(r[2])) for r in wire["requests"]),
            _time(wire["decided_at"]),
        )


SendCommand = SendEmail | SettleRequest | DirectoryUpdate | RequestDetails | ForgetRequestDetails | BookCall

Message = InboxMessage | SendCommand

_INBOX: dict[str, type[InboxMessage]] = {
    m.KIND: m
    for m in (
        MatchCreated,
        MatchStatusChanged,
        TherapistUpserted,
        TherapistDeleted,
        CreateEmail,
        LiftEmailSuppression,
        Tick,
        EmailSent,
        EmailFailed,
        FollowUpEmail,
        CallNotBooked,
    )
}
_SEND_COMMANDS: dict[str, type[SendCommand]] = {
    m.KIND: m for m in (SendEmail, SettleRequest, DirectoryUpdate, RequestDetails, ForgetRequestDetails, BookCall)
}


def encode(message: Message) -> bytes:
    return dumps({"kind": message.KIND, **message.to_wire()})


def _decode(raw: bytes | str, kinds: Mapping[str, type[Any]], topic: str) -> Any:
    wire = loads(raw)
    kind = wire.get("kind") if isinstance(wire, dict) else None
    message_type = kinds.get(kind) if isinstance(kind, str) else None
    if message_type is None:
        raise UnknownMessage(f"unknown {topic} message kind {kind!r}")
    return message_type.from_wire(wire)


def decode_inbox(raw: bytes | str) -> InboxMessage:
    message: InboxMessage = _decode(raw, _INBOX, "inbox")
    return message


def decode_send_command(raw: bytes | str) -> SendCommand:
    message: SendCommand = _decode(raw, _SEND_COMMANDS, "send-command")
    return message
