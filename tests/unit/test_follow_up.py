"""What follows up a sent contact email that is due for it (CONTRACT §5.4)."""

import pytest

from domain.follow_up import (
    FollowUpByEmail,
    FollowUpCall,
    NoFollowUp,
    NoFollowUpReason,
    RequestInEmail,
    TherapistOnFile,
    decide_follow_up,
    without_call,
)

WITH_HOURS = TherapistOnFile(deleted=False, contact_blocked=False, has_phone_hours=True)
NO_HOURS = TherapistOnFile(deleted=False, contact_blocked=False, has_phone_hours=False)
DELETED = TherapistOnFile(deleted=True, contact_blocked=False, has_phone_hours=True)
BLOCKED = TherapistOnFile(deleted=False, contact_blocked=True, has_phone_hours=True)

OPEN = (RequestInEmail(1, None, None), RequestInEmail(2, None, "in_review"))
SETTLED = (RequestInEmail(3, "no_capacity", None), RequestInEmail(4, None, "accepted"))
CLOSED = (RequestInEmail(5, None, "withdrawn"),)


@pytest.mark.parametrize(
    ("answered", "requests", "therapist", "expected"),
    [
        pytest.param(
            True, OPEN, WITH_HOURS, NoFollowUp(NoFollowUpReason.ANSWERED), id="answered without per-request outcomes"
        ),
        pytest.param(
            True,
            (RequestInEmail(1, None, None), RequestInEmail(3, "no_capacity", None)),
            WITH_HOURS,
            FollowUpCall((1,)),
            id="answered with per-request outcomes: the unanswered ones are followed up",
        ),
        pytest.param(
            True, SETTLED, WITH_HOURS, NoFollowUp(NoFollowUpReason.NOTHING_OPEN), id="answered for every request"
        ),
        pytest.param(
            False,
            SETTLED + CLOSED,
            WITH_HOURS,
            NoFollowUp(NoFollowUpReason.NOTHING_OPEN),
            id="every request answered, accepted or closed",
        ),
        pytest.param(
            False,
            SETTLED,
            DELETED,
            NoFollowUp(NoFollowUpReason.NOTHING_OPEN),
            id="nothing open, whatever the therapist's state",
        ),
        pytest.param(False, OPEN, DELETED, NoFollowUp(NoFollowUpReason.NOT_TO_BE_CONTACTED), id="therapist deleted"),
        pytest.param(False, OPEN, BLOCKED, NoFollowUp(NoFollowUpReason.NOT_TO_BE_CONTACTED), id="therapist blocked"),
        pytest.param(False, OPEN, WITH_HOURS, FollowUpCall((1, 2)), id="phone hours: a call"),
        pytest.param(
            False,
            SETTLED + OPEN + CLOSED,
            WITH_HOURS,
            FollowUpCall((1, 2)),
            id="the call is about the open requests only, in email order",
        ),
        pytest.param(False, OPEN, NO_HOURS, FollowUpByEmail((1, 2)), id="no phone hours: a follow-up email"),
        pytest.param(
            False,
            (RequestInEmail(1, None, None, taken_over=True), RequestInEmail(2, None, None)),
            WITH_HOURS,
            FollowUpCall((2,)),
            id="a request taken over by a call or a later email is not followed up again",
        ),
        pytest.param(
            False,
            (RequestInEmail(1, None, None, taken_over=True),),
            NO_HOURS,
            NoFollowUp(NoFollowUpReason.NOTHING_OPEN),
            id="nothing open once every request was taken over",
        ),
        pytest.param(False, OPEN, None, FollowUpByEmail((1, 2)), id="therapist unknown: a follow-up email"),
        pytest.param(
            False,
            CLOSED + OPEN,
            None,
            FollowUpByEmail((1, 2)),
            id="the email is about the open requests only",
        ),
    ],
)
def test_decide_follow_up(answered, requests, therapist, expected):
    assert decide_follow_up(answered, requests, therapist) == expected


def test_no_free_slot_turns_the_call_into_an_email_and_says_why():
    decision = without_call(FollowUpCall((1, 2)), "no free slot in the next 14 days")
    assert decision == FollowUpByEmail((1, 2), no_call_slot="no free slot in the next 14 days")


def test_a_follow_up_email_decided_directly_raises_no_alert():
    assert decide_follow_up(False, OPEN, NO_HOURS) == FollowUpByEmail((1, 2), no_call_slot=None)
