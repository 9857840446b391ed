"""One-click opt-out (issue 17, point 2, RFC 8058) on the real worker: the contact
email that arrives at the SMTP server carries List-Unsubscribe, List-Unsubscribe-Post
and the footer link; the link, on the worker's own web server, shows a page on GET
and changes nothing, switches the therapist to phone-only on POST (once, however
often it is clicked), and a forged token gets 404."""

from __future__ import annotations

import re
from email.message import Message
from urllib.parse import unquote

import aiohttp

from streams.demo.broker import free_port
from tests.e2e.harness import Service, plain_text
from tests.events import match_created, therapist_created

SECRET = "e2e-unsubscribe-secret-0123456789abcdef"
SET_PREFERENCE = "communication.set_contact_preference"
CHANGED = "communication.contact_preference_changed"
ALWAYS = {
    day: [{"start": "00:00", "end": "24:00"}]
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
}


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


async def opt_out_worker(service: Service) -> str:
    """A worker whose opt-out links lead to its own web server; that server's base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await service.up(
        COMM_WEB_PORT=str(port),
        COMM_UNSUBSCRIBE_URL=f"{base}/unsubscribe/{{token}}",
        COMM_UNSUBSCRIBE_SECRET=SECRET,
        COMM_UNSUBSCRIBE_MAILTO="abmelden@vermittlung.example",
        COMM_CALL_MIN_NOTICE="0s",
    )
    return base


def html_part(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            return str(part.get_payload(decode=True), "utf-8")
    raise AssertionError("no text/html part")


async def request(session: aiohttp.ClientSession, method: str, url: str, **options: object) -> tuple[int, str]:
    async with session.request(method, url, allow_redirects=False, **options) as response:  # type: ignore[arg-type]
        return response.status, await response.text()


async def preference_events(service: Service, count: int) -> list[tuple[str, str]]:
    """Until ``count`` distinct contact_preference_changed events for therapist 1
    arrived: (channel, source) of each, in order."""
    found = await service.wait_event(CHANGED, count, distinct=True, therapist_id=1)
    return [(e["payload"]["channel"], e["payload"]["source"]) for e in found]


async def test_the_link_in_a_received_email_switches_to_phone_once_and_get_changes_nothing(service: Service):
    base = await opt_out_worker(service)
    await service.therapists(therapist_created(1, availability=ALWAYS), therapist_created(2))
    await service.matches(match_created(11, 1, "2026-01-01T10:00:00+01:00"))
    [received] = await service.mailbox.wait_for(address(1), 1)

    # The headers of RFC 8058, and the same link in the footer of both parts.
    message = received.message
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    targets = re.findall(r"<([^>]+)>", " ".join(str(message["List-Unsubscribe"]).split()))
    [link, mailto] = targets
    assert link.startswith(f"{base}/unsubscribe/1.") and "praxis" not in link  # no address in the URL
    token = link.rsplit("/", 1)[1]
    assert unquote(mailto) == f"mailto:abmelden@vermittlung.example?subject=unsubscribe {token}"
    assert link in plain_text(received) and f'href="{link}"' in html_part(message)
    await service.known_for_calls(1)  # the page checks the token against the directory's address

    async with aiohttp.ClientSession() as session:
        # GET (a mail scanner, a link preview): a page with a button, nothing changes.
        for _ in range(2):
            status, page = await request(session, "GET", link)
            assert status == 200 and '<form method="post">' in page
        # Forged: 404, nothing published.
        forged = f"{base}/unsubscribe/1.{token.split('.')[1][::-1]}"
        assert (await request(session, "POST", forged, data={"List-Unsubscribe": "One-Click"}))[0] == 404
        assert (await request(session, "POST", f"{base}/unsubscribe/2.{token.split('.')[1]}"))[0] == 404
        # Staff set phone-only: the first change of the channel is theirs, so no GET
        # (nor the forged POSTs) went through before it.
        await service.command(SET_PREFERENCE, {"therapist_id": 1, "channel": "phone_only"})
        assert await preference_events(service, 1) == [("phone_only", "command")]
        await service.command(SET_PREFERENCE, {"therapist_id": 1, "channel": "email"})
        assert await preference_events(service, 2) == [("phone_only", "command"), ("email", "command")]

        # The mail client's one-click POST, with the token from the received email.
        status, page = await request(session, "POST", link, data={"List-Unsubscribe": "One-Click"})
        assert status == 200 and "Sie sind abgemeldet" in page
        assert (await preference_events(service, 3))[2] == ("phone_only", "one_click")
        # A second click (the page's button) changes nothing: staff switching back to
        # email afterwards is the next change.
        assert (await request(session, "POST", link, data={"List-Unsubscribe": "One-Click"}))[0] == 200
        await service.command(SET_PREFERENCE, {"therapist_id": 1, "channel": "email"})
        assert (await preference_events(service, 4))[3] == ("email", "command")
        # After staff switched back, the same link switches to phone again.
        assert (await request(session, "POST", link))[0] == 200
        events = await preference_events(service, 5)
    assert events == [
        ("phone_only", "command"),
        ("email", "command"),
        ("phone_only", "one_click"),
        ("email", "command"),
        ("phone_only", "one_click"),
    ]

    # Phone-only: the next requests go to a call in the therapist's hours, no email.
    await service.matches(match_created(12, 1, "2026-01-02T10:00:00+01:00"))
    [call] = await service.wait_event("communication.phone_call_scheduled", therapist_id=1, reason="phone_only")
    assert 12 in call["payload"]["placement_request_ids"]
    await service.matches(match_created(21, 2, "2026-01-03T10:00:00+01:00"))
    await service.mailbox.wait_for(address(2), 1)  # a batch run after the call was booked
    assert len(service.mailbox.to(address(1))) == 1
    assert len(service.events(CHANGED)) == 5
