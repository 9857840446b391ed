"""The messages between the agents (streams.messages.inbox and streams.messages.send_commands): every type survives
its trip through its topic, and reads the JSON the service has always written, so
messages already in the topics or in the outbox decode unchanged across an upgrade."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass, replace
from datetime import UTC, datetime
from typing import Any, get_args

import pytest

from domain.bounces import Bounce
from domain.decisions import MANUAL, ManualEmailContent, SendManualEmail
from domain.decisions import BookCall as BookCallDecision
from domain.decisions import SendEmail as SendEmailDecision
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import Undeliverable
from streams.messages.codec import UnknownMessage, encode
from streams.messages.inbox import (
    BounceRecorded,
    CallNotBooked,
    CreateEmail,
    EmailFailed,
    EmailSent,
    FollowUpEmail,
    InboxMessage,
    LiftEmailSuppression,
    MatchCreated,
    MatchStatusChanged,
    SetContactPreference,
    TherapistDeleted,
    TherapistUpserted,
    Tick,
)
from streams.messages.inbox import decode as decode_inbox
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

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
REGISTERED = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
HOURS = {"monday": [{"start": "10:00", "end": "11:00"}]}
PROFILE = TherapistProfile(
    7, "t7@praxis.example", "Eva", "Müller", "Dr.", "Frau", "+49 30 1", "Europe/Berlin", False, HOURS
)
PROFILE_WIRE = {
    "therapist_id": 7,
    "email": "t7@praxis.example",
    "first_name": "Eva",
    "last_name": "Müller",
    "title": "Dr.",
    "salutation": "Frau",
    "phone": "+49 30 1",
    "timezone": "Europe/Berlin",
    "contact_blocked": False,
    "availability": HOURS,
}
PATIENT = {"first_name": "Anna", "diagnosis": "F32.1"}
REQUEST = PlacementRequest(1, 1001, REGISTERED, PATIENT)
REQUEST_WIRE = {"placement_request_id": 1, "patient_id": 1001, "registered_at": "2026-01-01T10:00:00+00:00"}
BARE = PlacementRequest(1, 1001, REGISTERED)
SECOND = PlacementRequest(2, 1002, REGISTERED, status="in_review")
SECOND_WIRE = {**REQUEST_WIRE, "placement_request_id": 2, "patient_id": 1002, "status": "in_review"}
# The create_email payload as the command agent has always forwarded it (its JSON
# form without nulls), and what the messages carry.
CREATE = {
    "therapist_id": 7,
    "template": "free_text",
    "placement_request_ids": [1],
    "recipient_email": "a@b.example",
    "queue": True,
    "respect_contact_limit": True,
}
CONTENT = ManualEmailContent(template="free_text", placement_request_ids=(1,), recipient_email="a@b.example")

DECIDED = SendEmailDecision(
    "k1", "follow_up", "follow_up", PROFILE, (REQUEST, SECOND), NOW, {"original_sent_at": "2026-11-16"}
)
MANUAL_DECISION = SendManualEmail("m1", "c-1", PROFILE, CONTENT, (REQUEST,), False, True, NOW)
NO_ENTRY = SendManualEmail("m2", "c-2", None, CONTENT, (), True, False, NOW)

# (message, its JSON as the service has always written it: for the send commands and
# the inputs, as the agents wrote them before the messages were types)
CASES: list[tuple[Any, dict[str, Any]]] = [
    (
        MatchCreated("e1", 7, REQUEST),
        {"kind": "match_created", "event_id": "e1", "therapist_id": 7, "request": {**REQUEST_WIRE, "patient": PATIENT}},
    ),
    (
        MatchStatusChanged("e2", 7, 1, 1001, "cancelled"),
        {
            "kind": "match_status_changed",
            "event_id": "e2",
            "therapist_id": 7,
            "placement_request_id": 1,
            "patient_id": 1001,
            "new_status": "cancelled",
        },
    ),
    (
        TherapistUpserted("e3", 7, NOW, PROFILE),
        {
            "kind": "therapist_upserted",
            "event_id": "e3",
            "therapist_id": 7,
            "occurred_at": "2026-11-23T08:00:00+00:00",
            "profile": PROFILE_WIRE,
        },
    ),
    (
        TherapistUpserted("e4", 7, NOW, PROFILE, keep_availability=True),
        {
            "kind": "therapist_upserted",
            "event_id": "e4",
            "therapist_id": 7,
            "occurred_at": "2026-11-23T08:00:00+00:00",
            "profile": PROFILE_WIRE,
            "keep_availability": True,
        },
    ),
    (
        TherapistDeleted("e5", 7, NOW),
        {"kind": "therapist_deleted", "event_id": "e5", "therapist_id": 7, "occurred_at": "2026-11-23T08:00:00+00:00"},
    ),
    (
        CreateEmail("e6", 7, CONTENT),
        {"kind": "create_email", "event_id": "e6", "therapist_id": 7, "command": CREATE},
    ),
    (
        LiftEmailSuppression("e7", 7, "address fixed"),
        {
            "kind": "lift_email_suppression",
            "event_id": "e7",
            "therapist_id": 7,
            "command": {"therapist_id": 7, "reason": "address fixed"},
        },
    ),
    (
        LiftEmailSuppression("e8", 7),
        {"kind": "lift_email_suppression", "event_id": "e8", "therapist_id": 7, "command": {"therapist_id": 7}},
    ),
    (Tick(NOW), {"kind": "tick", "now": "2026-11-23T08:00:00+00:00"}),
    (
        EmailSent(7, "k1", True, NOW),
        {
            "kind": "email_sent",
            "email_key": "k1",
            "limited": True,
            "sent_at": "2026-11-23T08:00:00+00:00",
            "therapist_id": 7,
        },
    ),
    (EmailFailed(7, "k1"), {"kind": "email_failed", "email_key": "k1", "therapist_id": 7}),
    (
        EmailFailed(7, "k2", (SECOND,), Undeliverable("t7@praxis.example", "mailbox_unknown", 12)),
        {
            "kind": "email_failed",
            "email_key": "k2",
            "returned": [SECOND_WIRE],
            "undeliverable": {"address": "t7@praxis.example", "reason": "mailbox_unknown", "email_id": 12},
            "therapist_id": 7,
        },
    ),
    (
        FollowUpEmail(7, 12, NOW, (REQUEST,)),
        {
            "kind": "follow_up_email",
            "therapist_id": 7,
            "email_id": 12,
            "original_sent_at": "2026-11-23T08:00:00+00:00",
            "requests": [{**REQUEST_WIRE, "patient": PATIENT}],
        },
    ),
    (
        FollowUpEmail(7, 13, None, (SECOND,)),
        {
            "kind": "follow_up_email",
            "therapist_id": 7,
            "email_id": 13,
            "original_sent_at": None,
            "requests": [SECOND_WIRE],
        },
    ),
    (
        CallNotBooked(7, (SECOND,)),
        {"kind": "call_not_booked", "therapist_id": 7, "requests": [SECOND_WIRE]},
    ),
    (
        SetContactPreference("e9", 7, "phone_only", "command", "bat um Anrufe"),
        {
            "kind": "set_contact_preference",
            "event_id": "e9",
            "therapist_id": 7,
            "channel": "phone_only",
            "source": "command",
            "comment": "bat um Anrufe",
        },
    ),
    (
        SetContactPreference("e10", 7, "phone_only", "one_click", address="t7@praxis.example"),
        {
            "kind": "set_contact_preference",
            "event_id": "e10",
            "therapist_id": 7,
            "channel": "phone_only",
            "source": "one_click",
            "address": "t7@praxis.example",
        },
    ),
    (
        BounceRecorded("c-3", 7, "k2", Bounce("hard", "t7@praxis.example", 12, NOW), (SECOND,)),
        {
            "kind": "bounce_recorded",
            "command_id": "c-3",
            "therapist_id": 7,
            "email_key": "k2",
            "email_id": 12,
            "address": "t7@praxis.example",
            "type": "hard",
            "sent_at": "2026-11-23T08:00:00+00:00",
            "next_sent_at": None,
            "returned": [SECOND_WIRE],
        },
    ),
    (
        BounceRecorded("c-4", 7, "k3", Bounce("soft", "t7@praxis.example", 13, NOW, REGISTERED)),
        {
            "kind": "bounce_recorded",
            "command_id": "c-4",
            "therapist_id": 7,
            "email_key": "k3",
            "email_id": 13,
            "address": "t7@praxis.example",
            "type": "soft",
            "sent_at": "2026-11-23T08:00:00+00:00",
            "next_sent_at": "2026-01-01T10:00:00+00:00",
        },
    ),
    # -- send commands, as the therapist agent wrote them before they were types
    (
        SendEmail.decided(DECIDED, "e1", True),
        {
            "kind": "send_email",
            "email_key": "k1",
            "email_kind": "follow_up",
            "template": "follow_up",
            "therapist": PROFILE_WIRE,
            "requests": [{**REQUEST_WIRE, "patient": PATIENT}, SECOND_WIRE],
            "decided_at": "2026-11-23T08:00:00+00:00",
            "causation_id": "e1",
            "limited": True,
            "context": {"original_sent_at": "2026-11-16"},
        },
    ),
    (
        SendEmail.manual(7, MANUAL_DECISION),
        {
            "kind": "send_email",
            "email_key": "m1",
            "email_kind": MANUAL,
            "template": "free_text",
            "therapist": PROFILE_WIRE,
            "requests": [{**REQUEST_WIRE, "patient": PATIENT}],
            "content": CREATE,
            "queue": False,
            "limited": True,
            "respect_contact_limit": True,
            "decided_at": "2026-11-23T08:00:00+00:00",
            "command_id": "c-1",
            "causation_id": "c-1",
        },
    ),
    (
        # no directory entry: the command names the address
        SendEmail.manual(7, NO_ENTRY),
        {
            "kind": "send_email",
            "email_key": "m2",
            "email_kind": MANUAL,
            "template": "free_text",
            "therapist": {"therapist_id": 7},
            "requests": [],
            "content": CREATE,
            "queue": True,
            "limited": False,
            "respect_contact_limit": True,
            "decided_at": "2026-11-23T08:00:00+00:00",
            "command_id": "c-2",
            "causation_id": "c-2",
        },
    ),
    (
        SettleRequest(7, 1, "accepted"),
        {"kind": "settle_request", "therapist_id": 7, "placement_request_id": 1, "status": "accepted"},
    ),
    (
        DirectoryUpdate(7, PROFILE),
        {"kind": "therapist_profile", "therapist_id": 7, "deleted": False, "profile": PROFILE_WIRE},
    ),
    (
        DirectoryUpdate(7, None, deleted=True),
        {"kind": "therapist_profile", "therapist_id": 7, "deleted": True, "profile": None},
    ),
    (
        RequestDetails(7, REQUEST),
        {"kind": "request_details", "therapist_id": 7, "request": {**REQUEST_WIRE, "patient": PATIENT}},
    ),
    (
        ForgetRequestDetails(7, (1, 2)),
        {"kind": "forget_request_details", "therapist_id": 7, "placement_request_ids": [1, 2]},
    ),
    (
        # a call carries the requests' ids and times only
        BookCall.decided(
            7,
            BookCallDecision(
                "call-1", (BARE, replace(BARE, placement_request_id=2, patient_id=1002)), "undeliverable", NOW
            ),
        ),
        {
            "kind": "book_call",
            "therapist_id": 7,
            "call_key": "call-1",
            "reason": "undeliverable",
            "requests": [[1, 1001, "2026-01-01T10:00:00+00:00"], [2, 1002, "2026-01-01T10:00:00+00:00"]],
            "decided_at": "2026-11-23T08:00:00+00:00",
        },
    ),
]

# Fields the writer adds today that the one before the typed messages did not
# (readers of both versions ignore them).
ADDED = {"send_email": {"context"}}


SEND_COMMAND_KINDS = {t.KIND for t in get_args(SendCommand)}


def decode(raw: bytes | str) -> Any:
    kind = json.loads(raw)["kind"]
    return decode_send_command(raw) if kind in SEND_COMMAND_KINDS else decode_inbox(raw)


def patients(message: Any) -> list[Any]:
    """The patient details anywhere in a message (PlacementRequest equality ignores them)."""
    found: list[Any] = []

    def walk(value: Any) -> None:
        if isinstance(value, PlacementRequest):
            found.append(dict(value.patient))
        elif isinstance(value, tuple | list):
            for item in value:
                walk(item)
        elif is_dataclass(value) and not isinstance(value, type):
            for f in fields(value):
                walk(getattr(value, f.name))

    walk(message)
    return found


def ids(case: tuple[Any, dict[str, Any]]) -> str:
    return type(case[0]).__name__


@pytest.mark.parametrize("case", CASES, ids=[ids(c) for c in CASES])
def test_every_message_survives_its_topic(case):
    message, _ = case
    back = decode(encode(message))
    assert back == message
    assert type(back) is type(message)
    assert patients(back) == patients(message)


@pytest.mark.parametrize("case", CASES, ids=[ids(c) for c in CASES])
def test_the_json_is_the_one_the_service_has_always_written(case):
    message, wire = case
    written = json.loads(encode(message))
    added = ADDED.get(wire["kind"], set()) & (written.keys() - wire.keys())
    assert {k: v for k, v in written.items() if k not in added} == wire
    assert next(iter(written)) == "kind"


@pytest.mark.parametrize("case", CASES, ids=[ids(c) for c in CASES])
def test_messages_written_before_decode_unchanged(case):
    message, wire = case
    back = decode(json.dumps(wire).encode())
    assert back == message
    assert patients(back) == patients(message)


def test_every_message_type_is_covered():
    covered = {type(message) for message, _ in CASES}
    assert covered == set(get_args(InboxMessage)) | set(get_args(SendCommand))


def test_a_send_command_without_a_directory_entry_has_no_profile():
    message = decode_send_command(encode(SendEmail.manual(7, NO_ENTRY)))
    assert isinstance(message, SendEmail)
    assert (message.therapist, message.therapist_id, message.content) == (None, 7, CONTENT)


def test_directory_profile_written_without_empty_fields_decodes():
    """The ingest agent wrote a profile without its empty fields (``exclude_none``)."""
    wire = {
        "kind": "therapist_upserted",
        "profile": {"therapist_id": 7, "email": "t7@praxis.example", "first_name": "Eva", "last_name": "Müller"},
        "event_id": "e1",
        "occurred_at": "2026-11-23T08:00:00+00:00",
        "therapist_id": 7,
    }
    message = decode_inbox(json.dumps(wire))
    assert message == TherapistUpserted("e1", 7, NOW, TherapistProfile(7, "t7@praxis.example", "Eva", "Müller"))


@pytest.mark.parametrize(
    ("decoder", "raw"),
    [
        (decode_send_command, b'{"kind": "tick", "now": "2026-11-23T08:00:00+00:00"}'),  # an inbox message
        (decode_inbox, b'{"kind": "send_email"}'),
        (decode_inbox, b'{"kind": "no_such_kind"}'),
        (decode_send_command, b'{"email_key": "k1"}'),
        (decode_send_command, b"[1, 2]"),
    ],
)
def test_a_message_of_another_topic_or_kind_is_refused(decoder, raw):
    with pytest.raises(UnknownMessage):
        decoder(raw)
