"""The therapist aggregate survives its trip through the changelog unchanged."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import InFlightEmail, TherapistState
from streams.messages.codec import STATE_CODEC, register_state_codec, state_from_wire, state_to_wire

instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))
requests = st.builds(
    PlacementRequest,
    st.integers(1, 10**6),
    st.integers(1, 10**6),
    instants,
    st.dictionaries(st.sampled_from(["first_name", "diagnosis", "notes"]), st.text(max_size=20)),
    st.none() | st.just("in_review"),
)


@given(st.lists(requests, max_size=5), st.lists(instants, max_size=3), st.booleans())
def test_round_trip(pending, sent, deleted):
    state = TherapistState(
        therapist_id=7,
        profile=TherapistProfile(
            7, "a@b.example", "A", "B", "Dr.", "Frau", availability={"monday": [{"start": "09:00", "end": "10:00"}]}
        ),
        profile_as_of=datetime(2026, 1, 1, tzinfo=UTC),
        deleted=deleted,
        pending={r.placement_request_id: r for r in pending},
        in_flight={"k": InFlightEmail("k", "contact_request", (1, 2), datetime(2026, 1, 2, tzinfo=UTC), True)},
        contact_sent_at=sent,
        settled={5: ("emailed", datetime(2026, 1, 3, tzinfo=UTC))},
        seen_events={"e": datetime(2026, 1, 4, tzinfo=UTC) + timedelta(seconds=1)},
    )
    back = state_from_wire(state_to_wire(state))
    assert back == state
    assert [r.patient for r in back.pending.values()] == [r.patient for r in state.pending.values()]


def test_codec_is_registered_for_the_table():
    from faust.serializers import codecs

    register_state_codec()
    state = TherapistState(3)
    assert codecs.loads(STATE_CODEC, codecs.dumps(STATE_CODEC, state)) == state
    bookmark = {"last_run": "2026-01-01T09:00:00+00:00"}
    assert codecs.loads(STATE_CODEC, codecs.dumps(STATE_CODEC, bookmark)) == bookmark
