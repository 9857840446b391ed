"""Opt-in engagement tracking end to end (issue 17 §5), on Tansu, PostgreSQL and
aiosmtpd: an email received with tracking on carries the image and its links go
through the redirect; fetching the image twice and following a link twice publish
``email_opened`` and ``email_link_clicked`` once each; the redirect leads to the
link as written; a forged token, and a token for a link the email does not have,
get 404; and the stored email is the one written."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from streams.delivery.tracking import PIXEL, Tokens
from streams.demo.broker import free_port
from streams.demo.smtp_capture import Received
from tests.e2e.harness import Service, plain_text
from tests.events import match_created, therapist_created

SECRET = "e2e-tracking-secret-0123456789-abcdef"
API_TOKEN = "e2e-staff-tool-token-0001"
CREATE = "communication.create_email"
INFO = "https://praxis.example/info?a=1&b=2"
SECOND = "https://praxis.example/zwei"
BODY = (
    f'<p>Bitte sehen Sie <a href="{INFO.replace("&", "&amp;")}">hier</a> nach, '
    '<a href="mailto:vermittlung@example.org">schreiben</a> oder '
    '<a href="tel:+4930123456">rufen</a> Sie uns an.</p>'
    f'<p>Und <a href="{SECOND}">hier</a> noch etwas.</p>'
)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Any
    body: bytes


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the test looks at the redirect itself


def get(url: str, headers: dict[str, str] | None = None) -> Answer:
    """GET without following redirects (blocking: call it in a thread)."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read())


async def fetch(url: str, headers: dict[str, str] | None = None) -> Answer:
    return await asyncio.to_thread(get, url, headers)


class _Html(HTMLParser):
    def __init__(self, markup: str) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.links.append(values["href"] or "")
        if tag == "img" and values.get("src"):
            self.images.append(values["src"] or "")


def html_part(received: Received) -> str:
    for part in received.message.walk():
        if part.get_content_type() == "text/html":
            return str(part.get_content())
    raise AssertionError("no text/html part")


async def test_opens_and_clicks_are_published_once_and_tokens_lead_only_to_the_emails_links(service: Service):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await service.up(
        COMM_WEB_PORT=str(port),
        COMM_PUBLIC_BASE_URL=base,
        COMM_TRACK_OPENS="true",
        COMM_TRACK_CLICKS="true",
        COMM_TRACKING_SECRET=SECRET,
        COMM_API_TOKEN=API_TOKEN,
    )
    await service.therapists(therapist_created(7))
    await service.known_for_calls(7)  # the therapist agent knows the therapist
    await service.command(CREATE, {"therapist_id": 7, "subject": "Rückfrage", "body_html": BODY})
    [received] = await service.mailbox.wait_for("therapeut7@praxis.example", 1)
    [sent] = await service.wait_event("communication.email_sent", therapist_id=7)
    email_id = sent["payload"]["email_id"]

    # What arrived: the image, the two web links through the redirect, the others as written.
    html = _Html(html_part(received))
    [pixel] = [src for src in html.images if src.startswith(f"{base}/t/o/")]
    tracked = [href for href in html.links if href.startswith(f"{base}/t/c/")]
    assert len(tracked) == 2
    assert "mailto:vermittlung@example.org" in html.links and "tel:+4930123456" in html.links
    assert INFO not in html.links and SECOND not in html.links
    assert "@" not in pixel and all("@" not in href and "praxis" not in href for href in tracked)
    assert "/t/" not in plain_text(received)  # the text part is as written
    [(stored,)] = service.query("SELECT body_html FROM emails WHERE id = :id", id=email_id)
    assert "/t/" not in stored and INFO.replace("&", "&amp;") in stored

    # The image, twice: one email_opened.
    for _ in range(2):
        image = await fetch(pixel)
        assert (image.status, image.headers["Content-Type"], image.body) == (200, "image/gif", PIXEL)
        assert "no-store" in image.headers["Cache-Control"]
    [opened] = await service.wait_event("communication.email_opened", email_id=email_id)
    assert opened["payload"]["open_count"] == 1 and opened["payload"]["therapist_id"] == 7

    # The first link, twice: the link as written, one email_link_clicked.
    for _ in range(2):
        redirect = await fetch(tracked[0])
        assert redirect.status in (302, 303) and redirect.headers["Location"] == INFO
        assert "no-store" in redirect.headers["Cache-Control"]
    [clicked] = await service.wait_event("communication.email_link_clicked", email_id=email_id)
    assert clicked["payload"]["link_position"] == 1 and set(clicked["payload"]) == {
        "therapist_id",
        "email_id",
        "link_position",
        "clicked_at",
    }

    # Forged tokens, and tokens (well signed) for what the email does not have: 404.
    tokens = Tokens(SECRET.encode())
    forged_pixel = re.sub(r"[A-Za-z0-9_-](\.gif)$", lambda m: ("A" if m[0][0] != "A" else "B") + m[1], pixel)
    forged_link = tracked[0][:-1] + ("A" if tracked[0][-1] != "A" else "B")
    refused = [
        forged_pixel,
        forged_link,
        f"{base}/t/c/{email_id}.1.{'A' * 43}",
        f"{base}/t/c/{tokens.click_token(email_id, 3)}",  # the email has two web links
        f"{base}/t/c/{tokens.click_token(email_id + 1000, 1)}",  # no such email
        f"{base}/t/o/{tokens.open_token(email_id + 1000)}.gif",
        f"{base}/t/o/{tokens.open_token(email_id)}",  # not the image's address
    ]
    for url in refused:
        answer = await fetch(url)
        assert answer.status == 404, url
        assert "Location" not in answer.headers

    # The second link: its own first click. Published after everything above (the
    # outbox is relayed in order, one therapist's events on one partition), so by
    # now any second email_opened or email_link_clicked would have arrived.
    assert (await fetch(tracked[1])).headers["Location"] == SECOND
    await service.wait_event("communication.email_link_clicked", email_id=email_id, link_position=2)
    assert len(service.events("communication.email_opened")) == 1
    assert len(service.events("communication.email_link_clicked", link_position=1)) == 1
    assert service.query("SELECT open_count FROM email_opens WHERE email_id = :id", id=email_id) == [(2,)]
    assert service.query(
        "SELECT position, click_count FROM email_link_clicks WHERE email_id = :id ORDER BY position", id=email_id
    ) == [(1, 2), (2, 1)]

    # The read API's email detail shows the counts.
    detail = await fetch(f"{base}/api/emails/{email_id}", {"Authorization": f"Bearer {API_TOKEN}"})
    counts = json.loads(detail.body)["tracking"]
    assert counts["open_count"] == 2 and counts["first_opened_at"] == opened["payload"]["first_opened_at"]
    assert [(c["link_position"], c["click_count"]) for c in counts["clicks"]] == [(1, 2), (2, 1)]


async def test_without_tracking_emails_go_out_as_written_and_there_are_no_tracking_routes(service: Service):
    worker = await service.up()
    await service.therapists(therapist_created(8))
    await service.known_for_calls(8)  # the therapist agent knows the therapist
    await service.command(CREATE, {"therapist_id": 8, "subject": "Rückfrage", "body_html": BODY})
    [received] = await service.mailbox.wait_for("therapeut8@praxis.example", 1)
    html = _Html(html_part(received))
    assert html.images == [] and INFO in html.links and SECOND in html.links
    token = Tokens(SECRET.encode()).open_token(1)
    assert (await fetch(worker.url(f"/t/o/{token}.gif"))).status == 404


async def test_the_one_click_unsubscribe_link_of_a_contact_email_stays_direct(service: Service):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await service.up(
        COMM_WEB_PORT=str(port),
        COMM_PUBLIC_BASE_URL=base,
        COMM_TRACK_OPENS="true",
        COMM_TRACK_CLICKS="true",
        COMM_TRACKING_SECRET=SECRET,
        COMM_UNSUBSCRIBE_URL=f"{base}/unsubscribe/{{token}}",
        COMM_UNSUBSCRIBE_SECRET="e2e-unsubscribe-secret-0123456789-abcdef",
    )
    await service.therapists(therapist_created(9))
    await service.matches(match_created(91, 9, "2026-01-02T10:00:00+01:00"))
    [received] = await service.mailbox.wait_for("therapeut9@praxis.example", 1)
    html = _Html(html_part(received))
    [unsubscribe] = [href for href in html.links if href.startswith(f"{base}/unsubscribe/")]
    assert not any(href.startswith(f"{base}/t/c/") for href in html.links)  # the template has no other web link
    assert [src for src in html.images if src.startswith(f"{base}/t/o/")]
    assert "/t/" not in unsubscribe
