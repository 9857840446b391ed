"""Send commands (``<app_id>-send-commands``, internal, keyed by therapist id): what
the therapist agent decided, for the sender agent to carry out in the database.

``SendEmail`` (create, render, store and queue an email), ``SettleRequest``,
``DirectoryUpdate``, ``RequestDetails``, ``ForgetRequestDetails``, ``BookCall``.

As in streams.messages.inbox, each message is a frozen dataclass that encodes
itself (``codec.encode``), the sender agent decodes with ``decode`` and dispatches
with ``match``, and the JSON form keeps the names and shapes the service has always
written (messages written before decode the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Self

from domain.decisions import MANUAL, ManualEmailContent, SendManualEmail
from domain.decisions import BookCall as BookCallDecision
from domain.decisions import SendEmail as SendEmailDecision
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from streams.messages import bundles
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


@dataclass(frozen=True)
class SendEmail:
    """Create (render, store, queue) one email. ``therapist`` is None for a manual
    email to a therapist without a directory entry (it names ``recipient_email``);
    ``content`` is what a manual email's ``create_email`` said."""

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
    # Template context may be about patients: never part of a repr (a log line),
    # like PlacementRequest.patient (ManualEmailContent keeps its text out of its own).
    context: Mapping[str, Any] = field(default_factory=dict, repr=False)
    content: ManualEmailContent | None = None
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
            template=content.template,
            causation_id=decision.command_id,
            content=content,
            queue=decision.queue,
            respect_contact_limit=content.respect_contact_limit,
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
                content={"therapist_id": self.therapist_id, **content_to_wire(self.content)},
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
            requests=requests_from_wire(wire["requests"]),
            decided_at=time_from_wire(wire["decided_at"]),
            limited=bool(wire.get("limited", True)),
            template=wire.get("template"),
            causation_id=wire.get("causation_id"),
            context=wire.get("context") or {},
            content=None if wire.get("content") is None else content_from_wire(wire["content"]),
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
            tuple(PlacementRequest(int(r[0]), int(r[1]), time_from_wire(r[2])) for r in wire["requests"]),
            time_from_wire(wire["decided_at"]),
        )


SendCommand = SendEmail | SettleRequest | DirectoryUpdate | RequestDetails | ForgetRequestDetails | BookCall

_KINDS: dict[str, type[SendCommand]] = {
    m.KIND: m for m in (SendEmail, SettleRequest, DirectoryUpdate, RequestDetails, ForgetRequestDetails, BookCall)
}


def decode(raw: bytes | str) -> SendCommand:
    message: SendCommand = decode_kind(raw, _KINDS, "send-command")
    return message


def unpack(raw: bytes | str) -> tuple[SendCommand, ...]:
    """The commands of a record: one, or a bundle of them (streams.messages.bundles)."""
    commands: tuple[SendCommand, ...] = bundles.unpack(raw, _KINDS, "send-command")
    return commands
