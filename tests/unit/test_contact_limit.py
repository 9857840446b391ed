"""The weekly contact limit (CONTRACT §5.1) as a table of fixed, aware instants."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.contact_limit import (
    Claim,
    ClaimCandidate,
    HoldBack,
    check_claims,
    may_contact,
    next_contact_at,
    sliding_window,
)

BERLIN = ZoneInfo("Europe/Berlin")
WEEK = timedelta(days=7)
SENT = datetime(2026, 11, 16, 9, 0, 5, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("history", "now", "allowed"),
    [
        ((), SENT, True),  # never contacted
        ((SENT,), SENT + WEEK, True),  # exactly at the boundary: half-open window
        ((SENT,), SENT + WEEK - timedelta(seconds=1), False),  # one second before
        ((SENT,), SENT + WEEK + timedelta(seconds=1), True),  # one second after
        ((SENT,), SENT + timedelta(days=1), False),
        # the latest send counts, whatever the order of the history
        ((SENT, SENT - timedelta(days=30)), SENT + WEEK - timedelta(seconds=1), False),
        ((SENT - timedelta(days=30), SENT), SENT + WEEK, True),
        # same instant written in another zone
        ((SENT.astimezone(UTC),), SENT + WEEK - timedelta(microseconds=1), False),
    ],
)
def test_weekly_rule(history, now, allowed):
    assert may_contact(history, now, WEEK) is allowed


# The interval is a duration (168 hours), not "same local time next week": across a
# DST change the next allowed send moves by an hour of local time.
@pytest.mark.parametrize(
    ("sent", "first_allowed_local"),
    [
        # spring forward on Sun 29 March 2026: 09:00 CET + 168 h = 10:00 CEST
        (datetime(2026, 3, 23, 9, 0, tzinfo=BERLIN), datetime(2026, 3, 30, 10, 0, tzinfo=BERLIN)),
        # fall back on Sun 25 October 2026: 09:00 CEST + 168 h = 08:00 CET
        (datetime(2026, 10, 19, 9, 0, tzinfo=BERLIN), datetime(2026, 10, 26, 8, 0, tzinfo=BERLIN)),
    ],
)
def test_weekly_rule_across_dst(sent, first_allowed_local):
    allowed_at = next_contact_at([sent], WEEK)
    assert allowed_at == first_allowed_local
    assert not may_contact([sent], first_allowed_local - timedelta(seconds=1), WEEK)
    assert may_contact([sent], first_allowed_local, WEEK)


def test_daily_0900_run_after_spring_forward_waits_a_day():
    # Sent Monday 09:00 CET; the next Monday's 09:00 CEST run is only 167 h later.
    sent = datetime(2026, 3, 23, 9, 0, tzinfo=BERLIN)
    assert not may_contact([sent], datetime(2026, 3, 30, 9, 0, tzinfo=BERLIN), WEEK)
    assert may_contact([sent], datetime(2026, 3, 31, 9, 0, tzinfo=BERLIN), WEEK)


def test_sliding_window_keeps_only_sends_that_still_constrain():
    now = SENT + timedelta(days=3)
    old = SENT - timedelta(days=5)  # more than a week before now
    assert sliding_window([SENT, old], now, WEEK) == (SENT,)
    assert sliding_window([SENT], SENT + WEEK, WEEK) == ()


# The weekly rule checked once more when due emails are claimed for sending.
# Candidates are (email id, therapist id, limited), in the order they were fetched;
# ``last_sent`` is the latest limited send per therapist, ``being_sent`` the
# therapists with a limited email another worker is sending.
CLAIM_AT = SENT + timedelta(days=2)


@pytest.mark.parametrize(
    ("candidates", "last_sent", "being_sent", "expected"),
    [
        pytest.param([(1, 7, True)], {}, set(), [Claim(1)], id="first email to the therapist"),
        pytest.param(
            [(1, 7, True)],
            {7: SENT},
            set(),
            [HoldBack(1, until=SENT + WEEK)],
            id="within the interval: held until it has passed",
        ),
        pytest.param(
            [(1, 7, True)],
            {7: CLAIM_AT - WEEK},
            set(),
            [Claim(1)],
            id="exactly the interval after the last send",
        ),
        pytest.param([(1, 7, True)], {7: SENT - WEEK}, set(), [Claim(1)], id="after the interval"),
        pytest.param(
            [(1, 7, True), (2, 7, True)],
            {},
            set(),
            [Claim(1), HoldBack(2, until=CLAIM_AT + WEEK)],
            id="two limited emails for one therapist in one claim: the first goes",
        ),
        pytest.param(
            [(1, 7, True), (2, 8, True)],
            {},
            set(),
            [Claim(1), Claim(2)],
            id="limited emails for two therapists",
        ),
        pytest.param(
            [(1, 7, True)],
            {},
            {7},
            [HoldBack(1, until=CLAIM_AT + WEEK)],
            id="being sent by another worker",
        ),
        pytest.param(
            [(1, 7, True)],
            {7: SENT},
            {7},
            [HoldBack(1, until=SENT + WEEK)],
            id="being sent elsewhere and within the interval: held until the interval has passed",
        ),
        pytest.param(
            [(1, 7, False)],
            {7: SENT},
            {7},
            [Claim(1)],
            id="an unlimited email (confirmation) is never held",
        ),
        pytest.param(
            [(1, 7, True), (2, 7, False), (3, 7, True)],
            {},
            set(),
            [Claim(1), Claim(2), HoldBack(3, until=CLAIM_AT + WEEK)],
            id="an unlimited email does not use up the therapist's slot",
        ),
        pytest.param(
            [(1, 7, False), (2, 7, True)],
            {},
            set(),
            [Claim(1), Claim(2)],
            id="a confirmation before a limited email in the same claim",
        ),
        pytest.param([], {}, set(), [], id="nothing due"),
    ],
)
def test_claims_are_checked_against_what_was_really_sent(candidates, last_sent, being_sent, expected):
    decisions = check_claims(
        [ClaimCandidate(email_id, therapist_id, limited) for email_id, therapist_id, limited in candidates],
        last_sent,
        being_sent,
        CLAIM_AT,
        WEEK,
    )
    assert decisions == expected
