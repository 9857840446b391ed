"""The one-click opt-out pages, served by the worker's aiohttp server in the test's
process (a Faust app, not started) over a SQLite directory; what would be published
to the therapist inbox is recorded by a fake (the real path: tests/e2e/test_unsubscribe.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.exc import OperationalError

from streams.api import unsubscribe
from streams.api.unsubscribe import OptOutPages, PageRenderer, add_unsubscribe_pages
from streams.bootstrap import Services, build_app
from streams.email.unsubscribe import OptOut, make_token
from streams.kafka.app import create_app
from streams.messages.inbox import SetContactPreference
from streams.ops.web import Readiness, add_probe_pages
from streams.persistence.db import Database
from streams.persistence.models import TherapistDirectoryEntry
from streams.settings import Settings

SECRET = "u" * 32
URL = "https://vermittlung.example.org/unsubscribe/{token}"
ADDRESS = "Eva.Mueller@praxis.example"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


class FakePublish:
    """Records what would go to the inbox; ``fail`` makes the broker not take it."""

    def __init__(self) -> None:
        self.sent: list[SetContactPreference] = []
        self.fail: BaseException | None = None
        self.hang = False

    async def __call__(self, message: SetContactPreference) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail
        self.sent.append(message)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_environ(
        {
            "COMM_STORE": "memory",
            "COMM_DATABASE_URL": f"sqlite:///{tmp_path / 'optout.db'}",
            "COMM_UNSUBSCRIBE_URL": URL,
            "COMM_UNSUBSCRIBE_SECRET": SECRET,
            "COMM_SENDER_EMAIL": "vermittlung@therapieplatz.example",
        }
    )


@pytest.fixture
def database(settings: Settings) -> Any:
    db = Database(settings.database_url.get_secret_value())
    db.migrate()
    directory(db, 7, ADDRESS)
    directory(db, 8, "praxis.acht@praxis.example")
    directory(db, 9, "weg@praxis.example", deleted=True)
    yield db
    db.dispose()


def directory(database: Database, therapist_id: int, email: str | None, deleted: bool = False) -> None:
    def write(session: Any) -> None:
        entry = session.get(TherapistDirectoryEntry, therapist_id) or TherapistDirectoryEntry(
            therapist_id=therapist_id, availability={}, contact_blocked=False
        )
        entry.email, entry.deleted = email, deleted
        session.add(entry)

    database.transaction(write)


@pytest.fixture
def publish() -> FakePublish:
    return FakePublish()


@pytest.fixture
def pages(settings: Settings, database: Database, publish: FakePublish) -> OptOutPages:
    opt_out = OptOut.from_settings(settings)
    assert opt_out is not None
    render = PageRenderer(settings.sender_name, settings.sender_email)
    return OptOutPages(opt_out, database, publish, render)


async def serve(app: Any) -> TestClient:
    app.web.init_server()
    client = TestClient(TestServer(app.web.web_app))
    await client.start_server()
    return client


@pytest.fixture
async def client(settings: Settings, pages: OptOutPages) -> AsyncIterator[TestClient]:
    app = create_app(settings)
    add_probe_pages(app, Readiness(app, lambda: None))
    add_unsubscribe_pages(app, pages)
    client = await serve(app)
    yield client
    await client.close()


def path(therapist_id: int = 7, address: str = ADDRESS, secret: str = SECRET) -> str:
    return f"/unsubscribe/{make_token(secret.encode(), therapist_id, address)}"


# --- GET changes nothing


async def test_get_shows_a_german_page_with_a_button_and_publishes_nothing(client: TestClient, publish: FakePublish):
    response = await client.get(path())
    page = await response.text()

    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<html lang="de">' in page and 'name="viewport"' in page
    assert '<form method="post">' in page and '<button type="submit">' in page
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page  # the form posts RFC 8058's body
    assert "telefonischen Sprechzeiten" in page and "weiterhin per E-Mail" in page
    assert "<script" not in page and "http" not in page  # nothing fetched, no link away
    assert ADDRESS.lower() not in page.lower() and "praxis" not in page  # whoever holds the link learns nothing
    assert publish.sent == []
    assert (await client.head(path())).status == 200
    assert publish.sent == []


async def test_answers_are_not_cached_indexed_framed_or_referred(client: TestClient):
    for response in (await client.get(path()), await client.post(path(), data=ONE_CLICK), await client.get(path(8))):
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Robots-Tag"] == "noindex, nofollow"
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "script" not in policy


# --- POST switches to phone-only


async def test_a_one_click_post_asks_for_phone_only_contact(client: TestClient, publish: FakePublish):
    response = await client.post(path(), data=ONE_CLICK)
    page = await response.text()

    assert response.status == 200 and "Sie sind abgemeldet" in page
    [sent] = publish.sent
    assert (sent.therapist_id, sent.channel, sent.source, sent.comment) == (7, "phone_only", "one_click", None)
    assert sent.address == ADDRESS  # the address the link is valid for, as the directory holds it
    assert sent.event_id.startswith("one-click-")


async def test_the_form_button_and_a_bare_post_count_as_well(client: TestClient, publish: FakePublish):
    assert (await client.post(path(), data={"List-Unsubscribe": "One-Click"})).status == 200
    assert (await client.post(path())).status == 200

    assert [m.therapist_id for m in publish.sent] == [7, 7]


async def test_every_post_has_an_event_id_of_its_own(client: TestClient, publish: FakePublish):
    """A second click is a new request: the therapist agent changes nothing when the
    channel is phone-only already, and switches again after staff set it back to
    email (a repeated event id would be dropped as a replay)."""
    for _ in range(2):
        assert (await client.post(path(), data=ONE_CLICK)).status == 200

    assert len({m.event_id for m in publish.sent}) == 2


async def test_the_case_of_the_address_does_not_matter(client: TestClient, publish: FakePublish):
    assert (await client.post(path(address="eva.mueller@PRAXIS.EXAMPLE"), data=ONE_CLICK)).status == 200
    assert len(publish.sent) == 1


# --- invalid links: 404, nothing published


@pytest.mark.parametrize(
    "target",
    [
        path(secret="v" * 32),  # forged: another secret
        path(7, "eva.alt@praxis.example"),  # made for an address the therapist no longer has
        "/unsubscribe/8." + path().split(".")[1],  # therapist 7's MAC under therapist 8's id
        path(9, "weg@praxis.example"),  # a deleted therapist
        path(10, "niemand@praxis.example"),  # not in the directory
        "/unsubscribe/7.nonsense",
        "/unsubscribe/" + "9" * 30 + ".x",
    ],
)
async def test_an_invalid_link_gets_404_and_publishes_nothing(client: TestClient, publish: FakePublish, target: str):
    for response in (await client.get(target), await client.post(target, data=ONE_CLICK)):
        page = await response.text()
        assert response.status == 404
        assert "nicht gültig" in page and "<form" not in page
    assert publish.sent == []


async def test_a_link_stops_working_when_the_address_changes(
    client: TestClient, database: Database, publish: FakePublish
):
    old = path()
    directory(database, 7, "eva.neu@praxis.example")

    assert (await client.post(old, data=ONE_CLICK)).status == 404
    assert (await client.post(path(7, "eva.neu@praxis.example"), data=ONE_CLICK)).status == 200
    assert [m.address for m in publish.sent] == ["eva.neu@praxis.example"]


# --- trouble: 503, try again


async def test_a_broker_that_does_not_take_it_gets_503_with_the_button_again(
    client: TestClient, publish: FakePublish, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(unsubscribe, "PUBLISH_TIMEOUT", 0.05)
    publish.hang = True

    response = await client.post(path(), data=ONE_CLICK)
    page = await response.text()

    assert response.status == 503 and response.headers["Retry-After"]
    assert "noch einmal" in page and '<form method="post">' in page
    assert publish.sent == []


async def test_an_unexpected_publishing_error_gets_503(client: TestClient, publish: FakePublish):
    publish.fail = RuntimeError("boom")

    assert (await client.post(path(), data=ONE_CLICK)).status == 503


async def test_a_database_that_does_not_answer_gets_503(
    client: TestClient, database: Database, publish: FakePublish, monkeypatch: pytest.MonkeyPatch
):
    async def down(*args: Any) -> Any:
        raise OperationalError("SELECT", {}, Exception("gone"))

    monkeypatch.setattr(database, "run", down)

    assert (await client.get(path())).status == 503
    assert (await client.post(path(), data=ONE_CLICK)).status == 503
    assert publish.sent == []


# --- logs and wiring


async def test_the_log_names_ids_only(client: TestClient, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.DEBUG, logger="streams.api.unsubscribe"):
        await client.post(path(), data=ONE_CLICK)
        await client.post(path(secret="v" * 32), data=ONE_CLICK)

    assert "therapist 7" in caplog.text
    for secret_or_personal in (path().split("/")[-1], path(secret="v" * 32).split("/")[-1], "praxis", SECRET):
        assert secret_or_personal.lower() not in caplog.text.lower()


async def test_the_worker_serves_the_pages_only_with_the_url_set(settings: Settings, tmp_path: Path):
    on = build_app(Services.from_settings(settings)).app
    off_settings = Settings.from_environ(
        {"COMM_STORE": "memory", "COMM_DATABASE_URL": f"sqlite:///{tmp_path / 'off.db'}"}
    )
    off = build_app(Services.from_settings(off_settings)).app

    on.web.init_server()
    assert "/unsubscribe/{token}" in {r.canonical for r in on.web.web_app.router.resources()}
    client = await serve(off)
    try:
        assert (await client.get(path())).status == 404
        assert (await client.post(path(), data=ONE_CLICK)).status == 404
    finally:
        await client.close()


def test_the_page_can_be_replaced_from_the_template_dir(tmp_path: Path):
    (tmp_path / "unsubscribe.html").write_text("{{ page }}: {{ title }} <{{ sender_name }}>", encoding="utf-8")

    render = PageRenderer("<Vermittlung>", "v@example.org", tmp_path)

    assert render("done") == b"done: Sie sind abgemeldet <&lt;Vermittlung&gt;>"
