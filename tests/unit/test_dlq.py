"""Dead-letter records as ``commsvc dlq list|show`` read them (no broker): the record
the worker writes, named by its own place in the DLQ; lines without values; the
selection by time, reason and count."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from streams.kafka.dead_letters import dead_letter
from streams.ops import dlq
from streams.ops.dlq import SUMMARY_FIELDS, DeadLetter, DlqError, format_line, format_record, parse_id, parse_since
from streams.ops.topic_reader import Broker
from streams.settings import Settings
from tests.events import encode, match_created

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
PATIENT = "Pat4711"  # in the value only


def record(
    partition: int = 0,
    offset: int = 0,
    *,
    value: bytes | None = None,
    key: bytes | None = b"4711",
    reason: str = "invalid payload: payload.patient.registered_at: Input should be a valid datetime",
    received_at: datetime = NOW,
    with_ids: bool = True,
) -> DeadLetter:
    value = encode(match_created(4711, 7, "gestern")) if value is None else value
    try:
        document = json.loads(value)
    except ValueError:
        document = {}
    raw = dead_letter(
        reason=reason,
        topic="matching-events",
        partition=3,
        offset=41,
        key=key,
        value=value,
        received_at=received_at,
        event_id=document.get("event_id") if with_ids else None,
        event_type=document.get("event_type") if with_ids else None,
    )
    return DeadLetter.from_bytes(partition, offset, raw)


def test_an_id_is_the_records_own_partition_and_offset():
    assert parse_id("2:17") == (2, 17)
    assert parse_id(" 0 : 5 ") == (0, 5)
    for bad in ("2", "a:b", "2:17:1", "-1:3", ""):
        with pytest.raises(DlqError, match="expected PARTITION:OFFSET"):
            parse_id(bad)


def test_a_summary_has_exactly_the_listed_fields_and_no_value():
    dead = record(2, 17)
    summary = dead.summary()
    assert tuple(summary) == SUMMARY_FIELDS
    assert summary["id"] == "2:17"
    assert (summary["source_topic"], summary["source_partition"], summary["source_offset"]) == (
        "matching-events",
        3,
        41,
    )
    assert summary["key"] == "4711" and summary["event_type"] == "match.created"
    assert summary["received_at"] == NOW.isoformat()
    assert PATIENT not in json.dumps(summary) and PATIENT not in format_line(dead)


def test_the_envelope_ids_are_read_from_the_value_when_the_record_does_not_name_them():
    dead = record(with_ids=False, reason="internal error: RuntimeError")
    original = json.loads(dead.value or b"")
    assert (dead.event_id, dead.event_type) == (original["event_id"], "match.created")
    assert record(value=b"{not json", with_ids=False).event_id is None


def test_values_and_keys_that_are_not_utf8_come_back_byte_for_byte():
    dead = record(value=b"\xff\xfe binary", key=b"\xff")
    assert dead.fields["value_encoding"] == "base64" and dead.fields["key_encoding"] == "base64"
    assert dead.value == b"\xff\xfe binary" and dead.key == b"\xff"
    assert "not UTF-8; base64" in format_record(dead)


def test_a_value_too_large_to_copy_is_said_to_be_missing():
    dead = record(value=b'{"x": "' + b"a" * (1024 * 1024) + b'"}')
    assert dead.value is None and dead.value_omitted is not None
    assert "value:        none (the value (" in format_record(dead)


def test_show_prints_every_field_and_the_value_indented():
    shown = format_record(record(1, 4))
    assert shown.splitlines()[0] == "id:           1:4"
    assert "source:       matching-events partition 3 offset 41" in shown
    assert '"first_name": "Pat4711"' in shown  # the value, pretty-printed


def test_a_record_that_is_no_dead_letter_is_listed_with_what_is_wrong():
    dead = DeadLetter.from_bytes(0, 9, b"hello")
    assert dead.reason == "not a dead-letter record (not JSON)"
    assert dead.summary()["source_topic"] is None
    assert format_line(dead).startswith("0:9  -  ?[-]@-")


def test_selection_by_time_and_reason_oldest_first_and_the_limit_keeps_the_most_recent():
    records = [
        record(1, 0, received_at=NOW - timedelta(hours=30), reason="not JSON: Expecting value"),
        record(0, 0, received_at=NOW - timedelta(hours=2)),
        record(0, 1, received_at=NOW - timedelta(hours=1), reason="Invalid Envelope: event_id"),
        record(1, 1, received_at=NOW - timedelta(hours=3)),
    ]
    assert [r.id for r in dlq.select(records)] == ["1:0", "1:1", "0:0", "0:1"]
    assert [r.id for r in dlq.select(records, since=NOW - timedelta(hours=24))] == ["1:1", "0:0", "0:1"]
    assert [r.id for r in dlq.select(records, reason="invalid envelope")] == ["0:1"]
    assert [r.id for r in dlq.select(records, limit=2)] == ["0:0", "0:1"]


def test_since_is_a_time_or_a_duration_back_from_now():
    assert parse_since("24h", NOW, BERLIN) == NOW - timedelta(hours=24)
    assert parse_since("2026-11-20T08:00:00+01:00", NOW, BERLIN) == datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
    assert parse_since("2026-11-20", NOW, BERLIN) == datetime(2026, 11, 20, tzinfo=BERLIN)
    with pytest.raises(DlqError, match="--since 'yesterday'"):
        parse_since("yesterday", NOW, BERLIN)


BROKER = Broker(Settings.from_environ({}))


async def test_list_prints_one_json_object_per_record_and_counts_on_stderr(monkeypatch: pytest.MonkeyPatch):
    async def read_all(_: Broker) -> tuple[list[DeadLetter], dict[int, int]]:
        return [record(0, 0), record(1, 0, reason="not JSON")], {0: 1, 1: 1}

    monkeypatch.setattr(dlq, "read_all", read_all)
    out: list[str] = []
    err: list[str] = []
    code = await dlq.run_list(
        BROKER, since=None, reason="not json", limit=None, as_json=True, now=NOW, out=out.append, err=err.append
    )
    assert code == 0
    [line] = out
    assert json.loads(line)["id"] == "1:0" and tuple(json.loads(line)) == SUMMARY_FIELDS
    assert err == ["1 of 2 record(s) in communication-dlq (read up to offsets 0:1, 1:1)"]


async def test_list_says_when_the_dlq_is_empty(monkeypatch: pytest.MonkeyPatch):
    async def read_all(_: Broker) -> tuple[list[DeadLetter], dict[int, int]]:
        return [], {0: 0, 1: 0}

    monkeypatch.setattr(dlq, "read_all", read_all)
    out: list[str] = []
    err: list[str] = []
    await dlq.run_list(
        BROKER, since=None, reason=None, limit=None, as_json=False, now=NOW, out=out.append, err=err.append
    )
    assert out == [] and err == ["communication-dlq is empty: no dead letters"]


def test_the_command_refuses_a_bad_id_before_it_connects(capsys: pytest.CaptureFixture[str]):
    from argparse import Namespace

    from streams.cli import run_dlq

    args = Namespace(dlq_command="show", id="zwölf", json=False, value=False, timeout=1.0)
    assert run_dlq(Settings.from_environ({}), args) == 1
    assert "commsvc dlq show: invalid record id 'zwölf': expected PARTITION:OFFSET" in capsys.readouterr().err


def test_a_listing_keeps_the_ids_but_not_the_value():
    raw = dead_letter(
        reason="internal error: X",
        topic="matching-events",
        partition=0,
        offset=1,
        key=None,
        value=encode(match_created(4711, 7, "2026-09-01T10:00:00+02:00")),
        received_at=NOW,
    )
    listed = DeadLetter.from_bytes(0, 0, raw, keep_value=False)
    assert listed.event_type == "match.created" and listed.event_id is not None
    assert listed.value is None and PATIENT not in repr(listed)
