"""Who owns a therapist's partition (read from a Faust app's assignment, set here
as a rebalance would), and forwarding the therapist view to the owner: two apps
in the test's process, each serving the API, one forwarding to the other."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import faust
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from faust.assignor.client_assignment import ClientAssignment
from pydantic import SecretStr

from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import TherapistState
from streams.agents.ticks import partition_of
from streams.api.auth import Tokens
from streams.api.pages import Api, add_api_pages
from streams.api.routing import FORWARDED_BY, Forwarder, Here, Nowhere, Ownership, OwnerUnreachable, There
from streams.demo.broker import free_port
from streams.kafka.app import create_app
from streams.kafka.table import declare_therapist_table
from streams.ops.web import ProbeWeb
from streams.persistence.db import Database
from streams.settings import Settings
from tests.fakes import FakeClock

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
OURS = "http://10.0.3.7:6066"
THEIRS = "http://10.0.3.8:6066"
SETTINGS = Settings.from_environ(
    {"COMM_STORE": "memory", "COMM_PARTITIONS": "4", "COMM_WEB_ADVERTISED_URL": OURS, "COMM_DATABASE_URL": "sqlite://"}
)


def therapist_on(partition: int) -> int:
    return next(t for t in range(1, 1000) if partition_of(t, 4) == partition)


def assigned(app: faust.App, table: faust.Table, ours: list[int], theirs: list[int]) -> None:
    """The assignment a rebalance hands this worker: partitions ``ours``, the other worker ``theirs``."""
    changelog = table.changelog_topic.get_topic_name()
    app.assignor._assignment = ClientAssignment(actives={changelog: ours}, standbys={changelog: theirs})
    app.assignor.changelog_distribution = {OURS: {changelog: ours}, THEIRS: {changelog: theirs}}
    app.tables.actives_ready = True
    app.in_recovery = False
    app.rebalancing = False


@pytest.fixture
def ownership() -> Ownership:
    app = create_app(SETTINGS)
    table = declare_therapist_table(app, SETTINGS)
    assigned(app, table, [0, 2], [1, 3])
    return Ownership(app, table, 4)


def test_the_owner_is_here_or_there_by_the_therapist_s_partition(ownership: Ownership):
    assert ownership.own_url == OURS
    assert ownership.owner_of(therapist_on(0)) == Here()
    assert ownership.owner_of(therapist_on(2)) == Here()
    assert ownership.owner_of(therapist_on(1)) == There(THEIRS)  # a standby copy here is not the owner's state
    assert ownership.owner_of(therapist_on(3)) == There(THEIRS)


def test_nobody_answers_during_a_rebalance_or_a_recovery(ownership: Ownership):
    app = ownership.app
    app.rebalancing = True
    assert ownership.owner_of(therapist_on(0)) == Nowhere("the workers are rebalancing")
    assert ownership.owner_of(therapist_on(1)) == Nowhere("the workers are rebalancing")
    app.rebalancing = False
    app.in_recovery = True
    assert ownership.owner_of(therapist_on(0)) == Nowhere("the therapist table is being recovered")
    assert ownership.owner_of(therapist_on(1)) == There(THEIRS)  # the owner says for itself whether it can
    app.in_recovery = False
    app.tables.actives_ready = False
    assert isinstance(ownership.owner_of(therapist_on(0)), Nowhere)


def test_a_partition_nobody_holds_or_one_the_group_still_gives_us_is_nowhere(ownership: Ownership):
    app, table = ownership.app, ownership.table
    changelog = table.changelog_topic.get_topic_name()
    app.assignor.changelog_distribution = {OURS: {changelog: [0, 2, 1]}, THEIRS: {changelog: [3]}}
    # the group's map names us for partition 1, but our assignment does not: stale
    assert ownership.owner_of(therapist_on(1)) == Nowhere("no worker holds the therapist's partition yet")
    app.assignor.changelog_distribution = {}
    assert isinstance(ownership.owner_of(therapist_on(3)), Nowhere)


# --- forwarding between two workers' API


class Owners:
    def __init__(self, owner: Here | There | Nowhere) -> None:
        self.owner = owner

    def owner_of(self, therapist_id: int) -> Here | There | Nowhere:
        return self.owner


class NoForward:
    def __init__(self) -> None:
        self.asked = 0

    async def __call__(self, owner: There, path_qs: str, authorization: str) -> Any:
        self.asked += 1
        raise AssertionError("a forwarded request must not be forwarded again")


FIRST = "token-of-the-staff-tool-01"
SECOND = "token-of-the-ops-console-2"


def worker() -> faust.App:
    app = create_app(SETTINGS)
    app.web = ProbeWeb(app)
    return app


def tokens(*values: str) -> Tokens:
    return Tokens([SecretStr(v) for v in values])


async def start(app: faust.App, api: Api) -> TestClient:
    add_api_pages(app, api)
    app.web.init_server()
    client = TestClient(TestServer(app.web.web_app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
def database(tmp_path: Any) -> Any:
    db = Database(f"sqlite:///{tmp_path / 'api.db'}")
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture
async def pair(database: Database) -> AsyncIterator[tuple[TestClient, TestClient, Api, Api]]:
    """``asked`` forwards to ``owner``, which holds therapist 7 and accepts only SECOND."""
    owner_app, asked_app = worker(), worker()
    state = TherapistState(7, profile=TherapistProfile(7, "eva@praxis.example", "Eva", "Müller"))
    state.pending[71] = PlacementRequest(71, 1071, datetime(2026, 1, 5, tzinfo=UTC))
    owner_api = Api(SETTINGS, database, {7: state}, FakeClock(NOW), Owners(Here()), NoForward(), tokens(SECOND))
    owner = await start(owner_app, owner_api)
    owner_url = str(owner.make_url("")).rstrip("/")
    asked_api = Api(
        SETTINGS, database, {}, FakeClock(NOW), Owners(There(owner_url)), Forwarder(asked_app), tokens(FIRST, SECOND)
    )
    asked = await start(asked_app, asked_api)
    yield asked, owner, asked_api, owner_api
    await asked.close()
    await owner.close()
    await asked_app.http_client.close()


async def test_the_owner_answers_through_the_worker_asked(pair):
    asked, owner, _, _ = pair
    response = await asked.get("/api/therapists/7/communication", headers={"Authorization": f"Bearer {SECOND}"})
    body = json.loads(await response.read())
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert [r["placement_request_id"] for r in body["waiting_requests"]] == [71]
    direct = await owner.get("/api/therapists/7/communication", headers={"Authorization": f"Bearer {SECOND}"})
    assert json.loads(await direct.read()) == body


async def test_the_owner_checks_the_token_it_is_forwarded(pair):
    asked, _, _, _ = pair
    # accepted by the worker asked, not by the owner: the owner's refusal comes back
    response = await asked.get("/api/therapists/7/communication", headers={"Authorization": f"Bearer {FIRST}"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(await response.read()) == {"error": "unauthorized"}
    nothing = await asked.get("/api/therapists/7/communication")
    assert nothing.status == 401


async def test_a_forwarded_request_is_not_sent_back(pair):
    asked, owner, _, owner_api = pair
    owner_api.owners = Owners(There("http://127.0.0.1:9"))  # the owner moved meanwhile
    response = await asked.get("/api/therapists/7/communication", headers={"Authorization": f"Bearer {SECOND}"})
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert owner_api.forward.asked == 0
    # and a request that claims to be forwarded is still checked for its token
    claimed = await owner.get("/api/therapists/7/communication", headers={FORWARDED_BY: "http://x:1"})
    assert claimed.status == 401


async def test_a_forwarded_request_carries_the_token_the_path_and_who_forwarded_it():
    seen: list[Any] = []

    async def owner_page(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response({"ok": True}, status=201, headers={"Retry-After": "3", "Set-Cookie": "x=1"})

    owner = web.Application()
    owner.router.add_get("/api/therapists/{id}/communication", owner_page)
    server = TestServer(owner, host="127.0.0.1")
    await server.start_server()
    app = create_app(SETTINGS)
    try:
        forward = Forwarder(app)
        url = str(server.make_url("")).rstrip("/")
        relayed = await forward(There(url), "/api/therapists/7/communication?x=%2B1", "Bearer abc")
    finally:
        await server.close()
        await app.http_client.close()
    assert (relayed.status, json.loads(relayed.body)) == (201, {"ok": True})
    assert relayed.headers == {"Retry-After": "3"}  # nothing else of the owner's headers
    [request] = seen
    assert request.path_qs == "/api/therapists/7/communication?x=%2B1"
    assert request.headers["Authorization"] == "Bearer abc"
    assert request.headers[FORWARDED_BY] == OURS


async def test_an_owner_that_does_not_answer_is_unreachable():
    hang = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await hang.wait()
        return web.Response()

    owner = web.Application()
    owner.router.add_get("/{tail:.*}", never)
    server = TestServer(owner, host="127.0.0.1")
    await server.start_server()
    app = create_app(SETTINGS)
    try:
        with pytest.raises(OwnerUnreachable):
            await Forwarder(app, timeout=0.2)(There(str(server.make_url("")).rstrip("/")), "/api/x", "Bearer abc")
        with pytest.raises(OwnerUnreachable):  # nothing listens there
            await Forwarder(app)(There(f"http://127.0.0.1:{free_port()}"), "/api/x", "Bearer abc")
    finally:
        hang.set()
        await server.close()
        await app.http_client.close()
