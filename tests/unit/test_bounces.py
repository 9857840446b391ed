"""Bounces and complaints after acceptance (issue 17, point 1): which stop email to an
address, how soft bounces are counted in a row, and what the therapist's state does
with them. Pure rules, fixed times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain import bounces
from domain.batching import derived_key
from domain.bounces import HARD, SOFT, Bounce, SoftBounces
from domain.decisions import AlertStaff, BookCall, ReportBounce, SuppressAddress
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import CALLED, UNDELIVERABLE, TherapistState

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
ADDRESS = "eva@praxis.example"
HOURS = {"monday": [{"start": "09:00", "end": "12:00"}]}
LIMIT = 3


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def soft(sent_hours: float, next_sent_hours: float | None = None, email_id: int = 1) -> Bounce:
    following = None if next_sent_hours is None else at(next_sent_hours)
    return Bounce(SOFT, ADDRESS, email_id, at(sent_hours), following)


# -- counting soft bounces in a row (domain.bounces) ---------------------------------


def run(*steps: tuple[str, float] | tuple[str, float, float]) -> SoftBounces | None:
    """Apply ("sent", hours) and ("bounce", sent hours[, next sent hours]) in order."""
    row: SoftBounces | None = None
    for step in steps:
        sent = step[0] == "sent"
        row = bounces.sent(row, at(step[1])) if sent else bounces.counted(row, soft(*step[1:]))  # type: ignore[arg-type]
    return row


@pytest.mark.parametrize(
    ("steps", "count"),
    [
        pytest.param([("bounce", 0)], 1, id="the first soft bounce"),
        pytest.param([("bounce", 0), ("bounce", 0)], 1, id="a second report about the same email"),
        pytest.param(
            [("sent", 0), ("bounce", 0), ("sent", 24), ("bounce", 24), ("sent", 48), ("bounce", 48)],
            3,
            id="three emails, each bounced before the next was sent: a row (each send precedes its own bounce)",
        ),
        pytest.param(
            [("bounce", 0), ("sent", 24), ("sent", 48), ("bounce", 48)],
            1,
            id="an email in between that did not bounce ends the row",
        ),
        pytest.param(
            [("bounce", 0), ("sent", 24), ("sent", 48), ("bounce", 24), ("bounce", 48)],
            3,
            id="emails in between that bounced too keep the row",
        ),
        pytest.param(
            [("bounce", 0, 24), ("bounce", 48)],
            1,
            id="an email sent before the report came (the database knows) ends the row",
        ),
        pytest.param(
            [("bounce", 0, 24), ("bounce", 24), ("bounce", 48)],
            3,
            id="unless it bounced itself",
        ),
        pytest.param([("bounce", 24), ("bounce", 0)], 1, id="a late report about an older email changes nothing"),
    ],
)
def test_soft_bounces_are_counted_per_email_in_the_order_they_were_sent(steps, count):
    row = run(*steps)
    assert row is not None and row.count == count


def test_a_send_before_the_first_bounce_is_not_remembered():
    assert bounces.sent(None, T0) is None


@pytest.mark.parametrize(
    ("bounce_type", "soft_count", "stops"),
    [("hard", 0, True), ("complaint", 0, True), ("soft", 2, False), ("soft", 3, True), ("soft", 4, True)],
)
def test_what_stops_email(bounce_type, soft_count, stops):
    assert bounces.stops_email(bounce_type, soft_count, LIMIT) is stops


# -- the therapist's state -------------------------------------------------------------


def request(request_id: int, days_ago: int = 30) -> PlacementRequest:
    return PlacementRequest(request_id, request_id + 1000, T0 - timedelta(days=days_ago))


def emailed(
    hours: dict[str, list[dict[str, str]]] | None = None,
) -> tuple[TherapistState, tuple[PlacementRequest, ...]]:
    """Requests 1 and 2 went out in an email sent at T0."""
    state = TherapistState(7)
    profile = TherapistProfile(7, ADDRESS, "Eva", "Müller", availability=hours or {})
    state.therapist_upserted("t1", T0 - timedelta(days=30), profile, T0)
    state.match_created("m1", request(1), T0)
    state.match_created("m2", request(2, days_ago=40), T0)
    email = state.plan_contact_email(T0, WEEK)
    assert email is not None
    state.email_sent(email.email_key, True, T0, WEEK)
    return state, email.requests


def test_a_hard_bounce_suppresses_the_address_and_its_requests_go_to_a_call_with_phone_hours():
    state, carried = emailed(HOURS)
    state.match_created("m3", request(3), T0)  # waiting since: goes with them
    bounce = Bounce(HARD, ADDRESS.upper(), 11, T0)  # the address as the bounce processor spelt it
    decisions = state.bounce_recorded("c1", bounce, carried, LIMIT, at(1))

    report, suppress, call, alert = decisions
    assert report == ReportBounce("c1", 11, HARD, 0, suppressed=True)
    assert suppress == SuppressAddress(ADDRESS.upper(), "hard bounce reported for email 11", 11, "c1")
    assert isinstance(call, BookCall) and call.reason == UNDELIVERABLE
    assert call.call_key == derived_key("undeliverable_call", "c1")
    assert [r.placement_request_id for r in call.requests] == [2, 1, 3]
    assert isinstance(alert, AlertStaff) and alert.code == "email_undeliverable" and alert.email_id == 11
    assert "phone call" in alert.message and ADDRESS not in alert.message.casefold()
    assert state.suppression is not None and state.pending == {}
    assert {r: state.settled[r][0] for r in (1, 2, 3)} == {1: CALLED, 2: CALLED, 3: CALLED}
    # The same command again (a replay) changes nothing.
    assert state.bounce_recorded("c1", bounce, carried, LIMIT, at(2)) == []


def test_a_complaint_does_the_same_and_without_phone_hours_the_requests_wait():
    state, carried = emailed()
    decisions = state.bounce_recorded("c1", Bounce("complaint", ADDRESS, 11, T0), carried, LIMIT, at(1))
    assert [type(d) for d in decisions] == [ReportBounce, SuppressAddress, AlertStaff]
    assert decisions[0] == ReportBounce("c1", 11, "complaint", 0, suppressed=True)
    assert "no phone hours" in decisions[2].message  # type: ignore[union-attr]
    assert set(state.pending) == {1, 2}
    # No batch run emails the address, however late; no call without hours.
    assert state.plan_contact_email(T0 + 2 * WEEK, WEEK) is None
    assert state.plan_phone_call("k", T0 + 2 * WEEK) is None


def test_a_bounce_of_an_address_the_therapist_no_longer_has_is_only_recorded():
    state, carried = emailed(HOURS)
    moved = TherapistProfile(7, "neu@praxis.example", "Eva", "Müller", availability=HOURS)
    state.therapist_upserted("t2", T0, moved, at(1))
    decisions = state.bounce_recorded("c1", Bounce(HARD, ADDRESS, 11, T0), carried, LIMIT, at(2))
    assert decisions == [ReportBounce("c1", 11, HARD, 0, suppressed=False)]
    assert state.suppression is None and state.pending == {}


def test_soft_bounces_suppress_at_the_limit_in_a_row_and_not_before():
    state, carried = emailed(HOURS)
    reports = []
    for n in range(3):
        sent_at = at(24 * n)
        if n:
            state.email_sent(f"k{n}", False, sent_at, WEEK)  # another email to the same address
        decisions = state.bounce_recorded(
            f"c{n}", Bounce(SOFT, ADDRESS, 11 + n, sent_at), carried, LIMIT, at(24 * n + 1)
        )
        reports.append(decisions[0])
        if n < 2:
            assert len(decisions) == 1 and state.suppression is None
    assert [(r.soft_bounce_count, r.suppressed) for r in reports] == [(1, False), (2, False), (3, True)]  # type: ignore[union-attr]
    assert (
        state.suppression is not None and state.suppression.reason == "3 soft bounces in a row, the last for email 13"
    )


def test_an_email_that_got_through_starts_the_count_again():
    state, carried = emailed()
    state.bounce_recorded("c1", Bounce(SOFT, ADDRESS, 11, T0), carried, LIMIT, at(1))
    state.bounce_recorded("c2", Bounce(SOFT, ADDRESS, 12, at(24)), (), LIMIT, at(25))
    state.email_sent("k3", False, at(48), WEEK)  # never reported as bounced
    state.email_sent("k4", False, at(72), WEEK)
    [report] = state.bounce_recorded("c4", Bounce(SOFT, ADDRESS, 14, at(72)), (), LIMIT, at(73))
    assert report == ReportBounce("c4", 14, SOFT, 1, suppressed=False)


def test_a_soft_bounce_that_does_not_stop_email_leaves_the_requests_with_their_email():
    state, carried = emailed(HOURS)
    [report] = state.bounce_recorded("c1", Bounce(SOFT, ADDRESS, 11, T0), carried, LIMIT, at(1))
    assert report.soft_bounce_count == 1  # type: ignore[union-attr]
    assert state.pending == {} and state.settled[1][0] == "emailed"


def test_requests_closed_meanwhile_do_not_come_back():
    state, carried = emailed()
    state.match_status_changed("s1", 1, 1001, "withdrawn", at(1))
    state.bounce_recorded("c1", Bounce(HARD, ADDRESS, 11, T0), carried, LIMIT, at(2))
    assert set(state.pending) == {2}


def test_a_hard_bounce_while_suppressed_brings_its_requests_back_without_a_second_suppression():
    state, carried = emailed()
    state.bounce_recorded("c1", Bounce(HARD, ADDRESS, 11, T0), (), LIMIT, at(1))  # another email bounced first
    decisions = state.bounce_recorded("c2", Bounce(HARD, ADDRESS, 12, T0), carried, LIMIT, at(2))
    assert decisions == [ReportBounce("c2", 12, HARD, 0, suppressed=False)]
    assert set(state.pending) == {1, 2}


def test_lifting_the_suppression_forgets_the_soft_bounces():
    state, carried = emailed()
    for n in range(3):
        state.bounce_recorded(f"c{n}", Bounce(SOFT, ADDRESS, 11 + n, at(n)), carried, LIMIT, at(n + 1))
    assert state.suppression is not None
    state.lift_suppression("l1", "Postfach geleert", at(5))
    [report] = state.bounce_recorded("c9", Bounce(SOFT, ADDRESS, 20, at(6)), (), LIMIT, at(7))
    assert report == ReportBounce("c9", 20, SOFT, 1, suppressed=False)


def test_a_deleted_therapist_s_bounce_is_recorded_and_nothing_else():
    state, carried = emailed(HOURS)
    state.therapist_deleted("d1", at(1), at(1))
    decisions = state.bounce_recorded("c1", Bounce(HARD, ADDRESS, 11, T0), carried, LIMIT, at(2))
    assert decisions == [ReportBounce("c1", 11, HARD, 0, suppressed=False)]
    assert state.suppression is None
