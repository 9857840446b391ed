"""Property: whatever the order of matches, cancellations, duplicates, batch runs and
delivery feedback, the aggregate keeps the service's promises for one therapist."""

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.decisions import SendEmail
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import TherapistState

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
INTERVAL = timedelta(days=7)
DAY = timedelta(days=1)

steps = st.lists(
    st.one_of(
        st.tuples(st.just("match"), st.integers(1, 12), st.integers(0, 400)),
        st.tuples(st.just("cancel"), st.integers(1, 12), st.just(0)),
        st.tuples(st.just("replay"), st.integers(0, 50), st.just(0)),
        st.tuples(st.just("wait"), st.integers(1, 72), st.just(0)),  # hours
        st.tuples(st.just("deliver"), st.integers(0, 3), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_weekly_rule_batching_and_cancellation_hold(script):
    state = TherapistState(1)
    state.therapist_upserted("t", START - DAY, TherapistProfile(1, "a@b.example", "A", "B"), START)
    now = START
    history: list[tuple[str, tuple]] = []  # every event delivered, for replays
    emails: list[SendEmail] = []
    in_flight: list[SendEmail] = []
    sent_at: list[datetime] = []
    closed: dict[int, datetime] = {}  # request -> when it was closed
    matched: set[int] = set()
    next_run = START

    def deliver(name, args):
        if name == "match":
            state.match_created(*args, now)
        else:
            state.match_status_changed(*args, now)

    def batch_runs_until(moment):
        nonlocal next_run
        while next_run <= moment:
            decision = state.plan_contact_email(next_run, INTERVAL)
            if decision is not None:
                emails.append(decision)
                in_flight.append(decision)
            next_run += DAY

    for number, (kind, a, b) in enumerate(script):
        if kind == "match":
            event = ("match", (f"m{number}", PlacementRequest(a, 100 + a, START - timedelta(hours=b))))
            matched.add(a)
        elif kind == "cancel":
            event = ("status", (f"c{number}", a, 100 + a, "cancelled"))
            closed.setdefault(a, now)
        elif kind == "replay" and history:
            event = history[a % len(history)]
        elif kind == "wait":
            now += timedelta(hours=a)
            batch_runs_until(now)
            continue
        elif kind == "deliver" and in_flight:
            email = in_flight.pop(0)
            moment = max(now, email.decided_at) + timedelta(minutes=a)
            state.email_sent(email.email_key, True, moment, INTERVAL)
            sent_at.append(moment)
            continue
        else:
            continue
        history.append(event)
        deliver(*event)

    # Drain: deliver what is in flight and keep running batches until nothing is pending.
    for _ in range(10):
        while in_flight:
            email = in_flight.pop(0)
            moment = max(now, email.decided_at)
            state.email_sent(email.email_key, True, moment, INTERVAL)
            sent_at.append(moment)
        now += INTERVAL + DAY
        batch_runs_until(now)

    emailed = [r.placement_request_id for e in emails for r in e.requests]
    # a placement request is emailed about once
    assert len(emailed) == len(set(emailed))
    # at most one contact email in any window of INTERVAL, measured between send times
    assert all(b - a >= INTERVAL for a, b in zip(sorted(sent_at), sorted(sent_at)[1:], strict=False))
    # no email is decided while another is still out, and decisions respect the window
    for earlier, later in itertools.pairwise(emails):
        assert later.decided_at - earlier.decided_at >= INTERVAL
    # a request closed before it was batched is never emailed
    for email in emails:
        for r in email.requests:
            assert r.placement_request_id not in closed or closed[r.placement_request_id] > email.decided_at
    # nothing open is left behind
    never_closed = matched - set(closed)
    assert never_closed <= set(emailed)
    assert state.pending == {}
