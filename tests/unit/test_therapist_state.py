"""The per-therapist aggregate: batching, the weekly rule, cancellations, replays."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.batching import BATCH_REQUEST, INITIAL_CONTACT, contact_email_key
from domain.decisions import (
    CONFIRMATION,
    CONTACT_REQUEST,
    FOLLOW_UP,
    DropRequest,
    KeepRequestDetails,
    ManualEmailContent,
    SendEmail,
    SettleEmailedRequest,
    SyncDirectory,
)
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import CONTACT_BLOCKED, THERAPIST_DELETED, TherapistState

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
PROFILE = TherapistProfile(7, "eva@praxis.example", "Eva", "Müller", "Dr.", "Frau")


def request(request_id, registered, patient_id=None):
    return PlacementRequest(request_id, patient_id or request_id + 1000, registered, {"first_name": "X"})


def known_therapist(**changes):
    state = TherapistState(7)
    state.therapist_upserted("t-created", T0 - timedelta(days=30), PROFILE, T0)
    for name, value in changes.items():
        setattr(state, name, value)
    return state


def test_one_email_with_every_waiting_request_oldest_registration_first():
    state = known_therapist()
    state.match_created("e1", request(1, datetime(2026, 3, 1, tzinfo=UTC)), T0)
    state.match_created("e2", request(2, datetime(2026, 1, 1, 10, tzinfo=BERLIN)), T0)
    state.match_created("e3", request(3, datetime(2026, 1, 1, 9, 30, tzinfo=UTC)), T0)  # 10:30 Berlin
    decision = state.plan_contact_email(T0, WEEK)
    assert isinstance(decision, SendEmail)
    assert [r.placement_request_id for r in decision.requests] == [2, 3, 1]
    assert decision.template == BATCH_REQUEST
    assert decision.kind == CONTACT_REQUEST
    assert decision.email_key == contact_email_key(7, T0)
    assert state.pending == {}


def test_single_request_uses_initial_contact():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    assert state.plan_contact_email(T0, WEEK).template == INITIAL_CONTACT


def test_nothing_to_send_without_pending_requests():
    assert known_therapist().plan_contact_email(T0, WEEK) is None


def test_email_key_is_the_same_for_a_replayed_batch_run():
    assert contact_email_key(7, T0) == contact_email_key(7, T0.astimezone(BERLIN))
    assert contact_email_key(7, T0) != contact_email_key(7, T0 + timedelta(seconds=1))
    assert contact_email_key(7, T0) != contact_email_key(8, T0)


def test_second_email_only_after_the_interval_with_only_new_requests():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    first = state.plan_contact_email(T0, WEEK)
    # While the first is in flight nothing else goes out, even outside the window.
    state.match_created("e2", request(2, T0), T0)
    assert state.plan_contact_email(T0 + 2 * WEEK, WEEK) is None
    sent_at = T0 + timedelta(seconds=5)
    state.email_sent(first.email_key, True, sent_at, WEEK)
    assert state.plan_contact_email(sent_at + WEEK - timedelta(seconds=1), WEEK) is None
    second = state.plan_contact_email(sent_at + WEEK, WEEK)
    assert [r.placement_request_id for r in second.requests] == [2]


def test_failed_email_releases_the_window_and_its_requests_wait_again():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    state.match_created("e2", request(2, T0 - WEEK), T0)
    first = state.plan_contact_email(T0, WEEK)
    state.match_status_changed("s2", 2, 1002, "withdrawn", T0)  # closed after the email was decided
    state.email_failed(first.email_key, first.requests)
    state.match_created("e3", request(3, T0), T0)
    again = state.plan_contact_email(T0 + timedelta(days=1), WEEK)
    assert [r.placement_request_id for r in again.requests] == [1, 3]  # not the withdrawn one


def test_failed_email_of_a_blocked_therapist_returns_nothing():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    first = state.plan_contact_email(T0, WEEK)
    state.therapist_upserted("t2", T0, TherapistProfile(7, "a@b.example", "A", "B", contact_blocked=True), T0)
    state.email_failed(first.email_key, first.requests)
    assert state.pending == {}


def test_unlimited_email_does_not_hold_the_window():
    state = known_therapist()
    state.email_sent("confirmation-key", False, T0, WEEK)
    state.match_created("e1", request(1, T0 - WEEK), T0)
    assert state.plan_contact_email(T0 + timedelta(minutes=1), WEEK) is not None


def test_delivery_feedback_is_idempotent():
    state = known_therapist()
    state.email_sent("k", True, T0, WEEK)
    state.email_sent("k", True, T0, WEEK)
    assert state.contact_sent_at == [T0]


def test_request_for_unknown_therapist_waits_for_the_therapist():
    state = TherapistState(7)
    state.match_created("e1", request(1, T0 - WEEK), T0)
    assert state.plan_contact_email(T0, WEEK) is None
    assert 1 in state.pending
    state.therapist_upserted("t1", T0, PROFILE, T0)
    assert [r.placement_request_id for r in state.plan_contact_email(T0, WEEK).requests] == [1]


@pytest.mark.parametrize("status", ["cancelled", "withdrawn", "rejected", "closed"])
def test_closed_request_is_dropped_and_never_emailed(status):
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    state.match_created("e2", request(2, T0 - WEEK), T0)
    assert state.match_status_changed("s1", 1, 1001, status, T0) == [DropRequest(1, 1001, status)]
    assert [r.placement_request_id for r in state.plan_contact_email(T0, WEEK).requests] == [2]


def test_closing_an_emailed_request_is_passed_on():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    state.plan_contact_email(T0, WEEK)
    assert state.match_status_changed("s1", 1, 1001, "withdrawn", T0) == [SettleEmailedRequest(1, 1001, "withdrawn")]


def test_request_closed_before_it_arrived_is_never_emailed():
    state = known_therapist()
    assert state.match_status_changed("s1", 1, 1001, "cancelled", T0) == []
    assert state.match_created("e1", request(1, T0 - WEEK), T0) == []
    assert state.plan_contact_email(T0, WEEK) is None


def test_other_statuses_are_recorded_without_effect():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    assert state.match_status_changed("s1", 1, 1001, "in_review", T0) == []
    assert state.pending[1].status == "in_review"
    assert state.plan_contact_email(T0, WEEK) is not None


def test_duplicate_event_and_duplicate_request_have_the_effect_of_one():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    state.match_created("e1", request(1, T0 - WEEK), T0)
    state.match_created("e-other-id", request(1, T0 - WEEK), T0)  # same request again
    decision = state.plan_contact_email(T0, WEEK)
    assert [r.placement_request_id for r in decision.requests] == [1]
    # delivered again after it was emailed: still nothing new
    state.match_created("e1", request(1, T0 - WEEK), T0 + WEEK)
    state.match_created("e-third", request(1, T0 - WEEK), T0 + WEEK)
    assert state.pending == {}


def test_accepted_sends_one_confirmation_outside_the_weekly_window():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    first = state.plan_contact_email(T0, WEEK)
    state.email_sent(first.email_key, True, T0, WEEK)
    decisions = state.match_status_changed("a1", 1, 1001, "accepted", T0 + timedelta(hours=1))
    assert decisions[0] == SettleEmailedRequest(1, 1001, "accepted")
    confirmation = decisions[1]
    assert isinstance(confirmation, SendEmail)
    assert confirmation.kind == CONFIRMATION and confirmation.template == CONFIRMATION
    assert [r.placement_request_id for r in confirmation.requests] == [1]
    assert state.match_status_changed("a2", 1, 1001, "accepted", T0 + timedelta(hours=2)) == []


def test_accepting_a_pending_request_takes_it_out_of_the_batch():
    state = known_therapist()
    [kept] = state.match_created("e1", request(1, T0 - WEEK), T0)
    # The details go downstream at once; the table keeps ids and times only.
    assert isinstance(kept, KeepRequestDetails) and kept.request.patient == {"first_name": "X"}
    assert state.pending[1].patient == {}
    decisions = state.match_status_changed("a1", 1, 1001, "accepted", T0)
    assert decisions[0] == DropRequest(1, 1001, "accepted")
    assert decisions[1].kind == CONFIRMATION
    assert [r.placement_request_id for r in decisions[1].requests] == [1]  # details joined downstream
    assert state.plan_contact_email(T0, WEEK) is None


def test_acceptance_before_the_therapist_is_known_is_confirmed_when_it_arrives():
    state = TherapistState(7)
    assert state.match_status_changed("a1", 1, 1001, "accepted", T0) == []
    decisions = state.therapist_upserted("t1", T0, PROFILE, T0)
    assert [type(d).__name__ for d in decisions] == ["SyncDirectory", "SendEmail"]
    assert decisions[1].kind == CONFIRMATION


def test_deleted_therapist_drops_pending_and_later_requests():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    assert state.therapist_deleted("d1", T0, T0) == [
        SyncDirectory(None, deleted=True),
        DropRequest(1, 1001, THERAPIST_DELETED),
    ]
    assert state.match_created("e2", request(2, T0), T0) == [DropRequest(2, 1002, THERAPIST_DELETED)]
    assert state.plan_contact_email(T0, WEEK) is None
    # registering again later brings the therapist back
    state.therapist_upserted("t2", T0 + timedelta(days=1), PROFILE, T0)
    state.match_created("e3", request(3, T0), T0)
    assert state.plan_contact_email(T0 + timedelta(days=1), WEEK) is not None


def test_stale_directory_event_is_ignored():
    state = known_therapist()
    newer = TherapistProfile(7, "new@praxis.example", "Eva", "Müller")
    state.therapist_upserted("t2", T0, newer, T0)
    older = TherapistProfile(7, "old@praxis.example", "Eva", "Müller")
    state.therapist_upserted("t-late", T0 - timedelta(days=1), older, T0)
    assert state.profile.email == "new@praxis.example"
    assert state.therapist_deleted("d-late", T0 - timedelta(days=1), T0) == []
    assert not state.deleted


def test_contact_blocked_therapist_gets_no_email():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    blocked = TherapistProfile(7, "eva@praxis.example", "Eva", "Müller", contact_blocked=True)
    assert state.therapist_upserted("t2", T0, blocked, T0) == [
        SyncDirectory(blocked, deleted=False),
        DropRequest(1, 1001, CONTACT_BLOCKED),
    ]
    assert state.match_created("e2", request(2, T0), T0) == [DropRequest(2, 1002, CONTACT_BLOCKED)]
    assert state.plan_contact_email(T0, WEEK) is None


def test_copy_is_independent():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    copy = state.copy()
    copy.plan_contact_email(T0, WEEK)
    assert 1 in state.pending and state.in_flight == {}


def test_forgetting_old_replay_memory():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    state.plan_contact_email(T0, WEEK)
    later = T0 + timedelta(days=100)
    state.forget_before(later - timedelta(days=90), later, WEEK)
    assert state.seen_events == {} and state.settled == {}


from domain.decisions import RejectCommand, SendManualEmail  # noqa: E402


def test_manual_email_that_respects_the_limit_holds_the_window():
    state = known_therapist()
    [decision] = state.manual_email("c1", ManualEmailContent(subject="s", body_html="<p>x"), T0)
    assert isinstance(decision, SendManualEmail) and decision.limited
    state.match_created("e1", request(1, T0 - WEEK), T0)
    assert state.plan_contact_email(T0 + 2 * WEEK, WEEK) is None  # in flight: nothing else goes
    state.email_sent(decision.email_key, True, T0, WEEK)
    assert state.plan_contact_email(T0 + WEEK - timedelta(seconds=1), WEEK) is None
    assert state.plan_contact_email(T0 + WEEK, WEEK) is not None


def test_manual_email_that_ignores_the_limit_or_a_draft_does_not_hold_it():
    state = known_therapist()
    [urgent] = state.manual_email("c1", ManualEmailContent(respect_contact_limit=False), T0)
    [draft] = state.manual_email("c2", ManualEmailContent(queue=False), T0)
    assert not urgent.limited and not draft.limited
    state.match_created("e1", request(1, T0 - WEEK), T0)
    assert state.plan_contact_email(T0, WEEK) is not None


def test_manual_email_carries_the_waiting_requests_it_names():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    [decision] = state.manual_email("c1", ManualEmailContent(placement_request_ids=(1, 99)), T0)
    assert [r.placement_request_id for r in decision.requests] == [1]


def test_manual_email_refusals():
    assert state_refusal(TherapistState(7), has_recipient=False).startswith("therapist 7 is not known")
    assert (
        TherapistState(7).manual_email("c", ManualEmailContent(recipient_email="praxis@example.org"), T0)[0].therapist
        is None
    )  # a recipient suffices
    deleted = known_therapist()
    deleted.therapist_deleted("d", T0, T0)
    assert "deleted" in state_refusal(deleted)
    blocked = known_therapist(profile=TherapistProfile(7, "a@b.example", "A", "B", contact_blocked=True))
    assert "contact_blocked" in state_refusal(blocked)
    # a replayed command is recognised
    state = known_therapist()
    assert state.manual_email("c", ManualEmailContent(), T0) and state.manual_email("c", ManualEmailContent(), T0) == []


def state_refusal(state: TherapistState, has_recipient: bool = False) -> str:
    [decision] = state.manual_email(
        "c", ManualEmailContent(recipient_email="praxis@example.org" if has_recipient else None), T0
    )
    assert isinstance(decision, RejectCommand) and decision.command_type == "communication.create_email"
    return decision.reason


def test_directory_changes_are_passed_on_for_the_database_copy():
    state = TherapistState(7)
    assert state.therapist_upserted("t1", T0, PROFILE, T0) == [SyncDirectory(PROFILE, deleted=False)]
    assert state.therapist_upserted("t1", T0, PROFILE, T0) == []  # replay


def test_refused_availability_keeps_the_previous_one():
    hours = {"monday": [{"start": "09:00", "end": "12:00"}]}
    state = known_therapist(profile=TherapistProfile(7, "a@b.example", "A", "B", availability=hours))
    changed = TherapistProfile(7, "new@b.example", "A", "B")
    [sync] = state.therapist_upserted("t2", T0, changed, T0, keep_availability=True)
    assert state.profile.email == "new@b.example" and state.profile.availability == hours
    assert sync.profile.availability == hours


def test_follow_up_email_holds_the_window_and_is_decided_once():
    state = known_therapist()
    waiting = (request(1, T0 - WEEK),)
    [decision] = state.follow_up_email("fu-1", waiting, T0 - WEEK, T0)
    assert (decision.kind, decision.template) == (FOLLOW_UP, FOLLOW_UP)
    assert decision.context == {"original_sent_at": (T0 - WEEK).isoformat()}
    assert state.follow_up_email("fu-1", waiting, T0 - WEEK, T0) == []  # replay
    state.match_created("e2", request(2, T0), T0)
    assert state.plan_contact_email(T0 + 2 * WEEK, WEEK) is None  # the follow-up holds the window
    deleted = known_therapist()
    deleted.therapist_deleted("d", T0, T0)
    assert deleted.follow_up_email("fu-2", waiting, None, T0) == []


def test_request_refused_while_blocked_can_be_proposed_again():
    state = known_therapist(profile=TherapistProfile(7, "a@b.example", "A", "B", contact_blocked=True))
    assert state.match_created("e1", request(1, T0 - WEEK), T0) == [DropRequest(1, 1001, CONTACT_BLOCKED)]
    assert state.match_created("e1-again", request(1, T0 - WEEK), T0) == [DropRequest(1, 1001, CONTACT_BLOCKED)]
    state.therapist_upserted("t-unblocked", T0 + timedelta(seconds=1), PROFILE, T0)
    proposed_again = state.match_created("e2", request(1, T0 - WEEK), T0)
    assert proposed_again == [KeepRequestDetails(request(1, T0 - WEEK))]  # it waits now
    assert [r.placement_request_id for r in state.plan_contact_email(T0, WEEK).requests] == [1]


def test_a_closed_request_stays_closed_when_proposed_again():
    state = known_therapist()
    state.match_created("e1", request(1, T0 - WEEK), T0)
    state.match_status_changed("s1", 1, 1001, "cancelled", T0)
    assert state.match_created("e2", request(1, T0 - WEEK), T0) == []
    assert state.pending == {}


def test_a_replayed_match_keeps_its_details_again_while_it_waits():
    """The edge writes the table without waiting for the details to be taken by the
    broker; a replay after a crash in between must send them again."""
    state = known_therapist()
    first = state.match_created("e1", request(1, T0 - WEEK), T0)
    again = state.match_created("e1", request(1, T0 - WEEK), T0)
    assert first == again == [KeepRequestDetails(request(1, T0 - WEEK))]
    assert again[0].request.patient == {"first_name": "X"}
    state.plan_contact_email(T0, WEEK)
    assert state.match_created("e1", request(1, T0 - WEEK), T0) == []  # emailed: nothing to keep
