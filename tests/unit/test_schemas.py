"""Input validation and dead-letter records (CONTRACT §1, §3, §5.8)."""

import base64
import json
from datetime import UTC, datetime

import pytest

from streams.kafka.dead_letters import dead_letter
from streams.messages.inputs import MATCHING_EVENTS, THERAPIST_EVENTS
from streams.messages.parsing import InputEvent, Rejection, parse_input


def event(event_type, payload, **envelope):
    document = {
        "event_id": "0b7f5c1e-2f7a-4a44-9a53-1d4f3c3f6a10",
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": "2026-11-22T09:30:00+00:00",
        "producer": "matching-service",
        "payload": payload,
    }
    document.update(envelope)
    return json.dumps(document).encode()


MATCH = {
    "placement_request_id": 1,
    "therapist_id": 2,
    "patient_id": 3,
    "patient": {"registered_at": "2026-01-01T10:00:00+01:00", "first_name": "Anna", "age": 34},
}
THERAPIST = {"therapist_id": 2, "email": "eva@praxis.example", "first_name": "Eva", "last_name": "Müller"}
ALL = {**MATCHING_EVENTS, **THERAPIST_EVENTS}


def test_valid_events_are_accepted():
    parsed = parse_input(event("match.created", MATCH), MATCHING_EVENTS)
    assert isinstance(parsed, InputEvent)
    assert parsed.payload.patient.registered_at == datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    assert isinstance(parse_input(event("therapist.updated", THERAPIST), THERAPIST_EVENTS), InputEvent)
    extra = parse_input(event("match.created", {**MATCH, "future_field": 1}, trace="x"), MATCHING_EVENTS)
    assert isinstance(extra, InputEvent)  # producers may add fields


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (None, "empty message"),
        (event("match.created", MATCH, event_id="abc"), "event_id"),
        (event("match.created", MATCH, occurred_at="2026-11-22T09:30:00"), "occurred_at: Input should have timezone"),
        (event("match.created", MATCH, schema_version=2), "schema_version: unsupported"),
        (json.dumps({"event_type": "match.created"}).encode(), "invalid envelope"),
        (event("match.deleted", MATCH), "event_type: unknown event type 'match.deleted'"),
        (event("therapist.created", THERAPIST), "unknown event type"),  # wrong topic
        (event("match.created", {**MATCH, "therapist_id": "zwei"}), "payload.therapist_id"),
        (event("match.created", {k: v for k, v in MATCH.items() if k != "patient"}), "payload.patient: Field required"),
        (event("match.created", {**MATCH, "patient": {"registered_at": "gestern"}}), "payload.patient.registered_at"),
        (
            event("match.created", {**MATCH, "patient": {"registered_at": "2026-01-01T10:00:00"}}),
            "payload.patient.registered_at",
        ),
        (event("match.created", {**MATCH, "patient": {**MATCH["patient"], "age": -1}}), "payload.patient.age"),
        (event("match.created", {**MATCH, "placement_request_id": 0}), "payload.placement_request_id"),
    ],
)
def test_bad_matching_input_is_rejected_naming_the_field(raw, fragment):
    rejection = parse_input(raw, MATCHING_EVENTS)
    assert isinstance(rejection, Rejection)
    assert fragment in rejection.reason


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({**THERAPIST, "email": "eva-at-praxis"}, "payload.email"),
        ({**THERAPIST, "first_name": "Eva\r\nBcc: x@y"}, "payload.first_name: must not contain line breaks"),
        ({k: v for k, v in THERAPIST.items() if k != "last_name"}, "payload.last_name"),
        ({**THERAPIST, "contact_blocked": "yes"}, "payload.contact_blocked"),
    ],
)
def test_bad_therapist_input_is_rejected(payload, fragment):
    rejection = parse_input(event("therapist.created", payload), THERAPIST_EVENTS)
    assert isinstance(rejection, Rejection)
    assert fragment in rejection.reason


def test_reasons_never_contain_the_offending_values():
    secret = "Depression-Diagnose-Geheim"
    raw = event("match.created", {**MATCH, "patient": {"registered_at": secret}})
    rejection = parse_input(raw, ALL)
    assert secret not in rejection.reason


def test_dead_letter_keeps_the_original_bytes():
    received = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    record = json.loads(
        dead_letter(
            reason="not JSON",
            topic="matching-events",
            partition=3,
            offset=17,
            key=b"42",
            value=b"{broken \xc3\xa4",
            received_at=received,
        )
    )
    assert record == {
        "reason": "not JSON",
        "source_topic": "matching-events",
        "partition": 3,
        "offset": 17,
        "key": "42",
        "value": "{broken ä",
        "received_at": received.isoformat(),
    }
    binary = json.loads(
        dead_letter(
            reason="not UTF-8", topic="t", partition=0, offset=0, key=None, value=b"\xff\x00", received_at=received
        )
    )
    assert binary["value_encoding"] == "base64"
    assert base64.b64decode(binary["value"]) == b"\xff\x00"
    assert binary["key"] is None


from streams.messages.commands import COMMANDS  # noqa: E402


@pytest.mark.parametrize(
    ("event_type", "payload", "fragment"),
    [
        ("communication.create_email", {"therapist_id": 1}, "give either template"),
        ("communication.create_email", {"therapist_id": 1, "template": "x", "subject": "s"}, "give either template"),
        ("communication.create_email", {"therapist_id": 1, "subject": "s"}, "subject and body_html are both needed"),
        (
            "communication.create_email",
            {"therapist_id": 1, "subject": "a\nBcc: x", "body_html": "<p>x"},
            "payload.subject",
        ),
        (
            "communication.create_email",
            {"therapist_id": 1, "template": "x", "recipient_email": "nope"},
            "payload.recipient_email",
        ),
        ("communication.update_email", {"email_id": 1}, "nothing to change"),
        ("communication.record_email_response", {"email_id": 1, "responses": []}, "payload.received_at"),
        (
            "communication.record_email_response",
            {
                "email_id": 1,
                "received_at": "2026-11-22T10:00:00+01:00",
                "responses": [{"placement_request_id": 3, "outcome": "vielleicht"}],
            },
            "payload.responses.0.outcome",
        ),
        ("communication.update_email_batch", {"email_id": 1, "placement_request_id": 2}, "payload.outcome"),
        ("communication.send_fax", {}, "unknown event type"),
    ],
)
def test_malformed_commands_are_rejected_naming_the_field(event_type, payload, fragment):
    rejection = parse_input(event(event_type, payload), COMMANDS)
    assert isinstance(rejection, Rejection)
    assert fragment in rejection.reason


def test_valid_commands():
    for event_type, payload in [
        ("communication.create_email", {"therapist_id": 1, "template": "initial_contact", "context": {"x": 1}}),
        (
            "communication.create_email",
            {"therapist_id": 1, "subject": "Rückfrage", "body_html": "<p>Hallo</p>", "queue": False},
        ),
        ("communication.update_email", {"email_id": 1, "status": "in_warteschlange"}),
        (
            "communication.record_email_response",
            {
                "email_id": 1,
                "received_at": "2026-11-22T10:00:00+01:00",
                "responses": [{"placement_request_id": 3, "outcome": "no_capacity"}],
            },
        ),
        (
            "communication.update_email_batch",
            {"email_id": 1, "placement_request_id": 3, "outcome": "needs_info", "notes": "x"},
        ),
    ]:
        assert isinstance(parse_input(event(event_type, payload), COMMANDS), InputEvent)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({**MATCH, "placement_request_id": 2**31}, "payload.placement_request_id"),
        ({**MATCH, "therapist_id": 2**40}, "payload.therapist_id"),
    ],
)
def test_values_that_do_not_fit_the_database_are_refused_at_ingest(payload, fragment):
    assert fragment in parse_input(event("match.created", payload), MATCHING_EVENTS).reason


def test_status_longer_than_its_column_is_refused():
    payload = {"placement_request_id": 1, "therapist_id": 2, "patient_id": 3, "new_status": "x" * 33}
    assert "payload.new_status" in parse_input(event("match.status_changed", payload), MATCHING_EVENTS).reason
    title = {**THERAPIST, "title": "Dr. " * 20}
    assert "payload.title" in parse_input(event("therapist.updated", title), THERAPIST_EVENTS).reason
