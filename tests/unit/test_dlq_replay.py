"""What ``commsvc dlq replay`` publishes, or why it publishes nothing (no broker):
a value is checked as the worker checks it, with the worker's reason; the event_id
is kept (or derived, the same at every replay); internal topics are not replayed."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.agents.ingest import matching_ingest, therapist_ingest
from streams.kafka.dead_letters import dead_letter
from streams.ops import dlq_replay
from streams.ops.dlq import DeadLetter, DlqError
from streams.ops.dlq_replay import PARTLY_APPLIED, ReplayRefused, derived_event_id, plan
from streams.ops.topic_reader import Broker
from streams.settings import Settings
from tests.events import encode, envelope, match_created, therapist_created
from tests.fakes import Record, recording_topics, sent, taken

SETTINGS = Settings.from_environ({"COMM_APP_ID": "svc"})
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def directory_event(therapist_id: int, **fields: Any) -> dict[str, Any]:
    return {**therapist_created(therapist_id, **fields), "occurred_at": NOW.isoformat()}


def dead(value: bytes | None, *, topic: str = "matching-events", reason: str = "bad", offset: int = 5, **ids: Any):
    raw = dead_letter(
        reason=reason,
        topic=topic,
        partition=1,
        offset=40,
        key=b"4711",
        value=value,
        received_at=NOW,
        event_id=ids.get("event_id"),
        event_type=ids.get("event_type"),
    )
    return DeadLetter.from_bytes(2, offset, raw)


async def worker_dead_letters(topic: str, values: list[bytes]) -> list[DeadLetter]:
    """What the worker's own ingest agent dead-letters for ``values``."""
    topics = recording_topics()
    make = matching_ingest if topic == SETTINGS.topic_matching else therapist_ingest
    records = [Record(value, b"4711", topic, 1, n) for n, value in enumerate(values)]
    await make(topics, clock, SETTINGS).take(taken(records))
    return [DeadLetter.from_bytes(0, n, s.value) for n, s in enumerate(sent(topics.dlq))]


def bad_matches() -> list[bytes]:
    no_patient = match_created(2, 7, "2026-09-01T10:00:00+02:00")
    del no_patient["payload"]["patient"]
    big = match_created(3, 7, "2026-09-01T10:00:00+02:00", notes="x" * (70 * 1024))
    return [
        b"{not json",
        encode(no_patient),
        encode(match_created(1, 7, "gestern")),
        encode({**match_created(4, 7, "2026-09-01T10:00:00+02:00"), "schema_version": 2}),
        encode(envelope("match.exploded", {})),
        encode(big),
    ]


async def test_the_original_value_is_refused_with_the_reason_the_worker_gave():
    bad = bad_matches()
    records = await worker_dead_letters(SETTINGS.topic_matching, bad)
    assert len(records) == len(bad)
    for record in records:
        with pytest.raises(ReplayRefused) as refused:
            plan(SETTINGS, record, None, clock)
        assert str(refused.value).endswith(f": {record.reason}"), record.reason


async def test_a_directory_event_from_a_clock_far_ahead_is_refused_as_the_worker_refuses_it():
    ahead = directory_event(7)
    ahead["occurred_at"] = (NOW + timedelta(hours=1)).isoformat()
    [record] = await worker_dead_letters(SETTINGS.topic_therapists, [encode(ahead)])
    assert "COMM_CLOCK_SKEW_TOLERANCE" in (record.reason or "")
    with pytest.raises(ReplayRefused, match="COMM_CLOCK_SKEW_TOLERANCE") as refused:
        plan(SETTINGS, record, None, clock)
    assert str(refused.value).endswith(f": {record.reason}")
    ahead["occurred_at"] = NOW.isoformat()
    replay = plan(SETTINGS, record, encode(ahead), clock)
    assert replay.event_id == ahead["event_id"] and replay.value == encode(ahead)  # published as given


async def test_a_corrected_value_keeps_the_key_and_the_event_id_and_goes_to_the_source_topic():
    original = match_created(4711, 7, "gestern")
    [record] = await worker_dead_letters(SETTINGS.topic_matching, [encode(original)])
    corrected = json.loads(encode(original))
    corrected["payload"]["patient"]["registered_at"] = "2026-09-01T10:00:00+02:00"
    replay = plan(SETTINGS, record, encode(corrected), clock)
    assert (replay.topic, replay.key, replay.event_id) == ("matching-events", b"4711", original["event_id"])
    assert replay.value == encode(corrected) and replay.notes == () and replay.corrected
    assert replay.event_type == "match.created"


async def test_a_corrected_value_without_an_event_id_gets_the_original_one():
    original = match_created(4711, 7, "gestern")
    [record] = await worker_dead_letters(SETTINGS.topic_matching, [encode(original)])
    corrected = match_created(4711, 7, "2026-09-01T10:00:00+02:00")
    del corrected["event_id"]
    replay = plan(SETTINGS, record, encode(corrected), clock)
    assert json.loads(replay.value)["event_id"] == original["event_id"] == replay.event_id
    assert replay.notes == (f"event_id {original['event_id']} filled in",)


async def test_a_corrected_value_with_another_event_id_is_refused():
    [record] = await worker_dead_letters(SETTINGS.topic_matching, [encode(match_created(4711, 7, "gestern"))])
    other = match_created(4711, 7, "2026-09-01T10:00:00+02:00")  # a new event_id
    with pytest.raises(ReplayRefused, match="is not the one a replay of this record carries"):
        plan(SETTINGS, record, encode(other), clock)


async def test_without_a_usable_event_id_one_is_derived_from_the_record_the_same_every_time():
    broken = {**match_created(4, 7, "2026-09-01T10:00:00+02:00"), "event_id": "nicht-uuid"}
    [record] = await worker_dead_letters(SETTINGS.topic_matching, [encode(broken)])
    fixed_ids = {plan(SETTINGS, record, encode(broken), clock).event_id for _ in range(2)}
    assert fixed_ids == {derived_event_id(SETTINGS, record)}
    assert uuid.UUID(derived_event_id(SETTINGS, record)).version == 5
    replay = plan(SETTINGS, record, encode(broken), clock)
    assert json.loads(replay.value)["event_id"] == replay.event_id
    assert "replaced by" in replay.notes[0] and "no usable event_id" in replay.notes[0]
    other_record = DeadLetter.from_bytes(record.partition, record.offset + 1, json.dumps(record.fields).encode())
    assert derived_event_id(SETTINGS, other_record) != replay.event_id


async def test_an_availability_refused_after_the_rest_applied_is_replayed_under_a_new_event_id():
    event = directory_event(7, availability={"monday": [{"start": "10:00", "end": "09:00"}]})
    [record] = await worker_dead_letters(SETTINGS.topic_therapists, [encode(event)])
    assert PARTLY_APPLIED in (record.reason or "") and record.event_id == event["event_id"]
    with pytest.raises(ReplayRefused, match=r"payload\.availability"):
        plan(SETTINGS, record, None, clock)  # the original still fails the same way
    event["payload"]["availability"] = {"monday": [{"start": "09:00", "end": "10:00"}]}
    replay = plan(SETTINGS, record, encode(event), clock)
    assert replay.event_id == derived_event_id(SETTINGS, record) != event["event_id"]
    assert json.loads(replay.value)["event_id"] == replay.event_id
    assert "would be taken for a duplicate" in replay.notes[0]


def test_a_command_is_checked_as_the_command_agent_checks_it():
    bad = envelope("communication.cancel_phone_call", {"phone_call_id": "neun"})
    record = dead(encode(bad), topic="communication-commands", event_id=bad["event_id"])
    with pytest.raises(ReplayRefused, match=r"invalid payload: payload\.phone_call_id"):
        plan(SETTINGS, record, None, clock)
    bad["payload"]["phone_call_id"] = 9
    assert plan(SETTINGS, record, encode(bad), clock).topic == "communication-commands"


@pytest.mark.parametrize("internal", ["svc-therapist-inbox", "svc-send-commands", "svc-therapists-changelog"])
def test_records_of_internal_topics_are_not_replayed(internal: str):
    record = dead(b'{"kind": "match_created"}', topic=internal, reason="internal error: KeyError")
    with pytest.raises(ReplayRefused, match=f"came from {internal}, an internal topic"):
        plan(SETTINGS, record, None, clock)


def test_a_record_from_a_topic_that_is_no_input_here_is_not_replayed():
    record = dead(encode(match_created(1, 7, "2026-09-01T10:00:00+02:00")), topic="old-matching-events")
    with pytest.raises(ReplayRefused, match="none of this configuration's input topics"):
        plan(SETTINGS, record, None, clock)


def test_a_record_without_its_value_needs_a_corrected_one():
    record = dead(b'{"x": "' + b"a" * (1024 * 1024) + b'"}')
    with pytest.raises(ReplayRefused, match="give a corrected one with --value-file"):
        plan(SETTINGS, record, None, clock)


def test_the_question_names_what_is_published_where():
    event = match_created(4711, 7, "2026-09-01T10:00:00+02:00")
    replay = plan(SETTINGS, dead(encode(event), reason="internal error: X"), None, clock)
    question = dlq_replay.question(replay, None)
    assert question.startswith(f"Publish match.created {event['event_id']} (the original value")
    assert question.endswith("to matching-events with key 4711?")


class _Stdin:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_confirmation_is_asked_on_a_terminal_and_refused_without_one(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.stdin", _Stdin(False))
    with pytest.raises(DlqError, match="pass --yes"):
        dlq_replay.ask_on_terminal("Publish?")
    monkeypatch.setattr("sys.stdin", _Stdin(True))
    answers = iter(["y", "", "nein"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert [dlq_replay.ask_on_terminal("Publish?") for _ in range(3)] == [True, False, False]


async def test_a_replay_that_is_not_confirmed_publishes_nothing(monkeypatch: pytest.MonkeyPatch):
    event = match_created(4711, 7, "2026-09-01T10:00:00+02:00")
    record = dead(encode(event), reason="internal error: X")

    async def fetch(_: object, record_id: str) -> DeadLetter:
        return record

    async def publish(*_: object) -> tuple[int, int]:
        raise AssertionError("published")

    monkeypatch.setattr(dlq_replay, "fetch", fetch)
    monkeypatch.setattr(dlq_replay, "publish", publish)
    asked: list[str] = []
    err: list[str] = []
    code = await dlq_replay.run_replay(
        Broker(SETTINGS),
        "2:5",
        corrected=None,
        value_file=None,
        yes=False,
        confirm=lambda question: asked.append(question) or False,
        clock=clock,
        out=err.append,
        err=err.append,
    )
    assert code == 1 and len(asked) == 1 and err == ["nothing published"]
