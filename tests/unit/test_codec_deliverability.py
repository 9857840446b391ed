"""The contact preference and the soft-bounce count survive the changelog, and table
values written before they existed decode with their defaults."""

from datetime import UTC, datetime

from domain.bounces import SoftBounces
from domain.therapist import TherapistProfile
from domain.therapist_state import EMAIL, PHONE_ONLY, TherapistState
from streams.messages.codec import dumps, loads, state_from_wire, state_to_wire

SENT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PROFILE = TherapistProfile(7, "eva@praxis.example", "Eva", "Müller")


def test_round_trip_with_a_preference_and_soft_bounces():
    for row in (
        SoftBounces("eva@praxis.example", 2, SENT),
        SoftBounces("eva@praxis.example", 1, SENT, datetime(2026, 11, 24, 9, 0, tzinfo=UTC)),
    ):
        state = TherapistState(7, profile=PROFILE, contact_channel=PHONE_ONLY, soft_bounces=row)
        assert state_from_wire(loads(dumps(state_to_wire(state)))) == state


def test_a_value_written_before_issue_17_decodes_as_email_without_soft_bounces():
    # As the codec wrote it before: no contact_channel, no soft_bounces.
    old = {
        "therapist_id": 7,
        "profile": None,
        "profile_as_of": None,
        "deleted": False,
        "pending": [],
        "in_flight": [],
        "contact_sent_at": ["2026-11-23T09:00:00+00:00"],
        "settled": {"5": ["emailed", "2026-11-23T09:00:00+00:00"]},
        "seen_events": {},
        "awaiting_confirmation": [],
        "suppression": None,
    }
    state = state_from_wire(old)
    assert (state.contact_channel, state.soft_bounces) == (EMAIL, None)
    assert state.contact_sent_at == [SENT] and state.settled == {5: ("emailed", SENT)}
    assert state_to_wire(state) == {**old, "contact_channel": "email", "soft_bounces": None}
