"""One therapist's communication picture, composed from a table entry and what the
database holds (both given here), at a fixed time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from domain.bounces import SoftBounces
from domain.calls import CallStatus
from domain.decisions import CONFIRMATION, CONTACT_REQUEST
from domain.email_status import EmailStatus
from domain.placement import PlacementRequest
from domain.schedule import parse_schedule
from domain.therapist import TherapistProfile
from domain.therapist_state import PHONE_ONLY, InFlightEmail, Suppression, TherapistState, Undeliverable
from streams.api.documents import document
from streams.api.therapist_view import DECIDED, communication
from streams.persistence.call_reads import CallSummary, StoredEmail, TherapistRecords

BERLIN = ZoneInfo("Europe/Berlin")
WEEK = timedelta(days=7)
DAILY_AT_9 = parse_schedule("0 9 * * *", BERLIN)
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a Tuesday, 13:00 in Berlin
HOURS = {"monday": [{"start": "10:00", "end": "11:00"}]}
PROFILE = TherapistProfile(7, "eva@praxis.example", "Eva", "Müller", availability=HOURS)
NOTHING = TherapistRecords(None, (), ())


def waiting(*requests: tuple[int, str]) -> TherapistState:
    state = TherapistState(7, profile=PROFILE)
    for request_id, registered in requests:
        state.pending[request_id] = PlacementRequest(request_id, request_id + 1000, datetime.fromisoformat(registered))
    return state


def stored(email_id: int, key: str, status: EmailStatus, **fields: object) -> StoredEmail:
    values: dict[str, object] = {
        "kind": CONTACT_REQUEST,
        "subject": "Anfrage",
        "counts_toward_limit": True,
        "placement_request_ids": (1,),
        "queued_at": NOW - timedelta(minutes=5),
        "next_attempt_at": NOW - timedelta(minutes=5),
        "sent_at": None,
        **fields,
    }
    return StoredEmail(email_id, key, status=status, **values)  # type: ignore[arg-type]


def test_waiting_requests_in_registration_order_with_the_next_batch_run():
    state = waiting((11, "2026-03-01T10:00:00+01:00"), (12, "2026-01-15T10:00:00+01:00"))
    view = communication(state, NOTHING, NOW, WEEK, DAILY_AT_9)
    assert [(r.placement_request_id, r.patient_id) for r in view.waiting_requests] == [(12, 1012), (11, 1011)]
    assert view.known and not view.deleted and not view.contact_blocked and view.has_phone_hours
    assert view.weekly_rule.may_contact_now and view.weekly_rule.next_contact_at is None
    # the next run: tomorrow 09:00 Berlin
    assert view.next_contact_email_at == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def test_the_weekly_rule_puts_the_next_email_after_the_window():
    state = waiting((11, "2026-03-01T10:00:00+01:00"))
    sent = datetime(2026, 11, 22, 8, 0, 5, tzinfo=UTC)  # Sunday 09:00:05 Berlin
    state.contact_sent_at = [sent - timedelta(days=8), sent]  # the older one is outside the window
    last = stored(40, "k40", EmailStatus.SENT, sent_at=sent)
    view = communication(state, TherapistRecords(last, (), ()), NOW, WEEK, DAILY_AT_9)
    rule = view.weekly_rule
    assert rule.contact_sent_at == (sent,)
    assert rule.next_contact_at == sent + WEEK and not rule.may_contact_now and not rule.held_by_email_in_flight
    # the window ends Sunday 09:00:05: the first run after it is Monday 09:00
    assert view.next_contact_email_at == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert view.last_contact_email is not None
    assert (view.last_contact_email.email_id, view.last_contact_email.sent_at) == (40, sent)
    assert document(view)["weekly_rule"]["interval_seconds"] == 7 * 24 * 3600


def test_an_email_in_flight_holds_the_next_one_and_shows_its_row_once_stored():
    state = waiting((13, "2026-03-01T10:00:00+01:00"))
    state.in_flight["k-stored"] = InFlightEmail("k-stored", CONTACT_REQUEST, (11, 12), NOW - timedelta(hours=3))
    state.in_flight["k-new"] = InFlightEmail("k-new", CONTACT_REQUEST, (14,), NOW - timedelta(minutes=1))
    confirmation = stored(42, "confirmation:7:99", EmailStatus.QUEUED, kind=CONFIRMATION, counts_toward_limit=False)
    sending = stored(41, "k-stored", EmailStatus.SENDING, placement_request_ids=(11, 12))
    records = TherapistRecords(None, (sending, confirmation), ())
    view = communication(state, records, NOW, WEEK, DAILY_AT_9)
    assert [(e.email_id, e.email_key, e.status) for e in view.emails_in_flight] == [
        (41, "k-stored", "wird_gesendet"),
        (None, "k-new", DECIDED),  # decided, not stored yet
        (42, "confirmation:7:99", "in_warteschlange"),  # not tracked by the table
    ]
    assert view.weekly_rule.held_by_email_in_flight and not view.weekly_rule.may_contact_now
    assert view.next_contact_email_at is None  # waits for the email in flight, then the window


def test_a_suppressed_address_and_the_calls_still_to_make():
    state = waiting((11, "2026-03-01T10:00:00+01:00"))
    state.email_failed("k", undeliverable=Undeliverable("eva@praxis.example", "5.1.1 unknown user", 40), now=NOW)
    call = CallSummary(9, 7, 40, NOW + timedelta(days=1), 5, "undeliverable", CallStatus.SCHEDULED, 1, (11,))
    view = communication(state, TherapistRecords(None, (), (call,)), NOW, WEEK, DAILY_AT_9)
    assert view.suppression is not None
    assert (view.suppression.address, view.suppression.reason, view.suppression.email_id) == (
        "eva@praxis.example",
        "5.1.1 unknown user",
        40,
    )
    assert view.next_contact_email_at is None  # no email while suppressed
    assert view.upcoming_calls == (call,)
    assert document(view)["upcoming_calls"][0]["status"] == "scheduled"


def test_an_unknown_therapist_s_requests_wait_for_the_therapist():
    state = TherapistState(8)
    state.pending[21] = PlacementRequest(21, 1021, datetime(2026, 1, 1, tzinfo=UTC))
    state.awaiting_confirmation[22] = PlacementRequest(22, 1022, NOW)
    view = communication(state, NOTHING, NOW, WEEK, DAILY_AT_9)
    assert not view.known and not view.has_phone_hours
    assert [r.placement_request_id for r in view.waiting_requests] == [21]
    assert view.awaiting_confirmation == (22,)
    assert view.next_contact_email_at is None


def test_its_json_has_rfc_3339_times_and_no_patient_details():
    state = waiting((11, "2026-03-01T10:00:00+01:00"))
    registered = datetime.fromisoformat("2026-03-01T10:00:00+01:00")
    state.pending[11] = PlacementRequest(11, 1011, registered, {"first_name": "Anna"})
    state.suppression = Suppression("eva@praxis.example", "5.1.1", None, NOW)
    body = document(communication(state, NOTHING, NOW, WEEK, DAILY_AT_9))
    assert body["waiting_requests"] == [
        {"placement_request_id": 11, "patient_id": 1011, "registered_at": "2026-03-01T09:00:00+00:00", "status": None}
    ]
    assert body["suppression"]["since"] == "2026-11-24T12:00:00+00:00"
    assert "Anna" not in repr(body)


def test_a_phone_only_therapist_s_requests_wait_for_no_email_and_the_soft_bounces_show():
    state = waiting((11, "2026-03-01T10:00:00+01:00"))
    assert communication(state, NOTHING, NOW, WEEK, DAILY_AT_9).contact_channel == "email"
    state.contact_channel = PHONE_ONLY
    state.soft_bounces = SoftBounces("EVA@praxis.example", 2, NOW - timedelta(days=1))
    view = communication(state, NOTHING, NOW, WEEK, DAILY_AT_9)
    assert (view.contact_channel, view.soft_bounce_count) == ("phone_only", 2)
    assert view.next_contact_email_at is None  # no email: the requests go to a call
    body = document(view)
    assert (body["contact_channel"], body["soft_bounce_count"]) == ("phone_only", 2)
    # soft bounces of an address the therapist no longer has do not count
    state.soft_bounces = SoftBounces("alt@praxis.example", 2, NOW - timedelta(days=1))
    assert communication(state, NOTHING, NOW, WEEK, DAILY_AT_9).soft_bounce_count == 0
