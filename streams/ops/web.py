"""The worker's web server (COMM_WEB_*): health probes, and nothing of Faust's own.

``GET /healthz`` answers 200 whenever the worker's event loop gets to it: the web
server runs on that loop (not in a thread of its own), so a worker whose loop is
stuck does not answer at all.

``GET /readyz`` answers 200 only when all of these hold, else 503; the body names
each check either way::

    {"status": "unavailable",
     "checks": {"partitions": "ok", "table": "recovering", "database": "unreachable", "relay": "ok"}}

- ``partitions``: the worker has joined its group and has its assignment (not in
  the middle of a rebalance). A worker the group gave no partition (more workers
  than partitions) is ready: it is what the group decided, and a rollout must not
  wait for it forever.
- ``table``: the therapist table's active partitions are recovered from the changelog.
- ``database``: a ``SELECT 1`` answers within DB_TIMEOUT. It runs in a thread, one
  at a time however many probes arrive, and its answer is kept for DB_CACHE, so a
  storm of probes costs the database one query per DB_CACHE.
- ``relay``: the outbox relay has started and its loop has neither stopped nor crashed.

The body carries only these words: never an exception's message (it can name a
host, a user or data).

Faust's built-in views are all turned off: ``/table/…`` reads table keys (the
table holds the patients' details), ``/router/…`` lists every worker's address and
partitions, ``/stats/``, ``/assignment/``, ``/graph/`` and ``/performance/`` show the
worker's internals. The production index (``/``) has no setting of its own, so the
web driver here leaves it out. The one request routed between workers is the API's
therapist view (streams/api/routing.py), behind the API's authentication, to the
owner's ``canonical_url`` (COMM_WEB_ADVERTISED_URL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import faust
from faust.web import Request, Response, View
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from streams.persistence.db import Database
from streams.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

DB_TIMEOUT = 1.5  # seconds a probe waits for the database's answer
DB_CACHE = 2.0  # seconds an answer of the database is reused
OK = "ok"


def faust_options(settings: Settings) -> dict[str, Any]:
    """Options for ``faust.App``: the web server on COMM_WEB_HOST:COMM_WEB_PORT
    (unless COMM_WEB_ENABLED is false), with every built-in view of Faust off."""
    return {
        "web_enabled": settings.web_enabled,
        "web_bind": settings.web_host,  # the interface to listen on
        "web_port": settings.web_port,
        # What this worker tells the group its address is (the partition assignment
        # carries it): where the others forward the API's therapist view.
        "canonical_url": settings.web_url,
        # On the worker's own loop: /healthz answers only while that loop runs.
        "web_in_thread": False,
        "debug": False,
        "web_stats_enabled": False,  # "/" (sensors) and /assignment/
        "web_graph_enabled": False,  # /graph/
        "web_router_enabled": False,  # /router/…: every worker's address and partitions
        "web_tables_enabled": False,  # /table/…: table keys and values
        "web_metrics_enabled": False,  # /performance/ (JSON; /metrics is the Prometheus page)
    }


class ProbeWeb(AiohttpWeb):  # type: ignore[misc]
    """Faust's aiohttp server without the production index (``{"status": "OK"}`` at
    ``/``), which Faust serves whenever the statistics are off and which has no
    setting of its own; every other built-in view is off by ``faust_options``."""

    production_blueprints = ()


class Relay(Protocol):
    @property
    def running(self) -> bool: ...


class Inputs(Relay, Protocol):
    joined: bool  # the group gave this worker its share at least once


class Readiness:
    """What ``/readyz`` reports, read from the app's state when asked."""

    def __init__(
        self,
        app: faust.App,
        ping: Callable[[], None],
        *,
        db_timeout: float = DB_TIMEOUT,
        db_cache: float = DB_CACHE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.ping = ping
        self.db_timeout = db_timeout
        self.db_cache = db_cache
        self.clock = clock
        self.relay: Relay | None = None  # set once the worker is up (see streams/bootstrap.py)
        self.inputs: Inputs | None = None  # likewise: the reader of the input topics
        self.assigned = False  # an assignment arrived since the last revocation
        self.ever_assigned = False
        self._database: tuple[float, str] | None = None  # (when, answer)
        self._pinging: asyncio.Future[None] | None = None
        self._failing: frozenset[str] | None = None  # as last logged

    def watch(self) -> None:
        """Follow the app's rebalances (Faust's signals)."""
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)

    async def _on_revoked(self, sender: object, revoked: object, **kwargs: object) -> None:
        self.assigned = False

    async def _on_assigned(self, sender: object, assigned: object, **kwargs: object) -> None:
        self.assigned = self.ever_assigned = True

    def partitions(self) -> str:
        if not self.ever_assigned:
            return "unassigned"
        if not self.assigned or self.app.rebalancing:
            return "rebalancing"
        return OK

    def table(self) -> str:
        # actives_ready is cleared when a rebalance starts and set once the
        # assigned partitions are read back from the changelog.
        if self.app.tables.actives_ready and not self.app.in_recovery:
            return OK
        return "recovering"

    def relay_state(self) -> str:
        if self.relay is None:
            return "starting"
        return OK if self.relay.running else "not running"

    def inputs_state(self) -> str:
        if self.inputs is None:
            return "starting"
        if not self.inputs.running:
            return "not running"
        return OK if self.inputs.joined else "unassigned"

    async def database(self) -> str:
        cached = self._database
        if cached is not None and self.clock() - cached[0] < self.db_cache:
            return cached[1]
        if self._pinging is None or self._pinging.done():
            # One ping at a time: one that hangs (a frozen server) holds one
            # thread, not one per probe.
            self._pinging = asyncio.ensure_future(asyncio.to_thread(self.ping))
            self._pinging.add_done_callback(_retrieve)
        try:
            await asyncio.wait_for(asyncio.shield(self._pinging), self.db_timeout)
            answer = OK
        except TimeoutError:
            answer = "timeout"
        except Exception as exc:  # whatever it says stays out of the body
            log.debug("readiness: database check failed (%s)", type(exc).__name__)
            answer = "unreachable"
        self._database = (self.clock(), answer)
        return answer

    async def checks(self) -> dict[str, str]:
        database = await self.database()  # first: the others are read as the answer goes out
        checks = {
            "partitions": self.partitions(),
            "table": self.table(),
            "database": database,
            "relay": self.relay_state(),
            "inputs": self.inputs_state(),
        }
        self._log_change(checks)
        return checks

    def _log_change(self, checks: Mapping[str, str]) -> None:
        failing = frozenset(name for name, state in checks.items() if state != OK)
        if failing != self._failing:
            if failing:
                log.info("not ready: %s", ", ".join(f"{n} {checks[n]}" for n in sorted(failing)))
            else:
                log.info("ready")
        self._failing = failing


def _retrieve(future: asyncio.Future[None]) -> None:
    """Take a ping's error off a future nobody waits for any more (no "never retrieved")."""
    if not future.cancelled():
        future.exception()


def ping(engine: Engine) -> None:
    """``SELECT 1`` on a pooled connection, outside any transaction the engine
    would begin (on SQLite the service begins them IMMEDIATE, taking the write lock)."""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        finally:
            cursor.close()
    finally:
        connection.close()


def serve_probes(app: faust.App, settings: Settings, database: Database) -> Readiness:
    """The probes of ``app``: their pages unless COMM_WEB_ENABLED is false. Called
    before any other page is added (the web driver is chosen by the first page)."""
    readiness = Readiness(app, lambda: ping(database.engine))
    readiness.watch()
    if settings.web_enabled:
        add_probe_pages(app, readiness)
    return readiness


def add_probe_pages(app: faust.App, readiness: Readiness) -> None:
    if "web" in vars(app):  # a page was added already, to Faust's own driver
        raise RuntimeError("the probes must be added before any page")
    app.web = ProbeWeb(app)

    async def healthz(view: View, request: Request) -> Response:
        return view.json({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def readyz(view: View, request: Request) -> Response:
        checks = await readiness.checks()
        ready = all(state == OK for state in checks.values())
        return view.json(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status=200 if ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    app.page("/healthz")(healthz)
    app.page("/readyz")(readyz)
