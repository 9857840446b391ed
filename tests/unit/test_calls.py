"""Call outcomes, reminders and which requests a follow-up is about."""

import pytest

from domain.calls import CallStatus, Finish, Reschedule, after_outcome, change_refusal
from domain.follow_up import RequestInEmail, open_requests

C = CallStatus


@pytest.mark.parametrize(
    ("outcome", "attempt", "expected"),
    [
        (C.NO_ANSWER, 1, Reschedule(2)),
        (C.BUSY, 2, Reschedule(3)),
        (C.NO_ANSWER, 3, Finish(C.NO_ANSWER, "x")),  # the third of three: give up, alert
        (C.BUSY, 4, Finish(C.BUSY, "x")),
        (C.COMPLETED, 1, Finish(C.COMPLETED)),
        (C.COMPLETED, 3, Finish(C.COMPLETED)),
        (C.WRONG_NUMBER, 1, Finish(C.WRONG_NUMBER, "x")),
    ],
)
def test_after_outcome(outcome, attempt, expected):
    result = after_outcome(outcome, attempt, max_attempts=3)
    assert type(result) is type(expected)
    if isinstance(expected, Finish):
        assert result.status is expected.status
        assert (result.alert is None) is (expected.alert is None)
    else:
        assert result == expected


def test_scheduled_and_cancelled_are_not_outcomes():
    for status in (C.SCHEDULED, C.CANCELLED):
        with pytest.raises(ValueError, match="not an outcome"):
            after_outcome(status, 1, 3)


@pytest.mark.parametrize("status", list(C))
def test_only_scheduled_calls_change(status):
    assert (change_refusal(status) is None) is (status is C.SCHEDULED)


def test_follow_up_is_about_the_open_requests_only():
    requests = [
        RequestInEmail(1, None, None),  # open
        RequestInEmail(2, "no_capacity", None),  # answered
        RequestInEmail(3, None, "accepted"),  # accepted
        RequestInEmail(4, None, "withdrawn"),  # closed
        RequestInEmail(5, None, "in_review"),  # another status: still open
        RequestInEmail(6, "needs_info", None),  # answered (even if it asks something)
    ]
    assert [r.placement_request_id for r in open_requests(requests)] == [1, 5]
