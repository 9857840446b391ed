"""The phone-only contact preference (issue 17, point 2, the therapist's side): no more
contact or follow-up emails, the waiting requests go to calls within the therapist's
hours (or wait, with one alert, without hours), confirmations and manual emails still
go; staff and the one-click link set it, idempotently. Pure rules, fixed times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.batching import derived_key
from domain.decisions import (
    CONFIRMATION,
    AlertStaff,
    BookCall,
    ManualEmailContent,
    ReportContactPreference,
    SendEmail,
    SendManualEmail,
)
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import EMAIL, PHONE_ONLY, TherapistState

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
ADDRESS = "eva@praxis.example"
HOURS = {"monday": [{"start": "09:00", "end": "12:00"}]}


def request(request_id: int, days_ago: int = 30) -> PlacementRequest:
    return PlacementRequest(request_id, request_id + 1000, T0 - timedelta(days=days_ago))


def waiting(hours: dict[str, list[dict[str, str]]] | None = None, *request_ids: int) -> TherapistState:
    state = TherapistState(7)
    profile = TherapistProfile(7, ADDRESS, "Eva", "Müller", availability=hours or {})
    state.therapist_upserted("t1", T0 - timedelta(days=30), profile, T0)
    for request_id in request_ids:
        state.match_created(f"m{request_id}", request(request_id, days_ago=30 + request_id), T0)
    return state


def test_phone_only_sends_the_waiting_requests_to_a_call_at_once():
    state = waiting(HOURS, 1, 2)
    decisions = state.set_contact_preference("c1", PHONE_ONLY, "command", "bat um Anrufe", None, T0)
    changed, call = decisions
    assert changed == ReportContactPreference(PHONE_ONLY, "command", "bat um Anrufe", "c1")
    assert isinstance(call, BookCall) and call.reason == PHONE_ONLY
    assert call.call_key == derived_key("phone_only_call", "c1")
    assert [r.placement_request_id for r in call.requests] == [2, 1]  # oldest registration first
    assert state.pending == {} and state.contact_channel == PHONE_ONLY


def test_later_requests_go_to_a_call_at_a_batch_run_never_to_an_email():
    state = waiting(HOURS)
    state.set_contact_preference("c1", PHONE_ONLY, "command", None, None, T0)
    state.match_created("m3", request(3), T0)
    for days in (1, 8, 30):
        assert state.plan_contact_email(T0 + timedelta(days=days), WEEK) is None
    call = state.plan_phone_call("run-1", T0 + timedelta(days=1))
    assert call is not None and call.reason == PHONE_ONLY and [r.placement_request_id for r in call.requests] == [3]


def test_without_phone_hours_the_requests_wait_and_staff_are_told_once():
    state = waiting(None, 1)
    changed, alert = state.set_contact_preference("c1", PHONE_ONLY, "command", None, None, T0)
    assert isinstance(changed, ReportContactPreference)
    assert isinstance(alert, AlertStaff)
    assert (alert.code, alert.severity) == ("phone_only_without_hours", "warning")
    assert set(state.pending) == {1}
    # batch runs: neither an email nor a call, and no second alert
    assert state.plan_contact_email(T0 + WEEK, WEEK) is None
    assert state.plan_phone_call("run-1", T0 + WEEK) is None
    # the follow-up of an email sent before: no follow-up email either
    assert state.follow_up_email("f1", (request(9),), T0 - WEEK, T0) == []


def test_confirmations_and_manual_emails_still_go_by_email():
    state = waiting(None)
    state.set_contact_preference("c1", PHONE_ONLY, "command", None, None, T0)
    state.match_created("m5", request(5), T0)
    decisions = state.match_status_changed("s5", 5, 1005, "accepted", T0)
    assert any(isinstance(d, SendEmail) and d.kind == CONFIRMATION for d in decisions)
    [manual] = state.manual_email("c2", ManualEmailContent(template="free_text"), T0)
    assert isinstance(manual, SendManualEmail)


def test_the_same_channel_again_or_a_replay_changes_nothing():
    state = waiting(HOURS, 1)
    assert state.set_contact_preference("c1", EMAIL, "command", None, None, T0) == []  # already email
    assert len(state.set_contact_preference("c2", PHONE_ONLY, "command", None, None, T0)) == 2
    assert state.set_contact_preference("c2", EMAIL, "command", None, None, T0) == []  # a replayed event id
    assert state.set_contact_preference("c3", PHONE_ONLY, "one_click", None, ADDRESS, T0) == []
    assert state.contact_channel == PHONE_ONLY


def test_back_to_email_the_next_batch_run_emails_what_waits():
    state = waiting(None, 1)
    state.set_contact_preference("c1", PHONE_ONLY, "command", None, None, T0)
    assert state.set_contact_preference("c2", EMAIL, "command", "Praxis möchte wieder Emails", None, T0) == [
        ReportContactPreference(EMAIL, "command", "Praxis möchte wieder Emails", "c2")
    ]
    email = state.plan_contact_email(T0 + timedelta(hours=1), WEEK)
    assert email is not None and [r.placement_request_id for r in email.requests] == [1]


def test_a_one_click_link_works_only_for_the_address_it_was_made_for():
    state = waiting(HOURS, 1)
    moved = TherapistProfile(7, "neu@praxis.example", "Eva", "Müller", availability=HOURS)
    state.therapist_upserted("t2", T0, moved, T0)
    assert state.set_contact_preference("o1", PHONE_ONLY, "one_click", None, ADDRESS, T0) == []
    assert state.contact_channel == EMAIL and set(state.pending) == {1}
    decisions = state.set_contact_preference("o2", PHONE_ONLY, "one_click", None, "NEU@praxis.example", T0)
    assert decisions[0] == ReportContactPreference(PHONE_ONLY, "one_click", None, "o2")
    assert isinstance(decisions[1], BookCall)


def test_a_deleted_therapist_s_preference_is_recorded_without_calls_or_alerts():
    state = waiting(None, 1)
    state.therapist_deleted("d1", T0, T0)
    assert state.set_contact_preference("c1", PHONE_ONLY, "command", None, None, T0) == [
        ReportContactPreference(PHONE_ONLY, "command", None, "c1")
    ]


def test_a_follow_up_without_a_free_slot_waits_for_a_call_at_the_next_batch_run():
    state = waiting(HOURS, 1)
    email = state.plan_contact_email(T0, WEEK)
    assert email is not None
    state.email_sent(email.email_key, True, T0, WEEK)
    state.set_contact_preference("c1", PHONE_ONLY, "command", None, None, T0 + WEEK)
    # The follow-up job found no slot for the call: it hands the requests over for an email.
    assert state.follow_up_email("f1", email.requests, T0, T0 + WEEK) == []
    assert set(state.pending) == {1}
    call = state.plan_phone_call("run-1", T0 + WEEK + timedelta(days=1))
    assert call is not None and [r.placement_request_id for r in call.requests] == [1]
