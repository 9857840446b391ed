"""The tracking image and the link redirect on the worker's web server (opt-in:
COMM_TRACK_OPENS, COMM_TRACK_CLICKS; see streams/delivery/tracking.py and
docs/deliverability.md).

    GET /t/o/{token}.gif   the 1x1 image; counts an open (COMM_TRACK_OPENS)
    GET /t/c/{token}       302 to the link of that position in the stored email;
                           counts a click (COMM_TRACK_CLICKS)

A token that does not check out, an email that does not exist (any more) and a
position beyond the email's links all answer 404, the same short body: nothing
says which. The redirect's target is read from the stored email, never from the
request, so it can only be a link that was in that email (no open redirect).
Neither answer may be cached (``Cache-Control: no-store``): a cached image would
count no more opens. The redirect sends no referrer on (``Referrer-Policy``), so
the site linked to does not learn the tracking URL.

The routes stay while COMM_PUBLIC_BASE_URL and COMM_TRACKING_SECRET are set, also
with tracking switched off again: links of emails sent meanwhile keep working, and
nothing is counted. The database is written off the event loop, at most
CONCURRENCY fetches at once. The log names ids only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import faust
from aiohttp.web import Response as AiohttpResponse
from faust.web import Request, Response, View
from sqlalchemy.exc import SQLAlchemyError
from yarl import URL

from streams.delivery.tracking import CLICK_PATH, OPEN_PATH, PIXEL, PIXEL_SUFFIX, Tracking
from streams.delivery.wakeups import Wakeups
from streams.ops.logs import ThrottledWarning, log_failure
from streams.persistence import tracking as recording
from streams.persistence.db import Database
from streams.settings import Settings

log = logging.getLogger(__name__)

CONCURRENCY = 2
NOT_CACHED = {"Cache-Control": "no-store, no-cache, max-age=0, private", "Pragma": "no-cache"}
RETRY_AFTER = "1"  # seconds, for a 503


@dataclass
class TrackingPages:
    tracking: Tracking
    database: Database
    events: str  # the topic of communication-events
    wakeups: Wakeups
    clock: Callable[[], datetime]
    _writing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONCURRENCY))
    _warning: ThrottledWarning = field(default_factory=lambda: ThrottledWarning(log))

    async def pixel(self, view: View, request: Request, token: str) -> Response:
        email_id = self.tracking.tokens.opened(token.removesuffix(PIXEL_SUFFIX))
        if not token.endswith(PIXEL_SUFFIX) or email_id is None:
            return _not_found()
        if not self.tracking.opens:
            return _image()
        try:
            async with self._writing:
                recorded = await self.database.run(recording.record_open, email_id, self.clock(), self.events)
        except SQLAlchemyError as exc:
            # The image all the same: the email must look as it should; the open is lost.
            self._warning("tracking: an open could not be recorded (%s)", type(exc).__name__)
            return _image()
        if recorded is None:
            return _not_found()
        if recorded.first:
            self.wakeups.relay.set()
            log.info("email %s opened for the first time", email_id)
        return _image()

    async def click(self, view: View, request: Request, token: str) -> Response:
        found = self.tracking.tokens.clicked(token)
        if found is None:
            return _not_found()
        email_id, position = found
        try:
            async with self._writing:
                followed = await self.database.run(
                    recording.follow_link,
                    email_id,
                    position,
                    self.clock(),
                    self.events,
                    self.tracking.link,
                    self.tracking.clicks,
                )
        except SQLAlchemyError as exc:
            self._warning("tracking: a link could not be looked up (%s)", type(exc).__name__)
            return _plain(503, "Vorübergehend nicht erreichbar. Bitte gleich noch einmal versuchen.", RETRY_AFTER)
        if followed is None:
            return _not_found()
        if followed.first:
            self.wakeups.relay.set()
            log.info("link %s of email %s followed for the first time", position, email_id)
        return _redirect(followed.url)


def _image() -> Response:
    return cast(Response, AiohttpResponse(status=200, body=PIXEL, content_type="image/gif", headers=NOT_CACHED))


def _redirect(url: str) -> Response:
    # A header is ASCII: a link with other characters goes percent-encoded (its
    # host in IDNA form), which is the same address.
    location = url if url.isascii() else str(URL(url))
    headers = {**NOT_CACHED, "Location": location, "Referrer-Policy": "no-referrer"}
    return cast(Response, AiohttpResponse(status=302, headers=headers))


def _not_found() -> Response:
    return _plain(404, "Nicht gefunden.")


def _plain(status: int, text: str, retry_after: str | None = None) -> Response:
    headers = dict(NOT_CACHED)
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    response = AiohttpResponse(status=status, text=text, content_type="text/plain", charset="utf-8", headers=headers)
    return cast(Response, response)


def serve_tracking(
    app: faust.App,
    settings: Settings,
    database: Database,
    events: str,
    wakeups: Wakeups,
    clock: Callable[[], datetime],
) -> TrackingPages | None:
    """The image and redirect routes, when the web server is on and a public URL and
    a tracking secret are set (after the probes, which choose the web driver)."""
    tracking = Tracking.from_settings(settings)
    if tracking is None or not settings.web_enabled:
        if settings.tracking:
            log.info("tracking is on but COMM_WEB_ENABLED is false: another worker must serve its links")
        return None
    pages = TrackingPages(tracking, database, events, wakeups, clock)
    _add(app, OPEN_PATH, "tracking-open", pages.pixel)
    _add(app, CLICK_PATH, "tracking-click", pages.click)
    log.info(
        "tracking: opens %s, clicks %s, at %s",
        "on" if tracking.opens else "off",
        "on" if tracking.clicks else "off",
        tracking.base_url,
    )
    return pages


Handler = Callable[[View, Request, str], Awaitable[Response]]


def _add(app: faust.App, prefix: str, name: str, handler: Handler) -> None:
    async def page(view: View, request: Request, token: str) -> Response:
        try:
            return await handler(view, request, token)
        except Exception as exc:
            log_failure(log, "tracking: cannot answer a request", exc)
            return _plain(500, "Interner Fehler.")

    page.__name__ = name.replace("-", "_")
    app.page(prefix + "{token}", name=name)(page)
