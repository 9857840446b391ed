"""The API's pages, served by the worker's aiohttp server in the test's process
(a Faust app, not started), over a SQLite database and a table that is a dict;
who owns a therapist and the forwarding to them are fakes here (the real ones:
test_api_routing.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from domain.calls import CallStatus
from domain.email_status import EmailStatus
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import InFlightEmail, TherapistState
from streams.api.auth import Tokens
from streams.api.pages import Api, add_api_pages, serve_api
from streams.api.routing import FORWARDED_BY, Here, Nowhere, OwnerUnreachable, Relayed, There
from streams.bootstrap import Services, build_app
from streams.kafka.app import create_app
from streams.kafka.table import declare_therapist_table
from streams.ops.web import ProbeWeb, Readiness, add_probe_pages
from streams.persistence.db import Database
from streams.persistence.models import Email, EmailBatch, PhoneCall, PhoneCallBatch
from streams.settings import Settings
from tests.fakes import FakeClock

TOKEN = "staff-tool-token-0001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ROUTES = (
    "/api/emails",
    "/api/emails/1",
    "/api/phone-calls",
    "/api/phone-calls/1",
    "/api/therapists/7/communication",
    "/api/anything/else",
)


class FakeOwners:
    def __init__(self) -> None:
        self.owner: Here | There | Nowhere = Here()

    def owner_of(self, therapist_id: int) -> Here | There | Nowhere:
        return self.owner


class FakeForward:
    """Records what would be forwarded, and answers as the owner would."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []
        self.answer: Relayed | Exception = Relayed(200, b'{"therapist_id":7}', {})

    async def __call__(self, owner: There, path_qs: str, authorization: str) -> Relayed:
        self.asked.append((owner.url, path_qs, authorization))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_environ(
        {"COMM_STORE": "memory", "COMM_DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}", "COMM_API_TOKEN": TOKEN}
    )


@pytest.fixture
def database(settings: Settings) -> Any:
    db = Database(settings.database_url.get_secret_value())
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture
def table() -> dict[Any, Any]:
    return {}


@pytest.fixture
def api(settings: Settings, database: Database, table: dict[Any, Any]) -> Api:
    return Api(settings, database, table, FakeClock(NOW), FakeOwners(), FakeForward(), Tokens(settings.api_tokens))


async def serve(app: Any) -> TestClient:
    app.web.init_server()
    client = TestClient(TestServer(app.web.web_app))
    await client.start_server()
    return client


@pytest.fixture
async def client(settings: Settings, api: Api) -> AsyncIterator[TestClient]:
    app = create_app(settings)
    add_probe_pages(app, Readiness(app, lambda: None))
    add_api_pages(app, api)
    client = await serve(app)
    yield client
    await client.close()


async def get(client: TestClient, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    response = await client.get(path, headers=AUTH if headers is None else headers)
    body = await response.read()
    return response.status, json.loads(body) if body else None, response.headers


def add_email(database: Database, email_id: int, created_at: datetime, **fields: Any) -> None:
    values: dict[str, Any] = {
        "email_key": f"key-{email_id}",
        "therapist_id": 7,
        "kind": "contact_request",
        "template": "initial_contact",
        "subject": f"Anfrage {email_id}",
        "body_html": f"<p>Pat{email_id}</p>",
        "body_text": f"Pat{email_id}",
        "recipient_email": "eva@praxis.example",
        "recipient_name": "Dr. Eva Müller",
        "sender_email": "vermittlung@example.org",
        "sender_name": "Vermittlung",
        "placement_request_ids": [email_id * 10],
        "message_id": f"<{email_id}@example.org>",
        "status": EmailStatus.SENT,
        "sent_at": created_at + timedelta(seconds=1),
        "created_at": created_at,
        **fields,
    }
    batches = values.pop("batches", [])

    def insert(session: Any) -> None:
        session.add(Email(id=email_id, batches=batches, **values))

    database.transaction(insert)


# --- access


async def test_every_route_needs_the_token_and_says_nothing_without_it(client: TestClient):
    for path in ROUTES:
        for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}, {"Authorization": TOKEN}):
            status, body, response_headers = await get(client, path, headers)
            assert (status, body) == (401, {"error": "unauthorized"}), (path, headers)
            assert response_headers["WWW-Authenticate"] == "Bearer"
            assert response_headers["Cache-Control"] == "no-store"
    status, body, _ = await get(client, "/api/anything/else")
    assert (status, body) == (404, {"error": "no such route"})


async def test_the_probes_stay_open(client: TestClient):
    status, body, _ = await get(client, "/healthz", {})
    assert (status, body) == (200, {"status": "ok"})


async def test_without_a_token_the_api_is_off_and_the_log_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    settings = Settings.from_environ({"COMM_STORE": "memory", "COMM_DATABASE_URL": f"sqlite:///{tmp_path / 'off.db'}"})
    with caplog.at_level(logging.INFO, logger="streams.api.pages"):
        service_app = build_app(Services.from_settings(settings))
    app = service_app.app
    client = await serve(app)
    try:
        for path in ROUTES:
            assert (await client.get(path, headers=AUTH)).status == 404
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()
    off = [r for r in caplog.records if "API is off" in r.getMessage()]
    assert len(off) == 1
    assert "COMM_API_TOKEN" in off[0].getMessage()


async def test_with_a_token_the_worker_serves_the_api(settings: Settings, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="streams.api.pages"):
        service_app = build_app(Services.from_settings(settings))
    assert isinstance(service_app.app.web, ProbeWeb)
    service_app.app.web.init_server()
    served = {r.canonical for r in service_app.app.web.web_app.router.resources()}
    assert {"/api/emails", "/api/emails/{id}", "/api/therapists/{id}/communication"} <= served
    assert TOKEN not in caplog.text
    assert "API is on at /api (1 token(s))" in caplog.text


def test_the_api_is_not_served_with_the_web_server_off(settings: Settings, database: Database):
    off = settings.model_copy(update={"web_enabled": False})
    app = create_app(off)
    assert serve_api(app, off, database, declare_therapist_table(app, off), FakeClock(NOW)) is None
    assert "web" not in vars(app)


# --- emails


async def test_emails_newest_first_without_bodies_page_by_page(client: TestClient, database: Database):
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for n in range(1, 8):  # emails 6 and 7 share their creation time: the id orders them
        add_email(database, n, start + timedelta(hours=min(n, 6)))
    seen: list[int] = []
    path = "/api/emails?limit=3"
    while True:
        status, body, headers = await get(client, path)
        assert status == 200 and headers["Cache-Control"] == "no-store"
        assert body["limit"] == 3
        seen += [email["id"] for email in body["emails"]]
        if body["next_cursor"] is None:
            break
        path = f"/api/emails?limit=3&cursor={body['next_cursor']}"
    assert seen == [7, 6, 5, 4, 3, 2, 1]
    _, body, _ = await get(client, "/api/emails?limit=1")
    [email] = body["emails"]
    assert "body_html" not in email and "body_text" not in email
    assert email["status"] == "gesendet"
    assert email["created_at"] == "2026-11-01T06:00:00+00:00"
    assert email["placement_request_ids"] == [70]


async def test_emails_are_filtered(client: TestClient, database: Database):
    start = datetime(2026, 11, 1, tzinfo=UTC)
    add_email(database, 1, start, therapist_id=7)
    add_email(database, 2, start + timedelta(days=1), therapist_id=8, status=EmailStatus.FAILED, sent_at=None)
    add_email(database, 3, start + timedelta(days=2), therapist_id=7, kind="confirmation", status=EmailStatus.QUEUED)

    async def ids(query: str) -> list[int]:
        status, body, _ = await get(client, f"/api/emails?{query}")
        assert status == 200, body
        return [email["id"] for email in body["emails"]]

    assert await ids("therapist_id=7") == [3, 1]
    assert await ids("status=fehlgeschlagen") == [2]
    assert await ids("status=fehlgeschlagen,in_warteschlange") == [3, 2]
    assert await ids("kind=confirmation") == [3]
    assert await ids("since=2026-11-02T00:00:00Z") == [3, 2]
    assert await ids("until=2026-11-02T01:00:00%2B01:00") == [1]  # before 00:00 UTC
    assert await ids("since=2026-11-02T00:00:00Z&until=2026-11-03T00:00:00Z&therapist_id=8") == [2]


async def test_one_email_with_its_bodies_status_history_answer_and_batch_entries(
    client: TestClient, database: Database
):
    created = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    answered = EmailBatch(
        placement_request_id=11,
        patient_id=1011,
        position=0,
        registered_at=created - timedelta(days=30),
        patient={"first_name": "Anna"},
        response_outcome="accepted",
        responded_at=created + timedelta(days=1),
    )
    withdrawn = EmailBatch(placement_request_id=12, patient_id=1012, position=1, request_status="withdrawn")
    batches = [answered, withdrawn]
    add_email(
        database,
        5,
        created,
        batches=batches,
        queued_at=created,
        retry_count=1,
        error_message="451 4.3.0 try later",
        response_received=True,
        response_date=created + timedelta(days=1),
        response_content="Nr. 1 gern",
    )
    status, body, headers = await get(client, "/api/emails/5")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert (body["subject"], body["body_text"], body["body_html"]) == ("Anfrage 5", "Pat5", "<p>Pat5</p>")
    assert (body["recipient_email"], body["recipient_name"]) == ("eva@praxis.example", "Dr. Eva Müller")
    assert body["queued_at"] == "2026-11-02T08:00:00+00:00" and body["sent_at"] == "2026-11-02T08:00:01+00:00"
    assert (body["retry_count"], body["error_message"]) == (1, "451 4.3.0 try later")
    assert (body["response_received"], body["response_content"]) == (True, "Nr. 1 gern")
    assert body["response_date"] == "2026-11-03T08:00:00+00:00"
    assert [(b["placement_request_id"], b["response_outcome"], b["request_status"]) for b in body["batches"]] == [
        (11, "accepted", None),
        (12, None, "withdrawn"),
    ]
    assert body["batches"][0]["registered_at"] == "2026-10-03T08:00:00+00:00"
    assert "patient" not in body["batches"][0]  # the details are in the bodies


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/api/emails/999", 404, "no email 999"),
        ("/api/phone-calls/999", 404, "no phone call 999"),
        ("/api/therapists/424242/communication", 404, "no therapist 424242"),
        ("/api/emails/abc", 400, "id: not an id (a whole number above 0)"),
        ("/api/emails?limit=abc", 400, "limit: not a whole number from 1 to 500"),
        ("/api/emails?status=sent", 400, "status: 'sent' is not one of"),
        ("/api/emails?kind=newsletter", 400, "kind: 'newsletter' is not one of"),
        ("/api/emails?since=yesterday", 400, "since: not an RFC 3339 time"),
        ("/api/emails?cursor=nonsense", 400, "cursor: not a cursor of this list"),
        ("/api/emails?therapist=7", 400, "therapist: unknown parameter"),
        ("/api/emails/1?verbose=1", 400, "verbose: unknown parameter (this route takes: none)"),
        ("/api/phone-calls?date=2026-13-01", 400, "date: not a date"),
        ("/api/phone-calls?status=done", 400, "status: 'done' is not one of"),
    ],
)
async def test_errors_are_json_naming_the_problem(client: TestClient, path: str, status: int, error: str):
    answer, body, headers = await get(client, path)
    assert answer == status
    assert body["error"].startswith(error)
    assert headers["Cache-Control"] == "no-store" and headers["Content-Type"].startswith("application/json")


async def test_a_limit_above_500_is_capped(client: TestClient):
    status, body, _ = await get(client, "/api/emails?limit=100000")
    assert (status, body["limit"]) == (200, 500)


async def test_the_database_not_answering_is_a_503_that_names_nothing_of_it(
    settings: Settings, table: dict[Any, Any], caplog: pytest.LogCaptureFixture
):
    down = Database("postgresql+psycopg://commsvc:secret-pw@127.0.0.1:9/commsvc")
    api = Api(settings, down, table, FakeClock(NOW), FakeOwners(), FakeForward(), Tokens([SecretStr(TOKEN)]))
    app = create_app(settings)
    app.web = ProbeWeb(app)
    add_api_pages(app, api)
    client = await serve(app)
    try:
        status, body, headers = await get(client, "/api/emails")
    finally:
        await client.close()
        down.dispose()
    assert (status, body) == (503, {"error": "the database does not answer; try again"})
    assert headers["Retry-After"] == "1"
    assert "secret-pw" not in caplog.text and "127.0.0.1" not in caplog.text


# --- phone calls


def add_call(database: Database, call_id: int, scheduled_at: datetime, requests: list[int], **fields: Any) -> None:
    values: dict[str, Any] = {
        "call_key": f"call-{call_id}",
        "therapist_id": 7,
        "scheduled_at": scheduled_at,
        "duration_minutes": 5,
        "reason": "follow_up",
        "status": CallStatus.SCHEDULED,
        "created_at": scheduled_at - timedelta(days=2),
        **fields,
    }

    def insert(session: Any) -> None:
        batches = [PhoneCallBatch(placement_request_id=r, patient_id=r + 1000, outcome=None) for r in requests]
        session.add(PhoneCall(id=call_id, batches=batches, **values))

    database.transaction(insert)


async def test_phone_calls_of_a_local_day_in_time_order(client: TestClient, database: Database):
    # Sunday 29 March 2026, the spring DST change in Berlin: 23 hours long
    add_call(database, 1, datetime(2026, 3, 28, 22, 59, tzinfo=UTC), [11])  # Saturday 23:59 CET
    add_call(database, 2, datetime(2026, 3, 29, 21, 30, tzinfo=UTC), [12, 13])  # Sunday 23:30 CEST
    add_call(database, 3, datetime(2026, 3, 28, 23, 0, tzinfo=UTC), [14], status=CallStatus.COMPLETED)  # 00:00 CET
    add_call(database, 4, datetime(2026, 3, 29, 22, 0, tzinfo=UTC), [15], therapist_id=8)  # Monday 00:00 CEST
    status, body, _ = await get(client, "/api/phone-calls?date=2026-03-29")
    assert status == 200
    assert [call["id"] for call in body["phone_calls"]] == [3, 2]
    assert body["phone_calls"][1]["placement_request_ids"] == [12, 13]
    _, body, _ = await get(client, "/api/phone-calls?date=2026-03-29&status=scheduled")
    assert [call["id"] for call in body["phone_calls"]] == [2]
    _, body, _ = await get(client, "/api/phone-calls?therapist_id=8")
    assert [call["id"] for call in body["phone_calls"]] == [4]
    _, body, _ = await get(client, "/api/phone-calls?limit=3")
    assert [call["id"] for call in body["phone_calls"]] == [1, 3, 2] and body["next_cursor"]
    _, body, _ = await get(client, f"/api/phone-calls?limit=3&cursor={body['next_cursor']}")
    assert [call["id"] for call in body["phone_calls"]] == [4] and body["next_cursor"] is None


async def test_one_phone_call_with_the_requests_discussed_and_their_outcomes(client: TestClient, database: Database):
    at = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    add_call(database, 9, at, [11, 12], status=CallStatus.COMPLETED, outcome_notes="ruft zurück", completed_at=at)

    def outcomes(session: Any) -> None:
        call = session.get(PhoneCall, 9)
        call.batches[0].outcome, call.batches[0].notes = "accepted", "ab Januar"

    database.transaction(outcomes)
    status, body, _ = await get(client, "/api/phone-calls/9")
    assert status == 200
    assert (body["status"], body["outcome_notes"], body["scheduled_at"]) == (
        "completed",
        "ruft zurück",
        "2026-11-25T09:00:00+00:00",
    )
    assert body["requests"] == [
        {"placement_request_id": 11, "patient_id": 1011, "outcome": "accepted", "notes": "ab Januar"},
        {"placement_request_id": 12, "patient_id": 1012, "outcome": None, "notes": None},
    ]


# --- one therapist


def therapist_state() -> TherapistState:
    state = TherapistState(7, profile=TherapistProfile(7, "eva@praxis.example", "Eva", "Müller"))
    state.pending[13] = PlacementRequest(13, 1013, datetime(2026, 2, 1, tzinfo=UTC))
    state.in_flight["key-5"] = InFlightEmail("key-5", "contact_request", (11, 12), NOW - timedelta(hours=1))
    return state


async def test_the_therapist_view_from_the_table_and_the_database(
    client: TestClient, database: Database, table: dict[Any, Any]
):
    table[7] = therapist_state()
    add_email(database, 5, NOW - timedelta(hours=1), status=EmailStatus.QUEUED, sent_at=None, queued_at=NOW)
    add_email(database, 4, NOW - timedelta(days=9))
    add_call(database, 9, NOW + timedelta(days=1), [10])
    status, body, headers = await get(client, "/api/therapists/7/communication")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert [r["placement_request_id"] for r in body["waiting_requests"]] == [13]
    assert [(e["email_id"], e["status"]) for e in body["emails_in_flight"]] == [(5, "in_warteschlange")]
    assert body["last_contact_email"]["email_id"] == 4
    assert body["weekly_rule"]["held_by_email_in_flight"] is True
    assert [c["id"] for c in body["upcoming_calls"]] == [9]


async def test_the_therapist_view_asked_elsewhere_is_the_owner_s_answer(client: TestClient, api: Api):
    api.owners.owner = There("http://10.0.3.8:6066")  # type: ignore[attr-defined]
    forward: FakeForward = api.forward  # type: ignore[assignment]
    forward.answer = Relayed(200, b'{"therapist_id":7,"waiting_requests":[]}', {})
    status, body, headers = await get(client, "/api/therapists/7/communication?")
    assert (status, body) == (200, {"therapist_id": 7, "waiting_requests": []})
    assert headers["Cache-Control"] == "no-store"
    # the caller's own token goes with it, to the same path
    assert forward.asked == [("http://10.0.3.8:6066", "/api/therapists/7/communication", f"Bearer {TOKEN}")]
    forward.answer = Relayed(401, b'{"error":"unauthorized"}', {"WWW-Authenticate": "Bearer"})
    status, body, headers = await get(client, "/api/therapists/7/communication")
    assert (status, headers["WWW-Authenticate"]) == (401, "Bearer")


async def test_a_forwarded_request_is_never_forwarded_again(client: TestClient, api: Api):
    api.owners.owner = There("http://10.0.3.8:6066")  # type: ignore[attr-defined]
    status, body, headers = await get(client, "/api/therapists/7/communication", {**AUTH, FORWARDED_BY: "http://x:1"})
    assert status == 503 and headers["Retry-After"] == "1"
    assert "moving between workers" in body["error"]
    assert api.forward.asked == []  # type: ignore[attr-defined]


async def test_while_no_worker_can_answer_the_therapist_view_is_a_503(client: TestClient, api: Api):
    api.owners.owner = Nowhere("the therapist table is being recovered")  # type: ignore[attr-defined]
    status, body, headers = await get(client, "/api/therapists/7/communication")
    assert (status, body["error"]) == (503, "the therapist table is being recovered; try again")
    assert headers["Retry-After"] == "1"
    api.owners.owner = There("http://10.0.3.8:6066")  # type: ignore[attr-defined]
    api.forward.answer = OwnerUnreachable()  # type: ignore[attr-defined]
    status, body, _ = await get(client, "/api/therapists/7/communication")
    assert (status, body["error"]) == (503, "the worker that holds the therapist's state does not answer; try again")


async def test_a_failure_is_a_500_logged_by_type_only(client: TestClient, api: Api, caplog: pytest.LogCaptureFixture):
    class Broken(dict[Any, Any]):
        def get(self, key: Any, default: Any = None) -> Any:
            raise RuntimeError("Anna Beispiel, F32.1")

    api.table = Broken()
    status, body, headers = await get(client, "/api/therapists/7/communication")
    assert (status, body) == (500, {"error": "internal error"})
    assert headers["Cache-Control"] == "no-store"
    assert "api: cannot answer a request: RuntimeError" in caplog.text
    assert "Anna" not in caplog.text and "F32.1" not in caplog.text
