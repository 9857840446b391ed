"""One-click opt-out (RFC 8058) on the worker's web server, with COMM_UNSUBSCRIBE_URL set:

    GET  /unsubscribe/{token}   a short German page with a button; changes nothing
    POST /unsubscribe/{token}   switches the therapist to phone-only contact

GET changes nothing because mail security scanners and link previews fetch every
link in an email. POST is the mailbox provider's one-click request (body
``List-Unsubscribe=One-Click``, from the ``List-Unsubscribe-Post`` header) or the
page's button, which posts the same; any POST body is taken, since the token alone
decides. Both check the token against the therapist's address in the directory now
(streams.email.unsubscribe): a forged token, one for another therapist, one made for
an address the therapist no longer has, or a deleted therapist all get 404 and
nothing is published.

A valid POST publishes ``SetContactPreference(phone_only, one_click)`` to the
therapist inbox, keyed by therapist id, waits until the broker has it, and answers
with a confirmation page. The therapist agent applies it only while the address is
still the one the link was made for, and publishes ``contact_preference_changed``
only when the channel changes: a second click changes nothing. Every POST has an
event id of its own, not one derived from the token: after staff have switched the
therapist back to email, the same link must work again, and a repeated event id
would be dropped as a replay.

There is no CSRF token (a mail client's one-click POST cannot carry one): the token
in the URL is the capability, made with a secret, for one therapist and address.
Answers are never cached, leak no Referer, are not indexed, and may not be framed.
The log names therapist ids only, never a token or an address.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import faust
from aiohttp.web import Response as AiohttpResponse
from faust.web import Request, Response, View
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from streams.email.rendering import packaged_templates
from streams.email.unsubscribe import OptOut, therapist_of
from streams.kafka.publishing import PublishRefused, until_published
from streams.messages import inbox
from streams.messages.codec import encode
from streams.ops.logs import ThrottledWarning, log_failure
from streams.persistence.db import Database
from streams.persistence.models import TherapistDirectoryEntry
from streams.settings import Settings

log = logging.getLogger(__name__)

PATH = "/unsubscribe/{token}"
TEMPLATE = "unsubscribe.html"
READ_CONCURRENCY = 2  # database reads at once (a burst must not take the agents' threads)
PUBLISH_TIMEOUT = 10.0  # seconds the broker has to take the opt-out, else 503
RETRY_AFTER = "60"
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
TITLES = {
    "confirm": "Anfragen künftig per Telefon?",
    "done": "Sie sind abgemeldet",
    "invalid": "Dieser Link ist nicht gültig",
    "unavailable": "Gerade nicht möglich",
}
STATUS = {"confirm": 200, "done": 200, "invalid": 404, "unavailable": 503}

Publish = Callable[[inbox.SetContactPreference], Awaitable[None]]


class _Unavailable(Exception):
    pass


def current_address(session: Session, therapist_id: int) -> str | None:
    """The therapist's address in the directory now; None for an unknown or deleted one."""
    entry = session.get(TherapistDirectoryEntry, therapist_id)
    if entry is None or entry.deleted or not entry.email:
        return None
    return entry.email


class PageRenderer:
    """The page, autoescaped; ``COMM_TEMPLATE_DIR`` may hold its own ``unsubscribe.html``."""

    def __init__(self, sender_name: str, sender_email: str, override_dir: Path | None = None) -> None:
        search = [str(p) for p in (override_dir, packaged_templates()) if p is not None]
        environment = Environment(loader=FileSystemLoader(search), autoescape=True, undefined=StrictUndefined)
        self.template = environment.get_template(TEMPLATE)
        self.sender = {"sender_name": sender_name, "sender_email": sender_email}

    def __call__(self, page: str) -> bytes:
        return self.template.render(page=page, title=TITLES[page], **self.sender).encode("utf-8")


@dataclass
class OptOutPages:
    opt_out: OptOut
    database: Database
    publish: Publish
    render: Callable[[str], bytes]
    _reading: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(READ_CONCURRENCY))
    _warning: ThrottledWarning = field(default_factory=lambda: ThrottledWarning(log))

    async def show(self, token: str) -> Response:
        """GET: the button, for a valid link; nothing changes."""
        try:
            found = await self._verified(token)
        except _Unavailable:
            return self._page("unavailable")
        return self._page("confirm" if found is not None else "invalid")

    async def confirm(self, token: str) -> Response:
        """POST: switch the therapist to phone-only contact."""
        try:
            found = await self._verified(token)
            if found is None:
                return self._page("invalid")
            therapist_id, address = found
            message = inbox.SetContactPreference(
                f"one-click-{uuid.uuid4().hex}", therapist_id, "phone_only", "one_click", None, address
            )
            await self._publish(message)
        except _Unavailable:
            return self._page("unavailable")
        log.info("one-click opt-out: therapist %s asked for phone-only contact (%s)", therapist_id, message.event_id)
        return self._page("done")

    async def _verified(self, token: str) -> tuple[int, str] | None:
        """The therapist and their current address, if ``token`` was made for them."""
        therapist_id = therapist_of(token)
        if therapist_id is None:
            return None
        async with self._reading:
            try:
                address = await self.database.run(current_address, therapist_id)
            except SQLAlchemyError as exc:
                self._warning("one-click opt-out: the database did not answer (%s)", type(exc).__name__)
                raise _Unavailable from None
        if address is None or not self.opt_out.verify(token, address):
            log.info("one-click opt-out: a link that is not (or no longer) valid for therapist %s", therapist_id)
            return None
        return therapist_id, address

    async def _publish(self, message: inbox.SetContactPreference) -> None:
        try:
            await asyncio.wait_for(self.publish(message), PUBLISH_TIMEOUT)
        except (TimeoutError, PublishRefused) as exc:
            self._warning("one-click opt-out: the broker did not take it (%s)", type(exc).__name__)
            raise _Unavailable from None
        except Exception as exc:
            log_failure(log, "one-click opt-out: cannot publish", exc)
            raise _Unavailable from None

    def _page(self, page: str) -> Response:
        headers = dict(HEADERS)
        if page == "unavailable":
            headers["Retry-After"] = RETRY_AFTER
        response = AiohttpResponse(
            status=STATUS[page], body=self.render(page), content_type="text/html", charset="utf-8", headers=headers
        )
        return cast(Response, response)


def inbox_publisher(topic: faust.TopicT, warning: Callable[..., None]) -> Publish:
    """Publish to the therapist inbox, keyed by therapist id, until the broker has it."""

    async def publish(message: inbox.SetContactPreference) -> None:
        async def send() -> Any:
            sent = await topic.send(key=str(message.therapist_id).encode(), value=encode(message))
            return await sent  # the broker's acknowledgement

        await until_published(send, warning)

    return publish


def serve_unsubscribe(
    app: faust.App, settings: Settings, database: Database, inbox_topic: faust.TopicT
) -> OptOutPages | None:
    """The opt-out pages on the web server, with COMM_UNSUBSCRIBE_URL set (after the
    probes, which choose the web driver)."""
    opt_out = OptOut.from_settings(settings)
    if opt_out is None or not settings.web_enabled:
        return None
    render = PageRenderer(settings.sender_name, settings.sender_email, settings.template_dir)
    pages = OptOutPages(opt_out, database, inbox_publisher(inbox_topic, ThrottledWarning(log)), render)
    add_unsubscribe_pages(app, pages)
    log.info("one-click opt-out is on at /unsubscribe/{token}")
    return pages


def add_unsubscribe_pages(app: faust.App, pages: OptOutPages) -> None:
    class Unsubscribe(View):  # type: ignore[misc]
        async def get(self, request: Request, token: str) -> Response:
            return await pages.show(token)

        async def post(self, request: Request, token: str) -> Response:
            return await pages.confirm(token)

    app.page(PATH, name="unsubscribe")(Unsubscribe)
