"""Which due email goes out first: kind, then the longest-waiting request, then id."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.decisions import CONFIRMATION, CONTACT_REQUEST, FOLLOW_UP, MANUAL
from domain.delivery_order import delivery_order, priority_of

BERLIN = ZoneInfo("Europe/Berlin")
JAN = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "priority"),
    [
        (CONFIRMATION, 0),
        (MANUAL, 1),
        (FOLLOW_UP, 2),
        (CONTACT_REQUEST, 3),
        ("something_new", 3),  # an unknown kind waits like a contact request
    ],
)
def test_priority_of_kind(kind, priority):
    assert priority_of(kind) == priority


# Each row: due emails as (name, kind, oldest registration, id), and the order they go out in.
@pytest.mark.parametrize(
    ("emails", "order"),
    [
        pytest.param(
            [
                ("contact", CONTACT_REQUEST, JAN, 1),
                ("follow-up", FOLLOW_UP, JAN, 2),
                ("manual", MANUAL, JAN, 3),
                ("confirmation", CONFIRMATION, JAN, 4),
            ],
            ["confirmation", "manual", "follow-up", "contact"],
            id="most urgent kind first",
        ),
        pytest.param(
            [("late", CONTACT_REQUEST, JAN + timedelta(days=30), 1), ("early", CONTACT_REQUEST, JAN, 2)],
            ["early", "late"],
            id="same kind: the longest-waiting request first",
        ),
        pytest.param(
            [("old contact", CONTACT_REQUEST, JAN - timedelta(days=300), 1), ("confirmation", CONFIRMATION, None, 2)],
            ["confirmation", "old contact"],
            id="kind before waiting time",
        ),
        pytest.param(
            [("unknown", CONTACT_REQUEST, None, 1), ("known", CONTACT_REQUEST, JAN + timedelta(days=300), 2)],
            ["known", "unknown"],
            id="no registration time goes last",
        ),
        pytest.param(
            [("second", CONTACT_REQUEST, JAN, 9), ("first", CONTACT_REQUEST, JAN, 4)],
            ["first", "second"],
            id="otherwise the email created first",
        ),
        pytest.param(
            [("second", MANUAL, None, 9), ("first", MANUAL, None, 4)],
            ["first", "second"],
            id="both without registration time: by id",
        ),
        pytest.param(
            [
                ("utc", CONTACT_REQUEST, JAN + timedelta(minutes=30), 1),
                ("berlin", CONTACT_REQUEST, datetime(2026, 1, 5, 11, 0, tzinfo=BERLIN), 2),  # 10:00 UTC
            ],
            ["berlin", "utc"],
            id="registration times are instants, whatever their zone",
        ),
    ],
)
def test_delivery_order(emails, order):
    by_urgency = sorted(emails, key=lambda e: delivery_order(priority_of(e[1]), e[2], e[3]))
    assert [name for name, *_ in by_urgency] == order
