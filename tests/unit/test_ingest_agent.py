"""The ingest agents against fake topics (no broker): valid inputs go to the inbox
as typed messages keyed by therapist, bad ones to the DLQ with a reason, and the
stream goes on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from domain.availability import NO_AVAILABILITY
from streams.agents.ingest import matching_ingest, therapist_ingest
from streams.messages import inbox
from streams.settings import Settings
from tests.events import encode, match_created, therapist_created
from tests.fakes import Record, recording_topics, sent, taken

SETTINGS = Settings.from_environ({})
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def inbox_messages(topics: object) -> list[tuple[bytes | None, inbox.InboxMessage]]:
    return [(s.key, inbox.decode(s.value)) for s in sent(topics.inbox)]  # type: ignore[attr-defined]


def dead_letters(topics: object) -> list[dict[str, object]]:
    return [json.loads(s.value) for s in sent(topics.dlq)]  # type: ignore[attr-defined]


async def test_a_match_goes_to_its_therapists_inbox_with_the_patients_details() -> None:
    topics = recording_topics()
    event = match_created(4711, 7, "2026-09-01T10:00:00+02:00", diagnosis="F32.1")
    await matching_ingest(topics, clock, SETTINGS).take(taken([Record(encode(event), b"4711", "matching-events")]))

    [(key, message)] = inbox_messages(topics)
    assert key == b"7"
    assert isinstance(message, inbox.MatchCreated)
    assert (message.event_id, message.therapist_id) == (event["event_id"], 7)
    assert message.request.placement_request_id == 4711
    assert message.request.registered_at == datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
    assert message.request.patient == {"first_name": "Pat4711", "diagnosis": "F32.1"}
    assert dead_letters(topics) == []


async def test_bad_input_is_dead_lettered_with_a_reason_and_the_next_input_still_flows() -> None:
    topics = recording_topics()
    good = match_created(1, 7, "2026-09-01T10:00:00+02:00")
    no_patient = match_created(2, 7, "2026-09-01T10:00:00+02:00")
    del no_patient["payload"]["patient"]
    records = [
        Record(b"{not json", b"x", "matching-events", 3, 40),
        Record(encode(no_patient), b"2", "matching-events", 3, 41),
        Record(encode(good), b"1", "matching-events", 3, 42),
    ]
    await matching_ingest(topics, clock, SETTINGS).take(taken(records))

    dead = dead_letters(topics)
    assert [(d["offset"], d["source_topic"], d["partition"]) for d in dead] == [
        (40, "matching-events", 3),
        (41, "matching-events", 3),
    ]
    assert str(dead[0]["reason"]).startswith("not JSON")
    assert "payload.patient" in str(dead[1]["reason"])
    assert dead[0]["value"] == "{not json"  # the original, to fix and replay
    assert [m.request.placement_request_id for _, m in inbox_messages(topics) if isinstance(m, inbox.MatchCreated)] == [
        1
    ]


async def test_an_invalid_availability_is_refused_on_its_own_and_the_rest_of_the_event_applies() -> None:
    topics = recording_topics()
    event = therapist_created(7, availability={"monday": [{"start": "12:00", "end": "10:00"}]})
    event["occurred_at"] = (NOW - timedelta(minutes=1)).isoformat()
    await therapist_ingest(topics, clock, SETTINGS).take(taken([Record(encode(event), b"7", "therapist-events")]))

    [dead] = dead_letters(topics)
    assert str(dead["reason"]).startswith("payload.availability")
    [(key, message)] = inbox_messages(topics)
    assert key == b"7"
    assert isinstance(message, inbox.TherapistUpserted)
    assert message.keep_availability
    assert message.profile.email == "therapeut7@praxis.example"
    assert message.profile.availability == NO_AVAILABILITY.as_mapping()


async def test_a_valid_availability_is_passed_on_in_its_checked_form() -> None:
    topics = recording_topics()
    event = therapist_created(7, availability={"monday": [{"start": "10:00", "end": "12:00"}]})
    event["occurred_at"] = (NOW - timedelta(minutes=1)).isoformat()
    await therapist_ingest(topics, clock, SETTINGS).take(taken([Record(encode(event), b"7", "therapist-events")]))

    [(_, message)] = inbox_messages(topics)
    assert isinstance(message, inbox.TherapistUpserted)
    assert not message.keep_availability
    assert message.profile.availability["monday"] == [{"start": "10:00", "end": "12:00"}]
    assert dead_letters(topics) == []


async def test_a_directory_event_from_too_far_in_the_future_is_dead_lettered_naming_occurred_at() -> None:
    topics = recording_topics()
    event = therapist_created(7)
    event["occurred_at"] = (NOW + timedelta(hours=1)).isoformat()
    await therapist_ingest(topics, clock, SETTINGS).take(taken([Record(encode(event), b"7", "therapist-events")]))

    [dead] = dead_letters(topics)
    assert str(dead["reason"]).startswith("occurred_at:")
    assert inbox_messages(topics) == []
