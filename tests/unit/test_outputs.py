# ruff: noqa: E501 - the wire samples are kept whole, as the service wrote them
"""The models of what the service publishes (streams.messages.outputs): each writes,
byte for byte, what the service wrote before it had them; the service builds output
events only through them; and the e2e harness's check against the published schemas
catches a record that does not match."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_type_hints

import pytest

from streams.agents.outbound import Outbound
from streams.kafka import dead_letters
from streams.kafka.dead_letters import dead_letter
from streams.messages.output_envelope import Event, OutputPayload, encode_event
from streams.messages.outputs import DEAD_LETTER, OUTPUT_EVENTS, DeadLetter
from streams.persistence.outbox import event_row
from tests.e2e.harness import Collector, published_schemas

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "communication-events"

# Output events as the service wrote them before the models (from the unit and
# integration tests' outboxes), one per shape: a key left out is left out, a null
# is null, and every time keeps its offset.
WIRE = [
    # alert: about an email, a call, a parked outbox row (no therapist), the service itself
    '{"event_id":"46a2fae4-920d-405f-9a7d-b86d76c11d16","event_type":"communication.alert","schema_version":1,"occurred_at":"2026-11-23T10:00:00+01:00","producer":"communication-service","payload":{"therapist_id":4,"severity":"warning","code":"no_call_slot","email_id":1,"message":"no follow-up call could be booked for email 1: no 5m call fits into the therapist\'s availability between 2026-11-23T11:00+01:00 and 2026-11-23T13:00+01:00; a follow-up email goes out instead"}}',
    '{"event_id":"7f617318-d145-400e-89e9-a9e969134366","event_type":"communication.alert","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":8,"severity":"warning","code":"call_busy","phone_call_id":1,"message":"phone call 1 with therapist 8: nobody answered after 3 attempt(s) (busy); the maximum is 3"},"causation_id":"busy-3"}',
    '{"event_id":"2880ef69-72df-4ab9-b280-97bb0d8dd0b7","event_type":"communication.alert","schema_version":1,"occurred_at":"2026-11-23T08:00:00+00:00","producer":"communication-service","payload":{"therapist_id":null,"severity":"error","code":"event_unpublishable","outbox_id":2,"message":"an event for topic t could not be published and was set aside: MessageSizeTooLargeError: [Error 10] MessageSizeTooLargeError: the message is 2000000 bytes"}}',
    '{"event_id":"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9","event_type":"communication.alert","schema_version":1,"occurred_at":"2026-11-23T08:00:00.250000+00:00","producer":"communication-service","payload":{"therapist_id":null,"severity":"error","code":"smtp_unavailable","message":"no SMTP session could be opened for 5 minutes (refused); emails are queued"}}',
    # command_rejected: keyed by no therapist, and by one
    '{"event_id":"9e7b4346-b9dc-4227-8c98-653fed5fb6de","event_type":"communication.command_rejected","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":null,"command_id":"b703af82-123e-5761-af17-aeba91eac3a5","command_type":"communication.schedule_phone_call","reason":"Mon 23.11.2026 10:30 (therapist\'s time) cannot be booked: it must start on the 5-minute grid inside the therapist\'s phone availability and not overlap another call with them (or exceed the staff capacity)"},"causation_id":"b703af82-123e-5761-af17-aeba91eac3a5"}',
    '{"event_id":"3c1f8a2e-5d4b-5e6f-9a8b-7c6d5e4f3a2b","event_type":"communication.command_rejected","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":7,"command_id":"not-a-uuid","command_type":"communication.lift_email_suppression","reason":"email to therapist 7 is not suppressed"},"causation_id":"not-a-uuid"}',
    '{"event_id":"d50c7642-4226-42e6-940d-a220b5c3587a","event_type":"communication.daily_call_list","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":null,"date":"2026-11-23","calls":[{"phone_call_id":2,"therapist_id":11,"therapist_name":"Eva Müller","phone":"+49 30 1","scheduled_at":"2026-11-23T09:10:00+00:00","duration_minutes":5,"reason":"manual","attempt":1,"placement_request_ids":[112]},{"phone_call_id":1,"therapist_id":12,"therapist_name":null,"phone":null,"scheduled_at":"2026-11-23T09:30:00+00:00","duration_minutes":5,"reason":"undeliverable","attempt":2,"placement_request_ids":[111]}]}}',
    '{"event_id":"68ed0e92-f57b-47f1-b019-ca6c5067b4b1","event_type":"communication.email_created","schema_version":1,"occurred_at":"2026-11-23T08:00:00+00:00","producer":"communication-service","payload":{"therapist_id":1,"email_id":1,"kind":"contact_request","template":"batch_request","subject":"batch_request (1)","placement_request_ids":[1],"status":"in_warteschlange"}}',
    '{"event_id":"5b3a2c1d-0e9f-48a7-b6c5-d4e3f2a1b0c9","event_type":"communication.email_created","schema_version":1,"occurred_at":"2026-11-23T08:00:00+00:00","producer":"communication-service","payload":{"therapist_id":1,"email_id":3,"kind":"manual","template":null,"subject":"Rückfrage","placement_request_ids":[],"status":"entwurf"},"causation_id":"0b7f5c1e-2f7a-4a44-9a53-1d4f3c3f6a10"}',
    '{"event_id":"c993ac91-31e7-4201-8aac-724ced011232","event_type":"communication.email_failed","schema_version":1,"occurred_at":"2026-11-23T08:00:00+00:00","producer":"communication-service","payload":{"therapist_id":2,"email_id":2,"error":"450 busy","retry_count":1,"will_retry":true,"next_attempt_at":"2026-11-23T08:00:15+00:00"}}',
    '{"event_id":"1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d","event_type":"communication.email_failed","schema_version":1,"occurred_at":"2026-11-23T08:00:00+00:00","producer":"communication-service","payload":{"therapist_id":2,"email_id":4,"error":null,"retry_count":0,"will_retry":false,"next_attempt_at":null}}',
    '{"event_id":"ab41524b-eba3-46d2-bc8f-24ef3e11f7c9","event_type":"communication.email_queued","schema_version":1,"occurred_at":"2026-11-23T08:00:00+00:00","producer":"communication-service","payload":{"therapist_id":1,"email_id":1}}',
    '{"event_id":"d7577892-2e37-4ca6-a850-f0c6f322ade7","event_type":"communication.email_response_recorded","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":13,"email_id":1,"received_at":"2026-11-23T09:00:00+01:00","responses":[{"placement_request_id":132,"outcome":"rejected"},{"placement_request_id":133,"outcome":"no_capacity"}]},"causation_id":"e279373b-c935-581f-a0d4-38146e6879a0"}',
    '{"event_id":"0f2ab893-fb6f-4b48-911b-a2f56779dd31","event_type":"communication.email_sent","schema_version":1,"occurred_at":"2026-11-16T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":1,"email_id":1,"message_id":"<k-1-11@therapieplatz.example>","sent_at":"2026-11-16T09:00:00+01:00","placement_request_ids":[11,12,13,14]}}',
    '{"event_id":"d6b3033a-b5cb-5ff7-91ce-599cf2d4ece7","event_type":"communication.email_suppressed","schema_version":1,"occurred_at":"2026-11-23T09:01:00+01:00","producer":"communication-service","payload":{"therapist_id":7,"address_hash":"738f6ae233b3085510053379d43dc24bc297605a63fd52564909b3d76eead276","reason":"550 5.1.1","email_id":42}}',
    '{"event_id":"8d7c6b5a-4f3e-5d2c-9b1a-0f9e8d7c6b5a","event_type":"communication.email_suppression_lifted","schema_version":1,"occurred_at":"2026-11-23T09:01:00+01:00","producer":"communication-service","payload":{"therapist_id":7,"address_hash":"738f6ae233b3085510053379d43dc24bc297605a63fd52564909b3d76eead276","reason":"address_changed"},"causation_id":"6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d"}',
    '{"event_id":"9c8b7a6f-5e4d-5c3b-8a2f-1e0d9c8b7a6f","event_type":"communication.email_suppression_lifted","schema_version":1,"occurred_at":"2026-11-23T09:01:00+01:00","producer":"communication-service","payload":{"therapist_id":7,"address_hash":"738f6ae233b3085510053379d43dc24bc297605a63fd52564909b3d76eead276","reason":"lifted_by_staff","comment":"Postfach wieder erreichbar"},"causation_id":"6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d"}',
    '{"event_id":"2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e","event_type":"communication.email_updated","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":7,"email_id":3,"changed":["body_html","body_text"],"status":"entwurf"},"causation_id":"0b7f5c1e-2f7a-4a44-9a53-1d4f3c3f6a10"}',
    '{"event_id":"7587d099-d2ed-472a-b055-5bb64b55dcb3","event_type":"communication.phone_call_cancelled","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":12,"phone_call_id":1,"reason":"therapist_deleted"}}',
    '{"event_id":"4eeab697-37ec-4e7d-a530-59a57e96fc71","event_type":"communication.phone_call_completed","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":8,"phone_call_id":1,"status":"busy","outcomes":[]},"causation_id":"busy-3"}',
    '{"event_id":"4eeab697-37ec-4e7d-a530-59a57e96fc72","event_type":"communication.phone_call_completed","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":9,"phone_call_id":1,"status":"completed","outcomes":[{"placement_request_id":91,"outcome":"accepted","notes":"ab Januar"},{"placement_request_id":92,"outcome":"rejected","notes":null}]},"causation_id":"ce2e2260-d43f-5470-953b-cd85cb4618ec"}',
    '{"event_id":"0cd156dd-ce9e-4ae6-9fe1-176cd8a489b5","event_type":"communication.phone_call_reminder","schema_version":1,"occurred_at":"2026-11-23T08:45:00+00:00","producer":"communication-service","payload":{"therapist_id":10,"phone_call_id":1,"scheduled_at":"2026-11-23T09:00:00+00:00","late":false}}',
    '{"event_id":"4b4ad3de-b6b0-4789-8cb1-a783ce54da26","event_type":"communication.phone_call_rescheduled","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":8,"phone_call_id":1,"scheduled_at":"2026-11-24T13:00:00+00:00","previous_scheduled_at":"2026-11-23T09:00:00+00:00","attempt":2},"causation_id":"no-answer-2"}',
    '{"event_id":"5ddaa50d-7dc6-4fe3-a243-f0277f489609","event_type":"communication.phone_call_scheduled","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":1,"phone_call_id":1,"scheduled_at":"2026-11-23T09:00:00+00:00","duration_minutes":5,"placement_request_ids":[11],"reason":"follow_up"}}',
    '{"event_id":"ed6ec122-fffd-49b6-8f0f-7e8607ab2ff6","event_type":"communication.phone_call_scheduled","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":5,"phone_call_id":1,"scheduled_at":"2026-11-23T10:30:00+01:00","duration_minutes":5,"placement_request_ids":[51],"reason":"manual"},"causation_id":"78a58f58-595e-5dba-8fd8-0f47e9b7a849"}',
    '{"event_id":"84b2527f-07dc-44c8-b45e-b3e3c898b211","event_type":"communication.phone_call_updated","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":13,"phone_call_id":1,"placement_request_ids":[132,133],"removed_placement_request_ids":[131],"reason":"request withdrawn"}}',
    '{"event_id":"84b2527f-07dc-44c8-b45e-b3e3c898b212","event_type":"communication.phone_call_updated","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":13,"phone_call_id":1,"notes":"vormittags besser"},"causation_id":"e279373b-c935-581f-a0d4-38146e6879a0"}',
    '{"event_id":"3e4f5a6b-7c8d-5e9f-8a0b-1c2d3e4f5a6b","event_type":"communication.placement_dropped","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":7,"placement_request_id":4711,"patient_id":1234,"reason":"withdrawn"},"causation_id":"0b7f5c1e-2f7a-4a44-9a53-1d4f3c3f6a10"}',
    '{"event_id":"43c8f426-d2a4-4902-a7d6-e994e2ebbb36","event_type":"communication.placement_response","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":13,"placement_request_id":132,"patient_id":1132,"outcome":"rejected","channel":"email","email_id":1},"causation_id":"e279373b-c935-581f-a0d4-38146e6879a0"}',
    '{"event_id":"a8af9bbc-b6da-442e-a8be-eb0740baa86c","event_type":"communication.placement_response","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":9,"placement_request_id":91,"patient_id":null,"outcome":"accepted","channel":"phone","phone_call_id":1},"causation_id":"ce2e2260-d43f-5470-953b-cd85cb4618ec"}',
    # Added in v1.1 (issues 17 and 18).
    '{"event_id":"f88de84f-d50e-5dff-9584-c70658360c5f","event_type":"communication.bounce_recorded","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":7,"email_id":42,"type":"soft","soft_bounce_count":2,"suppressed":false},"causation_id":"0b7f5c1e-2f7a-4a44-9a53-1d4f3c3f6a10"}',
    '{"event_id":"d8da569c-6249-5269-8919-d08aa5f9088b","event_type":"communication.contact_preference_changed","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":7,"channel":"phone_only","source":"one_click"},"causation_id":"0b7f5c1e-2f7a-4a44-9a53-1d4f3c3f6a10"}',
    '{"event_id":"a18c247f-de11-579b-9060-5ed873649256","event_type":"communication.contact_preference_changed","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":7,"channel":"email","source":"command","comment":"wieder per E-Mail"},"causation_id":"0b7f5c1e-2f7a-4a44-9a53-1d4f3c3f6a10"}',
    '{"event_id":"6b316009-58f7-5a09-b446-4ea0b2caef89","event_type":"communication.email_opened","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":7,"email_id":42,"first_opened_at":"2026-11-23T09:00:00+01:00","open_count":1},"causation_id":"0b7f5c1e-2f7a-4a44-9a53-1d4f3c3f6a10"}',
    '{"event_id":"197ff35b-1838-5aaa-b88a-5710a3510aee","event_type":"communication.email_link_clicked","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":7,"email_id":42,"link_position":2,"clicked_at":"2026-11-23T09:00:00+01:00"},"causation_id":"0b7f5c1e-2f7a-4a44-9a53-1d4f3c3f6a10"}',
    '{"event_id":"efe73abf-9a64-5e1a-b966-d789f4658277","event_type":"communication.patient_erased","schema_version":1,"occurred_at":"2026-11-23T09:00:00+01:00","producer":"communication-service","payload":{"therapist_id":null,"patient_id":1234,"waiting_requests":1,"emails":2,"batch_entries":2,"call_entries":1,"delivered_emails":1},"causation_id":"0b7f5c1e-2f7a-4a44-9a53-1d4f3c3f6a10"}',
]

# DLQ records as the service wrote them before (spaced JSON, unlike the events).
WIRE_DLQ = [
    '{"reason": "invalid payload: payload.patient: Field required", "source_topic": "matching-events", "partition": 3, "offset": 41, "received_at": "2026-11-23T08:00:00+00:00", "key": "2", "event_id": "cc0bb3d4-302b-4383-8897-e1e71b9d889b", "event_type": "match.created", "value": "{\\"event_id\\": \\"cc0bb3d4-302b-4383-8897-e1e71b9d889b\\", \\"event_type\\": \\"match.created\\", \\"schema_version\\": 1, \\"occurred_at\\": \\"2026-12-01T15:38:42.430409+00:00\\", \\"producer\\": \\"tests\\", \\"payload\\": {\\"placement_request_id\\": 2, \\"therapist_id\\": 7, \\"patient_id\\": 100002}}"}',
    '{"reason": "invalid payload: payload.patient.registered_at: Input should be a valid datetime", "source_topic": "matching-events", "partition": 3, "offset": 41, "received_at": "2026-11-23T08:00:00+00:00", "key": "/w==", "key_encoding": "base64", "value": "//4gYmluYXJ5", "value_encoding": "base64"}',
    '{"reason": "not JSON: Expecting property name enclosed in double quotes at line 1 column 2", "source_topic": "matching-events", "partition": 3, "offset": 40, "received_at": "2026-11-23T08:00:00+00:00", "key": "x", "value": "{not json"}',
    '{"reason": "r", "source_topic": "t", "partition": 1, "offset": 2, "received_at": "2026-11-23T09:00:00+00:00", "key": "7", "value": null, "value_bytes": 1500000, "value_omitted": "the value (1500000 bytes) is too large to copy here; it stays at source_topic/partition/offset for its topic\'s retention"}',
    '{"reason": "empty message", "source_topic": "matching-events", "partition": 0, "offset": 0, "received_at": "2026-11-22T10:00:00+00:00", "key": null, "value": null}',
]


def _id(wire: str) -> str:
    document = json.loads(wire)
    return str(document.get("event_type", "dead_letter"))


@pytest.mark.parametrize("wire", WIRE, ids=_id)
def test_each_output_model_writes_what_the_service_wrote_before(wire: str) -> None:
    document = json.loads(wire)
    model = OUTPUT_EVENTS[document["event_type"]]
    payload = model.model_validate(document["payload"])
    row = event_row(
        TOPIC,
        payload,
        datetime.fromisoformat(document["occurred_at"]),
        causation_id=document.get("causation_id"),
        event_id=document["event_id"],
    )
    assert row["value"] == wire  # byte for byte: key order, nulls, left-out keys, offsets
    therapist_id = document["payload"]["therapist_id"]
    assert row["key"] == (None if therapist_id is None else str(therapist_id))


def test_every_published_event_type_has_a_model_and_an_example_here() -> None:
    assert {json.loads(wire)["event_type"] for wire in WIRE} == set(OUTPUT_EVENTS)
    for event_type, model in OUTPUT_EVENTS.items():
        assert event_type == model.EVENT_TYPE
        assert "therapist_id" in model.model_fields  # CONTRACT §4 (null for the few about no therapist)


@pytest.mark.parametrize("wire", WIRE_DLQ, ids=range(len(WIRE_DLQ)))
def test_the_dead_letter_model_writes_what_the_service_wrote_before(wire: str) -> None:
    assert DEAD_LETTER is DeadLetter
    record = DeadLetter.model_validate(json.loads(wire))
    assert dead_letters._encode(record).decode() == wire


def test_dead_letter_builds_its_record_through_the_model() -> None:
    raw = dead_letter(
        reason="empty message",
        topic="matching-events",
        partition=0,
        offset=0,
        key=None,
        value=None,
        received_at=datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
    )
    assert raw.decode() == WIRE_DLQ[-1]


def test_times_keep_their_offset_and_utc_is_not_written_as_z() -> None:
    sample = json.loads(WIRE[-1])
    payload = OUTPUT_EVENTS[sample["event_type"]].model_validate(sample["payload"])
    at = datetime(2026, 11, 23, 8, 0, 0, 123456, tzinfo=UTC)
    value = json.loads(encode_event(payload, event_id=sample["event_id"], occurred_at=at))
    assert value["occurred_at"] == "2026-11-23T08:00:00.123456+00:00"
    assert "causation_id" not in value  # left out, not null, without a cause


def test_an_envelope_holds_only_the_payload_of_its_event_type() -> None:
    sample = json.loads(WIRE[0])
    payload = OUTPUT_EVENTS[sample["event_type"]].model_validate(sample["payload"])
    with pytest.raises(ValueError, match=r"a communication\.alert payload in a communication\.email_sent event"):
        Event[type(payload)](  # type: ignore[misc]
            event_id=sample["event_id"],
            event_type="communication.email_sent",
            occurred_at=datetime.now(UTC),
            payload=payload,
        )


def test_a_payload_is_checked_when_it_is_made() -> None:
    model = OUTPUT_EVENTS["communication.email_created"]
    payload = json.loads(WIRE[7])["payload"]
    with pytest.raises(ValueError, match="status"):
        model.model_validate({**payload, "status": "sent"})
    with pytest.raises(ValueError, match="extra"):
        model.model_validate({**payload, "extra": 1})


# -- the service publishes only through the models ------------------------------------


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in sorted((ROOT / "streams").rglob("*.py"))]


def test_no_code_path_builds_an_output_envelope_from_a_dict() -> None:
    found = []
    for path, tree in _sources():
        where = path.relative_to(ROOT)
        # The input envelope and its builder; the documentation's examples (never published).
        if where == Path("streams/messages/envelope.py") or where.parts[:2] == ("streams", "contract"):
            continue
        for node in ast.walk(tree):
            # The dict builder is for other producers' events (the demo plays inputs).
            called = getattr(node.func, "id", getattr(node.func, "attr", None)) if isinstance(node, ast.Call) else None
            if called == "envelope" and not any(keyword.arg == "producer" for keyword in node.keywords):
                found.append(f"{where}:{node.lineno}: envelope(...) without another producer")
            if isinstance(node, ast.Dict):
                keys = {key.value for key in node.keys if isinstance(key, ast.Constant)}
                if {"event_type", "payload"} <= keys:
                    found.append(f"{where}:{node.lineno}: an envelope written as a dict")
    assert found == []


def test_the_outbox_and_the_therapist_agent_take_payload_models() -> None:
    assert get_type_hints(event_row)["payload"] is OutputPayload
    assert get_type_hints(Outbound._event)["payload"] is OutputPayload


# -- the e2e harness's check against the published schemas -----------------------------


@pytest.mark.parametrize("wire", WIRE, ids=_id)
def test_what_the_service_writes_matches_its_published_schema(wire: str) -> None:
    assert published_schemas().event(json.loads(wire)) is None


@pytest.mark.parametrize("wire", WIRE_DLQ, ids=range(len(WIRE_DLQ)))
def test_dead_letters_match_their_published_schema(wire: str) -> None:
    assert published_schemas().dead_letter(json.loads(wire)) is None


def _record(topic: str, document: dict[str, Any] | str) -> SimpleNamespace:
    value = document if isinstance(document, str) else json.dumps(document)
    return SimpleNamespace(topic=topic, partition=0, offset=5, value=value.encode())


def test_the_collector_fails_at_the_first_record_that_does_not_match() -> None:
    schemas = published_schemas()
    collector = Collector("localhost:9092", ["events", "dlq"])
    collector.checks = {"events": schemas.event, "dlq": schemas.dead_letter}
    sent = json.loads(WIRE[13])
    collector._check(_record("events", sent))
    collector._check(_record("dlq", json.loads(WIRE_DLQ[0])))
    collector._check(_record("inbox", {"kind": "anything"}))  # not a public topic: not checked
    collector.raise_mismatch()  # nothing wrong so far

    collector._check(_record("events", {**sent, "payload": {**sent["payload"], "sent_at": "gestern"}}))
    collector._check(_record("events", {**sent, "event_type": "communication.email_exploded"}))
    collector._check(_record("dlq", {**json.loads(WIRE_DLQ[0]), "partition": "3"}))
    collector._check(_record("events", "{not json"))
    with pytest.raises(AssertionError, match=r"events\[0\]@5 does not match its published schema: payload/sent_at"):
        collector.raise_mismatch()
    assert [m.split("\n")[0].split(": ", 1)[1] for m in collector.mismatches[1:]] == [
        "no published schema for event type 'communication.email_exploded'",
        "partition: '3' is not of type 'integer'",
        "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
    ]
