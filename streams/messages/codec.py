"""JSON forms of what travels on the internal topics and the changelog: the domain
objects inside messages, the messages themselves (``encode``, ``decode_kind``) and
the therapist table's values (``STATE_CODEC``).

Internal messages are the service's own business (CONTRACT §2): they are written
and read only by the service, so they are decoded without a second validation pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Protocol, Self, TypeVar

import orjson
from faust.serializers import codecs

from domain.bounces import SoftBounces
from domain.decisions import ManualEmailContent
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import EMAIL, InFlightEmail, Suppression, TherapistState

STATE_CODEC = "commsvc_therapist_state"


def _plain(value: Any) -> Any:
    """What orjson does not take itself: read-only mappings (e.g. a frozen context)."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(document: Any) -> bytes:
    """Compact UTF-8 JSON (orjson). The input side refuses what orjson cannot write
    (integers beyond 64 bits, NaN, deep nesting: ``parsing.unencodable``), so a
    message that was accepted can always be written."""
    return orjson.dumps(document, default=_plain)


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)


def time_from_wire(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- messages ---------------------------------------------------------------------------


class Message(Protocol):
    """An internal message (streams.messages.inbox, streams.messages.send_commands)."""

    KIND: ClassVar[str]

    def to_wire(self) -> dict[str, Any]: ...

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self: ...


M = TypeVar("M", bound=Message)


class UnknownMessage(ValueError):
    """A message whose ``kind`` this version does not know (a bug, or a newer writer)."""


def encode(message: Message) -> bytes:
    return dumps({"kind": message.KIND, **message.to_wire()})


def decode_kind(raw: bytes | str, kinds: Mapping[str, type[M]], topic: str) -> M:
    """The message ``raw`` holds, of the type its ``kind`` names among ``kinds``."""
    return from_wire_kind(loads(raw), kinds, topic)


def from_wire_kind(wire: Any, kinds: Mapping[str, type[M]], topic: str) -> M:
    """The message of the decoded JSON ``wire``, of the type its ``kind`` names."""
    kind = wire.get("kind") if isinstance(wire, dict) else None
    message_type = kinds.get(kind) if isinstance(kind, str) else None
    if message_type is None:
        raise UnknownMessage(f"unknown {topic} message kind {kind!r}")
    return message_type.from_wire(wire)


# -- a manual email's content ---------------------------------------------------------


def content_to_wire(content: ManualEmailContent) -> dict[str, Any]:
    """The JSON form of a ``create_email`` payload without its ``therapist_id`` (as
    the command agent has always written it: its fields, without nulls)."""
    wire: dict[str, Any] = {
        name: value
        for name, value in (
            ("template", content.template),
            ("context", dict(content.context) if content.context else None),
            ("subject", content.subject),
            ("body_html", content.body_html),
            ("body_text", content.body_text),
            ("recipient_email", content.recipient_email),
            ("recipient_name", content.recipient_name),
        )
        if value is not None
    }
    wire["placement_request_ids"] = list(content.placement_request_ids)
    wire["queue"] = content.queue
    wire["respect_contact_limit"] = content.respect_contact_limit
    return wire


def content_from_wire(wire: Mapping[str, Any]) -> ManualEmailContent:
    return ManualEmailContent(
        template=wire.get("template"),
        context=wire.get("context") or {},
        subject=wire.get("subject"),
        body_html=wire.get("body_html"),
        body_text=wire.get("body_text"),
        placement_request_ids=tuple(int(r) for r in wire.get("placement_request_ids") or ()),
        recipient_email=wire.get("recipient_email"),
        recipient_name=wire.get("recipient_name"),
        queue=bool(wire.get("queue", True)),
        respect_contact_limit=bool(wire.get("respect_contact_limit", True)),
    )


# -- requests and profiles ----------------------------------------------------------


def request_to_wire(request: PlacementRequest) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "placement_request_id": request.placement_request_id,
        "patient_id": request.patient_id,
        "registered_at": request.registered_at.isoformat(),
    }
    if request.patient:  # none in the table: the details are kept in the database
        wire["patient"] = dict(request.patient)
    if request.status is not None:
        wire["status"] = request.status
    return wire


def requests_from_wire(wires: Any) -> tuple[PlacementRequest, ...]:
    return tuple(request_from_wire(r) for r in wires or ())


def request_from_wire(wire: Mapping[str, Any]) -> PlacementRequest:
    return PlacementRequest(
        placement_request_id=wire["placement_request_id"],
        patient_id=wire["patient_id"],
        registered_at=time_from_wire(wire["registered_at"]),
        patient=wire.get("patient") or {},
        status=wire.get("status"),
    )


_PROFILE_FIELDS = (
    "therapist_id",
    "email",
    "first_name",
    "last_name",
    "title",
    "salutation",
    "phone",
    "timezone",
    "contact_blocked",
    "availability",
)


def profile_to_wire(profile: TherapistProfile) -> dict[str, Any]:
    return {name: getattr(profile, name) for name in _PROFILE_FIELDS}


def profile_from_wire(wire: Mapping[str, Any]) -> TherapistProfile:
    values = {name: wire[name] for name in _PROFILE_FIELDS if wire.get(name) is not None}
    return TherapistProfile(**values)


# -- the therapist aggregate (table value) -------------------------------------------


def state_to_wire(state: TherapistState) -> dict[str, Any]:
    return {
        "therapist_id": state.therapist_id,
        "profile": None if state.profile is None else profile_to_wire(state.profile),
        "profile_as_of": None if state.profile_as_of is None else state.profile_as_of.isoformat(),
        "deleted": state.deleted,
        "pending": [request_to_wire(r) for r in state.pending.values()],
        "in_flight": [
            {
                "email_key": f.email_key,
                "kind": f.kind,
                "placement_request_ids": list(f.placement_request_ids),
                "decided_at": f.decided_at.isoformat(),
                "limited": f.limited,
            }
            for f in state.in_flight.values()
        ],
        "contact_sent_at": [t.isoformat() for t in state.contact_sent_at],
        "settled": {str(k): [v[0], v[1].isoformat()] for k, v in state.settled.items()},
        "seen_events": {k: t.isoformat() for k, t in state.seen_events.items()},
        "awaiting_confirmation": [request_to_wire(r) for r in state.awaiting_confirmation.values()],
        "suppression": None if state.suppression is None else _suppression_to_wire(state.suppression),
        "contact_channel": state.contact_channel,
        "soft_bounces": None if state.soft_bounces is None else _soft_bounces_to_wire(state.soft_bounces),
    }


def _suppression_to_wire(suppression: Suppression) -> dict[str, Any]:
    return {
        "address": suppression.address,
        "reason": suppression.reason,
        "email_id": suppression.email_id,
        "since": suppression.since.isoformat(),
    }


def _suppression_from_wire(wire: Mapping[str, Any] | None) -> Suppression | None:
    if wire is None:
        return None
    return Suppression(wire["address"], wire["reason"], wire.get("email_id"), time_from_wire(wire["since"]))


def _soft_bounces_to_wire(row: SoftBounces) -> dict[str, Any]:
    return {
        "address": row.address,
        "count": row.count,
        "last_sent_at": row.last_sent_at.isoformat(),
        "next_sent_at": None if row.next_sent_at is None else row.next_sent_at.isoformat(),
    }


def _soft_bounces_from_wire(wire: Mapping[str, Any] | None) -> SoftBounces | None:
    if wire is None:
        return None
    following = wire.get("next_sent_at")
    return SoftBounces(
        wire["address"],
        int(wire["count"]),
        time_from_wire(wire["last_sent_at"]),
        None if following is None else time_from_wire(following),
    )


def state_from_wire(wire: Mapping[str, Any]) -> TherapistState:
    pending = [request_from_wire(r) for r in wire.get("pending", ())]
    awaiting = [request_from_wire(r) for r in wire.get("awaiting_confirmation", ())]
    return TherapistState(
        therapist_id=wire["therapist_id"],
        profile=None if wire.get("profile") is None else profile_from_wire(wire["profile"]),
        profile_as_of=None if wire.get("profile_as_of") is None else time_from_wire(wire["profile_as_of"]),
        deleted=bool(wire.get("deleted")),
        pending={r.placement_request_id: r for r in pending},
        in_flight={
            f["email_key"]: InFlightEmail(
                f["email_key"],
                f["kind"],
                tuple(f["placement_request_ids"]),
                time_from_wire(f["decided_at"]),
                bool(f.get("limited", True)),
            )
            for f in wire.get("in_flight", ())
        },
        contact_sent_at=[time_from_wire(t) for t in wire.get("contact_sent_at", ())],
        settled={int(k): (v[0], time_from_wire(v[1])) for k, v in wire.get("settled", {}).items()},
        seen_events={k: time_from_wire(t) for k, t in wire.get("seen_events", {}).items()},
        awaiting_confirmation={r.placement_request_id: r for r in awaiting},
        suppression=_suppression_from_wire(wire.get("suppression")),
        # Values written before issue 17 have neither: email, and no soft bounces.
        contact_channel=wire.get("contact_channel") or EMAIL,
        soft_bounces=_soft_bounces_from_wire(wire.get("soft_bounces")),
    )


class _StateCodec(codecs.Codec):  # type: ignore[misc]
    """Table values are TherapistState in memory and JSON in the changelog.

    Partition bookmarks (plain JSON objects without ``therapist_id``) share the
    table and pass through unchanged.
    """

    def _dumps(self, obj: Any) -> bytes:
        return dumps(state_to_wire(obj) if isinstance(obj, TherapistState) else obj)

    def _loads(self, s: bytes) -> Any:
        wire = loads(s)
        if isinstance(wire, dict) and "therapist_id" in wire:
            return state_from_wire(wire)
        return wire


def register_state_codec() -> None:
    codecs.register(STATE_CODEC, _StateCodec())
