"""Input limits, clock skew, oversize dead letters and produce errors waiting cannot
cure (issue 12, points 4 and 5): the edges' rules, without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from streams.agents.ingest import IngestAgent, InputLimits, therapist_message
from streams.kafka.dead_letters import MAX_RECORD_BYTES, dead_letter
from streams.kafka.publishing import PublishRefused, until_published
from streams.messages.inputs import MATCHING_EVENTS, THERAPIST_EVENTS
from streams.messages.parsing import InputEvent, Rejection, parse_input
from tests.events import encode, envelope, match_created, therapist_created

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_an_oversize_event_is_refused_naming_the_limit_and_its_largest_field():
    raw = encode(match_created(1, 1, "2026-01-01T10:00:00+01:00", notes="x" * 70_000))
    rejection = parse_input(raw, MATCHING_EVENTS, max_bytes=64 * 1024)
    assert isinstance(rejection, Rejection)
    assert "over the limit of 65536 bytes (COMM_MAX_EVENT_BYTES)" in rejection.reason
    assert "its largest field is payload.patient.notes (70000 bytes)" in rejection.reason
    assert rejection.event_type == "match.created" and rejection.event_id is not None
    assert "xxxx" not in rejection.reason


@pytest.mark.parametrize("field", ["notes", "diagnosis", "insurance", "availability", "first_name"])
def test_each_free_text_field_of_a_patient_is_bounded(field):
    raw = encode(match_created(1, 1, "2026-01-01T10:00:00+01:00", **{field: "ä" * 2_000}))
    assert isinstance(parse_input(raw, MATCHING_EVENTS, max_text_bytes=4_000), InputEvent)  # 4,000 bytes
    rejection = parse_input(raw, MATCHING_EVENTS, max_text_bytes=3_999)
    assert isinstance(rejection, Rejection)
    assert f"payload.patient.{field}: is 4000 bytes, over the limit of 3999" in rejection.reason


def ingest(tolerance: timedelta | None) -> IngestAgent:
    limits = InputLimits(64 * 1024, 8 * 1024, tolerance)
    return IngestAgent(None, THERAPIST_EVENTS, therapist_message, lambda: NOW, limits)  # type: ignore[arg-type]


def test_a_directory_event_from_a_clock_far_ahead_is_refused_naming_occurred_at():
    future = therapist_created(1)
    future["occurred_at"] = "2099-01-01T00:00:00+00:00"
    rejection = ingest(timedelta(minutes=5))._parse(encode(future))
    assert isinstance(rejection, Rejection)
    assert rejection.reason.startswith("occurred_at: 2099-01-01T00:00:00+00:00 is")
    assert "COMM_CLOCK_SKEW_TOLERANCE" in rejection.reason and "5m00s allowed" in rejection.reason


@pytest.mark.parametrize(
    ("ahead", "accepted"),
    [(timedelta(0), True), (timedelta(minutes=5), True), (timedelta(minutes=5, seconds=1), False)],
)
def test_the_tolerance_edge(ahead, accepted):
    raw = encode(envelope("therapist.updated", therapist_created(1)["payload"], occurred_at=NOW + ahead))
    assert isinstance(ingest(timedelta(minutes=5))._parse(raw), InputEvent) is accepted


def test_match_events_are_not_checked_for_their_clock():
    payload = match_created(1, 1, "2026-01-01T10:00:00Z")["payload"]
    raw = encode(envelope("match.created", payload, occurred_at=NOW + timedelta(days=9)))
    limits = InputLimits(64 * 1024, 8192)  # no tolerance: matches order nothing by their time
    agent = IngestAgent(None, MATCHING_EVENTS, therapist_message, lambda: NOW, limits)  # type: ignore[arg-type]
    assert isinstance(agent._parse(raw), InputEvent)


def record(value: bytes) -> dict:
    return json.loads(dead_letter(reason="r", topic="t", partition=1, offset=2, key=b"7", value=value, received_at=NOW))


def test_a_dead_letter_keeps_the_value_while_the_record_fits_the_broker_limit():
    value = b'{"notes": "' + b"x" * 700_000 + b'"}'
    assert record(value)["value"] == value.decode()


def test_a_value_too_large_for_any_record_is_left_out_saying_where_it_is():
    value = b"y" * 1_500_000
    raw = dead_letter(reason="r", topic="t", partition=1, offset=2, key=b"7", value=value, received_at=NOW)
    assert len(raw) < MAX_RECORD_BYTES
    kept = json.loads(raw)
    assert kept["value"] is None and kept["value_bytes"] == 1_500_000
    assert (kept["source_topic"], kept["partition"], kept["offset"]) == ("t", 1, 2)
    assert "source_topic/partition/offset" in kept["value_omitted"]


async def test_a_message_the_broker_can_never_take_is_refused_at_once():
    calls = []

    async def too_large() -> None:
        calls.append(1)
        try:
            raise MessageSizeTooLargeError("1.4 MB")
        except MessageSizeTooLargeError as exc:  # as Faust's producer wraps it
            raise ProducerSendError("Error while sending") from exc

    with pytest.raises(PublishRefused, match="MessageSizeTooLargeError"):
        await until_published(too_large, lambda *a: None, first_delay=0.001)
    assert calls == [1]


async def test_broker_trouble_is_still_waited_out():
    attempts = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise KafkaConnectionError("down")
        return "ok"

    warnings = []
    assert await until_published(flaky, lambda *a: warnings.append(a), first_delay=0.001) == "ok"
    assert len(attempts) == 3 and len(warnings) == 2


async def test_a_bug_is_not_mistaken_for_broker_trouble():
    async def broken() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await until_published(broken, lambda *a: None, first_delay=0.001)
