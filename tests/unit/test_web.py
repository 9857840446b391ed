"""The worker's web server: Faust's options, the routes the app serves (the probes,
none of Faust's own views) and what /readyz reports, read from a real Faust app's
state (not started) and a database check that is a plain function here."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from streams.bootstrap import Services, build_app
from streams.delivery.relay import OutboxRelay
from streams.kafka.app import create_app
from streams.ops.web import ProbeWeb, Readiness, add_probe_pages, faust_options, ping, serve_probes
from streams.persistence.db import create_db_engine
from streams.settings import Settings
from tests.fakes import WAIT
from tests.waiting import until

SETTINGS = Settings.from_environ({"COMM_STORE": "memory", "COMM_DATABASE_URL": "sqlite://"})
FLAGS = ("web_stats_enabled", "web_graph_enabled", "web_router_enabled", "web_tables_enabled", "web_metrics_enabled")


def routes(app: faust.App) -> set[str]:
    app.web.init_server()
    return {resource.canonical for resource in app.web.web_app.router.resources()}


def faust_builtin_routes() -> set[str]:
    """What Faust serves with every built-in view on."""
    app = faust.App("every-view", debug=True, web_metrics_enabled=True, autodiscover=False)
    return routes(app) | {"/"}  # "/" is the stats page here, the production index otherwise


def test_the_server_listens_where_the_settings_say_with_every_faust_view_off():
    settings = Settings.from_environ({"COMM_WEB_HOST": "127.0.0.2", "COMM_WEB_PORT": "7071"})
    options = faust_options(settings)
    assert options["web_enabled"] is True
    assert (options["web_bind"], options["web_port"]) == ("127.0.0.2", 7071)
    assert options["web_in_thread"] is False  # on the worker's loop: /healthz answers only while it runs
    assert options["debug"] is False
    assert all(options[flag] is False for flag in FLAGS)
    app = create_app(settings)
    assert (app.conf.web_bind, app.conf.web_port) == ("127.0.0.2", 7071)
    assert not any(getattr(app.conf, flag) for flag in FLAGS)


def test_the_server_can_be_turned_off():
    settings = Settings.from_environ({"COMM_WEB_ENABLED": "false"})
    assert faust_options(settings)["web_enabled"] is False
    app = create_app(settings)
    assert app.conf.web_enabled is False
    serve_probes(app, settings, SimpleNamespace(engine=None))
    assert "web" not in vars(app)  # no web driver was even built


def test_the_app_serves_the_probes_and_none_of_faust_s_views():
    builtin = faust_builtin_routes()
    # Without our options Faust serves these: the test below is not vacuous.
    assert {"/", "/table/{name}/{key}/", "/router/{name}/{key}/", "/assignment/", "/graph/", "/performance/"} <= builtin
    service_app = build_app(Services.from_settings(SETTINGS))
    served = routes(service_app.app)
    assert isinstance(service_app.app.web, ProbeWeb)
    assert {"/healthz", "/readyz"} <= served
    assert served & builtin == set()
    assert served - {"/healthz", "/readyz"} <= {"/metrics"}  # the Prometheus page, nothing else


def test_the_probes_must_come_before_any_other_page():
    app = create_app(SETTINGS)
    app.web  # noqa: B018 - built by the first page anyone adds
    with pytest.raises(RuntimeError, match="before any page"):
        serve_probes(app, SETTINGS, SimpleNamespace(engine=None))


# --- what /readyz reports


class Relay:
    running = True


class Inputs:
    running = True
    joined = True


def ready_app(**overrides: Any) -> Readiness:
    """The readiness of an app in the state of a worker that is up (but for its assignment)."""
    app = create_app(SETTINGS)
    readiness = Readiness(app, lambda: None, **overrides)
    readiness.watch()
    add_probe_pages(app, readiness)
    app.tables.actives_ready = True
    readiness.relay = Relay()
    readiness.inputs = Inputs()
    return readiness


async def assigned(app: faust.App) -> None:
    await app.on_partitions_assigned.send(set())


async def test_ready_when_every_check_passes():
    readiness = ready_app()
    app = readiness.app
    await assigned(app)
    checks = {"partitions": "ok", "table": "ok", "database": "ok", "relay": "ok", "inputs": "ok"}
    assert await readiness.checks() == checks


async def test_a_worker_that_just_started_is_not_ready():
    app = create_app(SETTINGS)
    readiness = Readiness(app, lambda: None)
    readiness.watch()
    assert await readiness.checks() == {
        "partitions": "unassigned",
        "table": "recovering",
        "database": "ok",
        "relay": "starting",
        "inputs": "starting",
    }


async def test_not_ready_during_a_rebalance_and_while_the_table_recovers():
    readiness = ready_app()
    app = readiness.app
    await assigned(app)
    app.on_rebalance_start()  # what Faust's consumer calls when the group rebalances
    await app.on_partitions_revoked.send(set())
    assert (readiness.partitions(), readiness.table()) == ("rebalancing", "recovering")
    await assigned(app)  # the new assignment: the table is read back from the changelog
    app.in_recovery = True
    assert readiness.partitions() == "rebalancing"  # until Faust ends the rebalance
    assert readiness.table() == "recovering"
    app.in_recovery = False
    app.tables.actives_ready = True
    app.rebalancing = False
    assert (readiness.partitions(), readiness.table()) == ("ok", "ok")


async def test_a_stopped_relay_is_named():
    readiness = ready_app()
    app = readiness.app
    await assigned(app)
    readiness.relay = SimpleNamespace(running=False)
    assert (await readiness.checks())["relay"] == "not running"


async def test_inputs_not_yet_given_their_partitions_or_stopped_are_named():
    readiness = ready_app()
    await assigned(readiness.app)
    readiness.inputs = SimpleNamespace(running=True, joined=False)
    assert (await readiness.checks())["inputs"] == "unassigned"
    readiness.inputs = SimpleNamespace(running=False, joined=True)
    assert (await readiness.checks())["inputs"] == "not running"


async def test_an_unreachable_database_is_named_without_its_error():
    def refused() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection to 10.1.2.3 user=commsvc password=geheim refused"))

    readiness = ready_app()
    app = readiness.app
    await assigned(app)
    readiness.ping = refused
    body, status = await answer(app, "/readyz")
    assert status == 503
    assert body == {
        "status": "unavailable",
        "checks": {"partitions": "ok", "table": "ok", "database": "unreachable", "relay": "ok", "inputs": "ok"},
    }


async def test_a_database_that_does_not_answer_in_time_is_named():
    release = threading.Event()
    readiness = ready_app(db_timeout=0.05)
    readiness.ping = lambda: release.wait(WAIT) and None
    try:
        assert await readiness.database() == "timeout"
    finally:
        release.set()


async def test_a_storm_of_probes_asks_the_database_once():
    calls = []
    release = threading.Event()

    def slow() -> None:
        calls.append(1)
        release.wait(WAIT)

    now = [0.0]
    readiness = ready_app(clock=lambda: now[0], db_cache=2.0)
    readiness.ping = slow
    probes = [asyncio.ensure_future(readiness.database()) for _ in range(20)]
    await until(lambda: calls, WAIT, "the first ping")
    release.set()
    assert await asyncio.gather(*probes) == ["ok"] * 20
    assert await readiness.database() == "ok"
    assert len(calls) == 1  # one ping in flight for all, and its answer kept
    now[0] = 2.5
    assert await readiness.database() == "ok"
    assert len(calls) == 2  # asked again once the answer is old


async def test_a_hanging_ping_is_not_started_again_while_it_hangs():
    calls = []
    release = threading.Event()

    def hangs() -> None:
        calls.append(1)
        release.wait(WAIT)

    now = [0.0]
    readiness = ready_app(clock=lambda: now[0], db_timeout=0.05)
    readiness.ping = hangs
    try:
        assert await readiness.database() == "timeout"
        now[0] = 10.0
        assert await readiness.database() == "timeout"
        assert len(calls) == 1  # the first still holds its thread: no second one
    finally:
        release.set()


async def test_the_probe_pages_answer_with_json():
    app = ready_app().app
    await assigned(app)
    assert await answer(app, "/healthz") == ({"status": "ok"}, 200)
    body, status = await answer(app, "/readyz")
    assert status == 200 and body["status"] == "ready"
    app.rebalancing = True
    body, status = await answer(app, "/readyz")
    assert status == 503 and body["checks"]["partitions"] == "rebalancing"


async def answer(app: faust.App, path: str) -> tuple[Any, int]:
    """The page's answer, called as the web server calls it (without a socket)."""
    response = await app.web.views[path].get(None)
    return json.loads(response.text), response.status


def test_the_database_check_begins_no_transaction():
    engine = create_db_engine("sqlite://")  # begins every transaction IMMEDIATE (the write lock)
    begun: list[object] = []
    event.listen(engine, "begin", lambda connection: begun.append(connection))
    try:
        ping(engine)
        assert begun == []
    finally:
        engine.dispose()


# --- the relay's own account of whether it runs


class Database:
    """Answers the relay as a database would where another worker holds the lease."""

    def __init__(self) -> None:
        self.fail: Callable[[], None] | None = None

    async def run(self, work: Any, *args: Any) -> Any:
        if self.fail is not None:
            self.fail()
        return False


def relay(database: Database) -> OutboxRelay:
    settings = Settings.from_environ({"COMM_POLL_INTERVAL": "10ms"})
    return OutboxRelay(settings, database, None, "events", asyncio.Event(), "w", lambda: None)


async def test_the_relay_runs_until_it_is_stopped():
    outbox = relay(Database())
    assert not outbox.running
    await outbox.start()
    await until(lambda: outbox.running, WAIT, "the relay to run")
    await outbox.stop()
    assert not outbox.running


async def test_a_crashed_relay_does_not_run():
    database = Database()
    outbox = relay(database)
    await outbox.start()
    await until(lambda: outbox.running, WAIT, "the relay to run")

    def broken() -> None:
        raise RuntimeError("a bug")

    database.fail = broken
    outbox.wakeup.set()
    await until(lambda: not outbox.running, WAIT, "the relay to crash")
    assert outbox.crashed
    await outbox.stop()
