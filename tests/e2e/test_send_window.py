"""Send windows that defer (issue 17, point 4), on the real worker: with a window
that is closed when the test starts and opens some seconds later, in the therapist's
own time zone, no contact email or confirmation reaches the SMTP server while it is
closed (a manual email does), and all of them arrive once it opens. A therapist in a
zone where that window opens hours later still gets nothing but the manual email.

The window is computed from the current time, never a fixed date; it uses seconds
(HH:MM:SS) so that its edge lies a set time after the worker's start."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from domain.send_window import DAYS, next_open, parse_send_window
from tests.e2e.harness import Service
from tests.events import match_created, match_status_changed, therapist_created
from tests.waiting import until

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")
# From before the worker starts to the window's opening: a worker start (a few
# seconds, more on a busy machine) and making the emails fit well inside it.
OPENS_AFTER = timedelta(seconds=35)
OPEN_FOR = timedelta(minutes=10)
CREATE = "communication.create_email"


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


def window_text(opens: datetime, zone: tzinfo, length: timedelta) -> str:
    """A COMM_SEND_WINDOW open from ``opens`` for ``length`` on the clock of ``zone``
    (split at midnight, which a range may not cross)."""
    start, end = opens.astimezone(zone), (opens + length).astimezone(zone)
    first = f"{DAYS[start.weekday()]} {start:%H:%M:%S}"
    if start.date() == end.date():
        return f"{first}-{end:%H:%M:%S}"
    rest = f", {DAYS[end.weekday()]} 00:00:00-{end:%H:%M:%S}" if end.time() != datetime.min.time() else ""
    return f"{first}-24:00{rest}"


def manual_email(therapist_id: int) -> dict[str, object]:
    return {
        "therapist_id": therapist_id,
        "subject": "Rückfrage",
        "body_html": "<p>?</p>",
        "respect_contact_limit": False,
    }


def waiting_until(service: Service, therapist_id: int, kind: str) -> list[datetime]:
    rows = service.query(
        "SELECT next_attempt_at FROM emails WHERE therapist_id = :t AND kind = :k AND status = 'in_warteschlange'",
        t=therapist_id,
        k=kind,
    )
    return [row[0] for row in rows]


async def test_emails_wait_while_the_window_is_closed_and_all_arrive_once_it_opens(service: Service):
    opens = (datetime.now(UTC) + OPENS_AFTER).replace(microsecond=0)
    window = window_text(opens, TOKYO, OPEN_FOR)
    await service.up(COMM_SEND_WINDOW=window, COMM_SEND_WINDOW_CONFIRMATIONS="true")
    await service.therapists(
        therapist_created(1, timezone="Asia/Tokyo"), therapist_created(2, timezone="America/New_York")
    )
    await service.known_for_calls(1, 2)  # their time zones are in the database
    await service.matches(
        match_created(11, 1, "2026-01-01T10:00:00+01:00"),
        match_created(12, 1, "2026-01-02T10:00:00+01:00"),
        match_created(21, 2, "2026-01-01T10:00:00+01:00"),
        match_created(22, 2, "2026-01-02T10:00:00+01:00"),
    )
    await service.forwarded("match_created", 4)
    await service.matches(match_status_changed(12, 1, "accepted"), match_status_changed(22, 2, "accepted"))
    for therapist_id in (1, 2):
        await service.command(
            CREATE,
            {
                "therapist_id": therapist_id,
                "subject": "Rückfrage",
                "body_html": "<p>?</p>",
                "respect_contact_limit": False,
            },
        )

    # While it is closed: the manual emails go, the confirmations wait for the opening
    # in each therapist's zone (New York's comes hours later: same wall time).
    in_new_york = next_open(parse_send_window(window), NEW_YORK, opens)
    assert in_new_york - opens > timedelta(hours=12)
    manual_1 = (await service.mailbox.wait_for(address(1), 1))[0]
    manual_2 = (await service.mailbox.wait_for(address(2), 1))[0]
    await until(lambda: waiting_until(service, 1, "confirmation") == [opens], 20, "t1's confirmation to wait")
    await until(lambda: waiting_until(service, 2, "confirmation") == [in_new_york], 20, "t2's confirmation to wait")
    assert time.time() < opens.timestamp(), "the set-up took longer than OPENS_AFTER: nothing was shown to wait"
    assert len(service.smtp.messages) == 2, "only the manual emails go while the window is closed"
    assert manual_1.message["Subject"] == manual_2.message["Subject"] == "Rückfrage"

    # Once it opens: the confirmation and the contact email, neither before the opening.
    received = await service.mailbox.wait_for(address(1), 3, timeout=OPENS_AFTER.total_seconds() + 30)
    windowed = [r for r in received if r is not manual_1]
    assert sorted(r.message["Subject"] is not None for r in windowed) == [True, True]
    assert all(r.received_at >= opens.timestamp() for r in windowed), [
        r.received_at - opens.timestamp() for r in windowed
    ]
    [confirmed] = await service.wait_event("communication.email_sent", therapist_id=1, placement_request_ids=[12])
    [contacted] = await service.wait_event("communication.email_sent", therapist_id=1, placement_request_ids=[11])
    for sent in (confirmed, contacted):
        assert datetime.fromisoformat(sent["payload"]["sent_at"]) >= opens

    # New York's window has not opened: nothing but the manual email went there, and
    # its confirmation still waits for that opening.
    assert service.mailbox.to(address(2)) == [manual_2]
    assert waiting_until(service, 2, "confirmation") == [in_new_york]
    assert len(service.smtp.messages) == 4
