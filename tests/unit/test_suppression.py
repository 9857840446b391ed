"""Address suppression after a permanent recipient failure (issue 12, point 1), and
which SMTP replies count as one: pure rules, fixed times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.batching import contact_email_key
from domain.decisions import (
    CONFIRMATION,
    BookCall,
    LiftSuppression,
    ManualEmailContent,
    RejectCommand,
    SendEmail,
    SuppressAddress,
)
from domain.placement import PlacementRequest
from domain.recipient_failure import concerns_recipient
from domain.therapist import TherapistProfile
from domain.therapist_state import (
    ADDRESS_CHANGED,
    LIFTED_BY_STAFF,
    UNDELIVERABLE,
    TherapistState,
    Undeliverable,
)

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
DEAD = "eva@praxis.example"
PROFILE = TherapistProfile(7, DEAD, "Eva", "Müller", "Dr.", "Frau")
HOURS = {"monday": [{"start": "09:00", "end": "12:00"}]}
REASON = "recipient refused: 550 5.1.1 mailbox unavailable"


def request(request_id: int, days_ago: int = 30) -> PlacementRequest:
    return PlacementRequest(request_id, request_id + 1000, T0 - timedelta(days=days_ago), {"first_name": "X"})


def emailed_and_bounced(profile: TherapistProfile = PROFILE) -> tuple[TherapistState, list[object]]:
    """Two requests emailed at T0; the email fails for good: the mailbox is gone."""
    state = TherapistState(7)
    state.therapist_upserted("t1", T0 - timedelta(days=30), profile, T0)
    state.match_created("m1", request(1), T0)
    state.match_created("m2", request(2, days_ago=40), T0)
    email = state.plan_contact_email(T0, WEEK)
    assert email is not None
    decisions = state.email_failed(email.email_key, email.requests, Undeliverable(DEAD, REASON, 11), T0)
    return state, decisions


def test_an_unreachable_address_is_suppressed_once_and_no_email_is_decided_for_it():
    state, decisions = emailed_and_bounced()
    assert decisions == [SuppressAddress(DEAD, REASON, 11, contact_email_key(7, T0))]
    assert state.suppression is not None and state.suppression.address == DEAD
    # The requests are not lost: they wait, and later ones join them ...
    assert state.match_created("m3", request(3), T0) != [] and set(state.pending) == {1, 2, 3}
    # ... but no batch run emails the dead address again, however late.
    for days in (1, 8, 30):
        assert state.plan_contact_email(T0 + timedelta(days=days), WEEK) is None
    # Without phone hours, no call either: they wait for a new address.
    assert state.plan_phone_call("k", T0 + timedelta(days=1)) is None
    # A second email to the same address failing says nothing new.
    assert state.email_failed("other-key", (), Undeliverable(DEAD, REASON, 12), T0) == []


def test_the_table_keeps_no_patient_details_of_a_returned_request():
    state, _ = emailed_and_bounced()
    assert all(r.patient == {} for r in state.pending.values())


def test_with_phone_hours_the_waiting_requests_go_to_a_call_at_once():
    state, decisions = emailed_and_bounced(TherapistProfile(7, DEAD, "Eva", "Müller", availability=HOURS))
    suppressed, call = decisions
    assert isinstance(suppressed, SuppressAddress)
    assert isinstance(call, BookCall) and call.reason == UNDELIVERABLE
    assert [r.placement_request_id for r in call.requests] == [2, 1]  # oldest registration first
    assert state.pending == {}
    # A request that arrives later goes to the next call, booked at a batch run.
    state.match_created("m3", request(3), T0)
    later = state.plan_phone_call("run-2", T0 + timedelta(days=1))
    assert later is not None and [r.placement_request_id for r in later.requests] == [3]
    # Closing a request that is in a call reaches the call.
    assert state.match_status_changed("s3", 3, 1003, "withdrawn", T0)[0].status == "withdrawn"


def test_no_slot_puts_the_requests_back_to_wait():
    state, (_, call) = emailed_and_bounced(TherapistProfile(7, DEAD, "Eva", "Müller", availability=HOURS))
    assert isinstance(call, BookCall)
    state.call_not_booked(call.requests)
    assert set(state.pending) == {1, 2}


def test_a_new_address_lifts_the_suppression_and_the_requests_go_at_the_next_batch_run():
    state, _ = emailed_and_bounced()
    same = state.therapist_upserted("t2", T0 + timedelta(minutes=1), PROFILE, T0 + timedelta(minutes=1))
    assert not any(isinstance(d, LiftSuppression) for d in same) and state.suppression is not None
    moved = TherapistProfile(7, "eva.neu@praxis.example", "Eva", "Müller")
    decisions = state.therapist_upserted("t3", T0 + timedelta(minutes=2), moved, T0 + timedelta(minutes=2))
    assert LiftSuppression(DEAD, ADDRESS_CHANGED, "t3") in decisions
    assert state.suppression is None
    # The failed email never arrived, so it holds no window: the next batch run emails.
    email = state.plan_contact_email(T0 + timedelta(minutes=3), WEEK)
    assert email is not None and email.therapist.email == "eva.neu@praxis.example"
    assert {r.placement_request_id for r in email.requests} == {1, 2}


def test_the_address_comparison_ignores_case():
    state, _ = emailed_and_bounced()
    shouting = TherapistProfile(7, DEAD.upper(), "Eva", "Müller")
    decisions = state.therapist_upserted("t2", T0 + timedelta(minutes=1), shouting, T0 + timedelta(minutes=1))
    assert not any(isinstance(d, LiftSuppression) for d in decisions)


def test_staff_lift_the_suppression_once_and_a_second_lift_is_rejected():
    state, _ = emailed_and_bounced()
    assert state.lift_suppression("c1", "Postfach repariert", T0) == [
        LiftSuppression(DEAD, LIFTED_BY_STAFF, "c1", "Postfach repariert")
    ]
    assert state.lift_suppression("c1", None, T0) == []  # the same command again
    [rejected] = state.lift_suppression("c2", None, T0)
    assert isinstance(rejected, RejectCommand) and "is not suppressed" in rejected.reason


def test_an_address_that_changed_before_the_report_is_not_suppressed():
    state = TherapistState(7)
    state.therapist_upserted("t1", T0 - timedelta(days=30), PROFILE, T0)
    state.match_created("m1", request(1), T0)
    email = state.plan_contact_email(T0, WEEK)
    assert email is not None
    state.therapist_upserted("t2", T0, TherapistProfile(7, "neu@praxis.example", "Eva", "Müller"), T0)
    assert state.email_failed(email.email_key, email.requests, Undeliverable(DEAD, REASON, 11), T0) == []
    assert state.suppression is None and set(state.pending) == {1}


def test_manual_and_follow_up_emails_are_refused_while_suppressed_and_confirmations_wait():
    state, _ = emailed_and_bounced()
    [refused] = state.manual_email("c1", ManualEmailContent(), T0)
    assert isinstance(refused, RejectCommand) and "suppressed" in refused.reason
    # Written to another address on purpose: allowed.
    assert (
        state.manual_email(
            "c2", ManualEmailContent(respect_contact_limit=False, recipient_email="praxis@example.org"), T0
        )[0].command_id
        == "c2"
    )
    assert state.follow_up_email("f1", (request(9),), T0 - WEEK, T0) == []
    # An acceptance is confirmed once the address works again, not into the bounce.
    held = state.match_status_changed("a1", 1, 1001, "accepted", T0)
    assert not any(isinstance(d, SendEmail) for d in held)
    released = state.lift_suppression("c3", None, T0)
    assert [d.kind for d in released if isinstance(d, SendEmail)] == [CONFIRMATION]


def test_a_clock_ahead_does_not_make_the_next_correct_update_stale():
    state = TherapistState(7)
    ahead = T0 + timedelta(minutes=4)  # within the tolerance the edge allows
    state.therapist_upserted("t1", ahead, PROFILE, T0)
    moved = TherapistProfile(7, "neu@praxis.example", "Eva", "Müller")
    state.therapist_upserted("t2", T0 + timedelta(seconds=30), moved, T0 + timedelta(seconds=30))
    assert state.profile is not None and state.profile.email == "neu@praxis.example"
    # An old replay is still recognised as stale.
    state.therapist_upserted("t0", T0 - timedelta(days=1), PROFILE, T0 + timedelta(minutes=1))
    assert state.profile.email == "neu@praxis.example"


@pytest.mark.parametrize(
    ("code", "text", "at_rcpt", "expected"),
    [
        (550, "5.1.1 Mailbox unavailable", True, True),
        (550, "5.1.1 <x@y>: Recipient address rejected: User unknown", False, True),  # after DATA
        (550, "Mailbox unavailable", True, True),  # no enhanced code, at RCPT
        (551, "User not local", True, True),
        (553, "mailbox name not allowed", True, True),
        (550, "5.2.1 mailbox disabled", False, True),
        (554, "5.1.2 bad destination system address", False, True),
        (550, "5.1.7 bad sender mailbox syntax", True, False),  # about the sender
        (553, "5.1.8 sender domain does not exist", True, False),
        (552, "5.3.4 message too big", False, False),
        (552, "5.2.2 mailbox full", True, False),
        (554, "5.7.1 message refused as spam", False, False),
        (554, "5.6.0 content rejected", False, False),
        (550, "Mailbox unavailable", False, False),  # no enhanced code after DATA: the message
        (450, "4.1.1 try later", True, False),  # temporary
        (550, "4.2.1 odd but temporary class", True, False),
    ],
)
def test_which_permanent_failures_concern_the_recipient(code, text, at_rcpt, expected):
    assert concerns_recipient(code, text, at_rcpt=at_rcpt) is expected
