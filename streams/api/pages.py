"""The API's routes on the worker's web server, and what each answers.

    GET /api/emails?therapist_id=&status=&kind=&since=&until=&limit=&cursor=
    GET /api/emails/{id}
    GET /api/phone-calls?therapist_id=&date=&status=&limit=&cursor=
    GET /api/phone-calls/{id}
    GET /api/therapists/{id}/communication

Every route, and any other path under ``/api/``, first checks the bearer token
(streams/api/auth.py): 401 with ``WWW-Authenticate: Bearer`` and nothing else said.
Without any token configured the routes are not added at all (``/api`` answers
404), and the log says so once. Every answer carries ``Cache-Control: no-store``
(email bodies and waiting requests are patient data) and is JSON; an error is
``{"error": "…"}``: 400 naming the parameter, 404 for an unknown id, 503 while the
database or the therapist's worker cannot answer (with ``Retry-After``).

The database is read off the event loop, and the JSON made there too; at most
READ_CONCURRENCY reads run at once, so a burst of requests cannot take the threads
the agents store through. Nothing of a request or an answer is logged but ids.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo
from typing import Any, Protocol, TypeVar, cast

import faust
from aiohttp.web import Response as AiohttpResponse
from faust.web import Request, Response, View
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from domain.calls import CallStatus
from domain.decisions import CONFIRMATION, CONTACT_REQUEST, FOLLOW_UP, MANUAL
from domain.email_status import EmailStatus
from domain.therapist_state import TherapistState
from streams.api import therapist_view
from streams.api.auth import Tokens
from streams.api.documents import dumps
from streams.api.params import BadParameter, Params, encode_cursor, positive_id
from streams.api.routing import FORWARDED_BY, Forwarder, Here, Nowhere, Ownership, OwnerUnreachable, Relayed, There
from streams.ops.logs import ThrottledWarning, log_failure
from streams.persistence import call_reads, reads
from streams.persistence.db import Database
from streams.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_CONCURRENCY = 2
RETRY_AFTER = "1"  # seconds, for a 503
NO_STORE = {"Cache-Control": "no-store"}
KINDS = (CONTACT_REQUEST, FOLLOW_UP, CONFIRMATION, MANUAL)
EMAIL_STATUSES = tuple(s.value for s in EmailStatus)
CALL_STATUSES = tuple(s.value for s in CallStatus)
EMAILS_CURSOR = "emails"
CALLS_CURSOR = "phone-calls"


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class Unavailable(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(503, message, {"Retry-After": RETRY_AFTER})


class Table(Protocol):
    def get(self, key: Any, default: Any = None) -> Any: ...


class Forward(Protocol):
    async def __call__(self, owner: There, path_qs: str, authorization: str) -> Relayed: ...


class Owners(Protocol):
    def owner_of(self, therapist_id: int) -> Here | There | Nowhere: ...


Handler = Callable[..., Awaitable[Any]]


@dataclass
class Api:
    """What the routes answer; ``page`` wraps each in the token check."""

    settings: Settings
    database: Database
    table: Table
    clock: Callable[[], datetime]
    owners: Owners
    forward: Forward
    tokens: Tokens
    _reading: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(READ_CONCURRENCY))
    _warning: ThrottledWarning = field(default_factory=lambda: ThrottledWarning(log))

    # --- the routes; each returns the body of a 200, or a Response --------------

    async def emails(self, request: Request) -> bytes:
        params = Params(request.query, ("therapist_id", "status", "kind", "since", "until", "limit", "cursor"))
        query = reads.EmailQuery(
            therapist_id=params.integer("therapist_id"),
            statuses=tuple(EmailStatus(s) for s in params.choices("status", EMAIL_STATUSES)),
            kinds=params.choices("kind", KINDS),
            since=params.time("since"),
            until=params.time("until"),
            limit=params.limit(),
            after=params.cursor(EMAILS_CURSOR),
        )

        def page(session: Session) -> bytes:
            found = reads.list_emails(session, query)
            cursor = None if found.next_after is None else encode_cursor(EMAILS_CURSOR, found.next_after)
            return dumps({"emails": found.emails, "next_cursor": cursor, "limit": query.limit})

        return await self._read(page)

    async def email(self, request: Request, id: str) -> bytes:
        Params(request.query, ())
        email_id = positive_id("id", id)

        def detail(session: Session) -> bytes | None:
            found = reads.email_detail(session, email_id)
            return None if found is None else dumps(found)

        return _found(await self._read(detail), f"no email {email_id}")

    async def phone_calls(self, request: Request) -> bytes:
        params = Params(request.query, ("therapist_id", "date", "status", "limit", "cursor"))
        day = params.day("date")
        start = end = None
        if day is not None:  # the day in COMM_TIMEZONE, whatever its length (DST)
            zone: tzinfo = self.settings.timezone
            start = datetime.combine(day, time(0), zone)
            end = datetime.combine(day + timedelta(days=1), time(0), zone)
        query = call_reads.CallQuery(
            therapist_id=params.integer("therapist_id"),
            statuses=tuple(CallStatus(s) for s in params.choices("status", CALL_STATUSES)),
            scheduled_from=start,
            scheduled_before=end,
            limit=params.limit(),
            after=params.cursor(CALLS_CURSOR),
        )

        def page(session: Session) -> bytes:
            found = call_reads.list_calls(session, query)
            cursor = None if found.next_after is None else encode_cursor(CALLS_CURSOR, found.next_after)
            return dumps({"phone_calls": found.phone_calls, "next_cursor": cursor, "limit": query.limit})

        return await self._read(page)

    async def phone_call(self, request: Request, id: str) -> bytes:
        Params(request.query, ())
        call_id = positive_id("id", id)

        def detail(session: Session) -> bytes | None:
            found = call_reads.call_detail(session, call_id)
            return None if found is None else dumps(found)

        return _found(await self._read(detail), f"no phone call {call_id}")

    async def therapist(self, request: Request, id: str) -> bytes | Response:
        Params(request.query, ())
        therapist_id = positive_id("id", id)
        owner = self.owners.owner_of(therapist_id)
        forwarded = FORWARDED_BY in request.headers
        match owner:
            case There() if not forwarded:
                return await self._forward(owner, request)
            case There():
                # Asked by a worker that took us for the owner: not (or no longer) so.
                raise Unavailable("the therapist's partition is moving between workers; try again")
            case Nowhere(reason=reason):
                raise Unavailable(f"{reason}; try again")
        stored = self.table.get(therapist_id)
        if not isinstance(stored, TherapistState):
            raise ApiError(404, f"no therapist {therapist_id}")
        now = self.clock()
        keys = tuple(stored.in_flight)
        settings = self.settings

        def picture(session: Session) -> bytes:
            records = call_reads.therapist_records(session, therapist_id, keys)
            view = therapist_view.communication(
                stored, records, now, settings.contact_interval, settings.batch_schedule
            )
            return dumps(view)

        return await self._read(picture)

    async def unknown(self, request: Request, tail: str) -> bytes:
        raise ApiError(404, "no such route")

    # --- helpers --------------------------------------------------------------------

    async def _read(self, work: Callable[[Session], T]) -> T:
        async with self._reading:
            try:
                return await self.database.run(work)
            except SQLAlchemyError as exc:
                self._warning("api: the database did not answer (%s)", type(exc).__name__)
                raise Unavailable("the database does not answer; try again") from None

    async def _forward(self, owner: There, request: Request) -> Response:
        try:
            relayed = await self.forward(owner, str(request.rel_url), request.headers.get("Authorization", ""))
        except OwnerUnreachable:
            raise Unavailable("the worker that holds the therapist's state does not answer; try again") from None
        return _response(relayed.status, relayed.body, relayed.headers)

    def page(self, handler: Handler) -> Callable[..., Awaitable[Response]]:
        """``handler`` behind the token check, its answer or error as JSON."""
        tokens = self.tokens

        async def page(view: View, request: Request, **match: str) -> Response:
            if not tokens.accepts(request.headers.get("Authorization")):
                return _response(401, b'{"error":"unauthorized"}', {"WWW-Authenticate": "Bearer"})
            try:
                answer = await handler(request, **match)
            except BadParameter as exc:
                return _error(400, str(exc))
            except ApiError as exc:
                return _error(exc.status, exc.message, exc.headers)
            except Exception as exc:
                log_failure(log, "api: cannot answer a request", exc)
                return _error(500, "internal error")
            return answer if not isinstance(answer, bytes) else _response(200, answer)

        page.__name__ = handler.__name__
        return page


def _found(body: bytes | None, missing: str) -> bytes:
    if body is None:
        raise ApiError(404, missing)
    return body


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return _response(status, dumps({"error": message}), headers)


def _response(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> Response:
    response = AiohttpResponse(
        status=status,
        body=body,
        content_type="application/json",
        charset="utf-8",
        headers={**NO_STORE, **(headers or {})},
    )
    return cast(Response, response)


ROUTES = (
    ("/api/emails", "emails"),
    ("/api/emails/{id}", "email"),
    ("/api/phone-calls", "phone_calls"),
    ("/api/phone-calls/{id}", "phone_call"),
    ("/api/therapists/{id}/communication", "therapist"),
    ("/api/{tail:.*}", "unknown"),  # last: anything else under /api, after the token check
)


def serve_api(
    app: faust.App, settings: Settings, database: Database, table: faust.Table, clock: Callable[[], datetime]
) -> Api | None:
    """The API's routes on the web server (after the probes, which choose its
    driver), if it is on and a token is configured."""
    if not settings.web_enabled:
        return None
    tokens = Tokens(settings.api_tokens)
    if not tokens:
        log.info("the read-only API is off (/api answers 404): neither COMM_API_TOKEN nor COMM_API_TOKENS_FILE is set")
        return None
    api = Api(
        settings,
        database,
        table,
        clock,
        owners=Ownership(app, table, settings.partitions),
        forward=Forwarder(app),
        tokens=tokens,
    )
    add_api_pages(app, api)
    log.info(
        "the read-only API is on at /api (%d token(s)); the other workers forward to this one at %s",
        len(tokens),
        settings.web_url,
    )
    return api


def add_api_pages(app: faust.App, api: Api) -> None:
    for path, name in ROUTES:
        app.page(path, name=f"api-{name}")(api.page(getattr(api, name)))
