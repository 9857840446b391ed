"""``commsvc status`` without a database or broker: the day in COMM_TIMEZONE, the
suppression check on changelog values, and the screen and JSON made from what was
read, or from what did not answer. No address or patient detail is ever shown."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from domain.therapist import TherapistProfile
from domain.therapist_state import Suppression, TherapistState
from streams.messages.codec import dumps, state_to_wire
from streams.ops.status import Status, as_json, as_text, duration
from streams.ops.status_broker import BrokerStatus, PartitionLag, TopicLag, suppressed
from streams.ops.status_database import DatabaseStatus, OldestOutboxRow, OldestQueued, day_bounds

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
ADDRESS = "therapeut7@praxis.example"


def test_today_is_the_local_day_and_dst_days_have_their_real_length():
    today, start, end = day_bounds(datetime(2026, 3, 28, 23, 30, tzinfo=UTC), BERLIN)  # 00:30 local, 29 March
    assert today == date(2026, 3, 29)
    assert start == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert end - start == timedelta(hours=23)
    _, start, end = day_bounds(datetime(2026, 10, 25, 12, 0, tzinfo=UTC), BERLIN)
    assert end - start == timedelta(hours=25)


def state(**changes: object) -> bytes:
    profile = TherapistProfile(7, ADDRESS, "Eva", "Müller")
    therapist = TherapistState(7, profile=profile)
    for name, value in changes.items():
        setattr(therapist, name, value)
    return dumps(state_to_wire(therapist))


def test_a_changelog_value_is_suppressed_only_for_a_therapist_with_a_suppression_who_is_not_deleted():
    suppression = Suppression(ADDRESS, "550 5.1.1 unknown user", 42, NOW)
    assert suppressed(state(suppression=suppression))
    assert not suppressed(state())
    assert not suppressed(state(suppression=suppression, deleted=True))
    assert not suppressed(None)  # a tombstone
    assert not suppressed(b'{"last_run": "2026-11-23T09:00:00+01:00"}')  # a partition's bookmark
    assert not suppressed(b'{"suppression": {"x": 1}')  # not JSON


def database_status() -> DatabaseStatus:
    return DatabaseStatus(
        emails={"entwurf": 1, "in_warteschlange": 2, "wird_gesendet": 0, "gesendet": 40, "fehlgeschlagen": 1},
        oldest_queued=OldestQueued(12, "contact_request", NOW - timedelta(hours=2, minutes=5), NOW, 1),
        most_overdue=timedelta(minutes=3, seconds=10),
        since=NOW - timedelta(hours=24),
        failed_attempts=3,
        failed_for_good=1,
        alerts={"email_failed": 1, "smtp_unavailable": 1},
        outbox_backlog=2,
        outbox_oldest=OldestOutboxRow(90, "communication-events", NOW - timedelta(seconds=5)),
        outbox_oldest_age=timedelta(seconds=5),
        day=date(2026, 11, 23),
        calls_today={"completed": 2, "scheduled": 3},
    )


INGEST = "communication-service-ingest"  # the group that reads the input events


def broker_status() -> BrokerStatus:
    return BrokerStatus(
        group="communication-service",
        lag=[
            TopicLag("matching-events", {0: PartitionLag(10, 12, 2), 1: PartitionLag(None, 3, 3)}, INGEST),
            TopicLag("therapist-events", {0: PartitionLag(5, 5, 0)}, INGEST),
            TopicLag("communication-commands", {0: PartitionLag(1, 1, 0)}, "communication-service"),
        ],
        dlq_since=NOW - timedelta(hours=24),
        dlq_records=2,
        dlq_by_source={"matching-events": 2},
        suppressed_addresses=1,
    )


def test_the_json_holds_every_part_with_times_in_the_service_zone():
    document = as_json(Status(NOW, BERLIN, timedelta(hours=24), database_status(), broker_status()))
    assert document["as_of"] == "2026-11-23T09:00:00+01:00" and document["timezone"] == "Europe/Berlin"
    assert document["emails"]["by_status"]["gesendet"] == 40
    assert document["emails"]["oldest_queued"] == {
        "email_id": 12,
        "kind": "contact_request",
        "queued_at": "2026-11-23T06:55:00+01:00",
        "waiting_seconds": 7500.0,
        "next_attempt_at": "2026-11-23T09:00:00+01:00",
        "retry_count": 1,
    }
    assert document["failures_24h"]["attempts"] == 3 and document["failures_24h"]["failed_for_good"] == 1
    assert document["alerts_24h"] == {
        "since": "2026-11-22T09:00:00+01:00",
        "total": 2,
        "by_code": {"email_failed": 1, "smtp_unavailable": 1},
    }
    assert document["outbox"]["backlog"] == 2 and document["outbox"]["oldest"]["age_seconds"] == 5.0
    assert document["calls_today"] == {"date": "2026-11-23", "total": 5, "by_status": {"completed": 2, "scheduled": 3}}
    assert document["dlq_24h"]["records"] == 2
    matching = document["consumer_lag"]["topics"]["matching-events"]
    assert matching["lag"] == 5 and matching["partitions"]["1"] == {"committed": None, "end": 3, "lag": 3}
    assert matching["group"] == INGEST and document["consumer_lag"]["topics"]["communication-commands"]["group"] == (
        "communication-service"
    )
    assert document["suppressed_addresses"] == 1 and document["errors"] == {}


def test_the_screen_shows_each_part_on_a_line():
    screen = as_text(Status(NOW, BERLIN, timedelta(hours=24), database_status(), broker_status()))
    assert screen.splitlines()[0] == "commsvc status at 2026-11-23 09:00 (Europe/Berlin)"
    assert "Emails          entwurf 1 · in_warteschlange 2 · wird_gesendet 0 · gesendet 40 · fehlgeschlagen 1" in screen
    assert "oldest queued #12 (contact_request), waiting 2h 05m, next attempt 2026-11-23 09:00, 1 failed" in screen
    assert "Last 24h" in screen and "alerts 2 (email_failed 1 · smtp_unavailable 1)" in screen
    assert (
        "Consumer lag    matching-events 5 · therapist-events 0 (group communication-service-ingest)"
        " · communication-commands 0 (group communication-service)"
    ) in screen
    assert "Suppressed      1 address(es)" in screen
    assert ADDRESS not in screen and ADDRESS not in json.dumps(as_json(Status(NOW, BERLIN, timedelta(1), None, None)))


def test_a_part_that_did_not_answer_says_what_did_not():
    errors = {"broker": "the broker at kafka-1:9092 did not answer within 15s"}
    status = Status(NOW, BERLIN, timedelta(hours=24), database_status(), None, errors)
    assert "Broker          not available: the broker at kafka-1:9092 did not answer within 15s" in as_text(status)
    document = as_json(status)
    assert document["consumer_lag"] is None and document["suppressed_addresses"] is None
    assert document["emails"] is not None and document["errors"] == errors


def test_durations_read_like_a_person_writes_them():
    assert [duration(timedelta(seconds=s)) for s in (45, 190, 7500, 273_600)] == ["45s", "3m 10s", "2h 05m", "3d 4h"]
