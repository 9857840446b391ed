"""The worker's probes over HTTP (issue 14 §3): /healthz while the worker runs,
/readyz only while it can do its work (here: not while its database is down), two
workers on one host each on a port of their own, and none of Faust's built-in views
reachable."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust

from streams.kafka.table import THERAPIST_TABLE
from tests.e2e.harness import Service, WorkerProcess
from tests.events import match_created, therapist_created
from tests.services import PrivateCluster
from tests.waiting import until, until_blocking

ALL_OK = {"partitions": "ok", "table": "ok", "database": "ok", "relay": "ok", "inputs": "ok"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    text: str


def ask(url: str) -> Answer | None:
    """GET ``url`` (blocking: call it in a thread); None while nothing listens there."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return _answer(response.status, response.read())
    except urllib.error.HTTPError as error:
        return _answer(error.code, error.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _answer(status: int, raw: bytes) -> Answer:
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    return Answer(status, body, text)


async def get(worker: WorkerProcess, path: str) -> Answer:
    answer = await asyncio.to_thread(ask, worker.url(path))
    assert answer is not None, f"nothing answers at {worker.url(path)}"
    return answer


async def wait_answer(worker: WorkerProcess, path: str, wanted: Callable[[Answer], bool], what: str) -> Answer:
    """Ask ``path`` until the answer is ``wanted`` (in a thread: the test's loop goes on)."""
    last: list[Answer | None] = [None]

    def check() -> Answer | None:
        last[0] = ask(worker.url(path))
        return last[0] if last[0] is not None and wanted(last[0]) else None

    return await asyncio.to_thread(until_blocking, check, 60, lambda: f"{what} (last answer: {last[0]})", every=0.1)


async def ready(worker: WorkerProcess) -> Answer:
    return await wait_answer(worker, "/readyz", lambda a: a.status == 200, "/readyz to answer 200")


async def test_readyz_follows_the_database_down_and_up(make_service):
    cluster = PrivateCluster().start()
    try:
        async with make_service(database_url=cluster.url) as service:
            worker = await service.up()
            healthy = await get(worker, "/healthz")
            assert (healthy.status, healthy.body) == (200, {"status": "ok"})
            answer = await ready(worker)
            assert answer.body == {"status": "ready", "checks": ALL_OK}

            cluster.stop()
            down = await wait_answer(worker, "/readyz", lambda a: a.status == 503, "/readyz to answer 503")
            assert down.body == {"status": "unavailable", "checks": {**ALL_OK, "database": "unreachable"}}
            # Nothing of the connection (host, port, user, the driver's message) in the answer.
            assert str(cluster.port) not in down.text and "postgres" not in down.text.lower()
            assert (await get(worker, "/healthz")).status == 200  # alive: no reason to restart it
            assert worker.running

            cluster.start()
            back = await ready(worker)
            assert back.body == {"status": "ready", "checks": ALL_OK}
    finally:
        cluster.destroy()


def faust_views() -> set[str]:
    """The paths of every built-in view of the installed Faust (all turned on), with
    the table's name and a key of it filled in."""
    app = faust.App("every-view", debug=True, web_metrics_enabled=True, autodiscover=False)
    app.web.init_server()
    patterns = {resource.canonical for resource in app.web.web_app.router.resources()}
    return {p.format(name=THERAPIST_TABLE, key="1") for p in patterns}


# Faust 0.15.3's views (its statistics are at "/", not /stats/, asked as well);
# faust_views() finds any view a newer Faust adds.
KNOWN_VIEWS = {
    "/",
    "/table/",
    f"/table/{THERAPIST_TABLE}/",
    f"/table/{THERAPIST_TABLE}/1/",
    "/router/",
    "/router/topics",
    f"/router/{THERAPIST_TABLE}/",
    f"/router/{THERAPIST_TABLE}/1/",
    "/graph/",
    "/assignment/",
    "/performance/",  # Faust's own JSON metrics (the Prometheus page is /metrics)
    "/stats/",
}


async def test_none_of_faust_s_built_in_views_answers(service: Service):
    views = faust_views()
    assert KNOWN_VIEWS - {"/stats/"} <= views  # the installed Faust has them all
    worker = await service.up()
    # A therapist in the table with a waiting patient: what /table/… would show.
    await service.therapists(therapist_created(1))
    await service.matches(match_created(10, 1, "2026-01-01T10:00:00+01:00"))
    await service.forwarded("match_created", 1)
    await ready(worker)
    for path in sorted(views | KNOWN_VIEWS):
        answer = await get(worker, path)
        assert answer.status in (404, 401), (path, answer.status, answer.text[:200])
        assert "Pat" not in answer.text and "praxis" not in answer.text
    assert (await get(worker, "/healthz")).status == 200  # the server is up; the views are not there


async def test_two_workers_on_one_host_each_serve_probes_on_their_own_port(service: Service):
    first = await service.up()
    second = await service.start_worker()
    assert first.web_port != second.web_port and first.data_dir != second.data_dir
    for worker in (first, second):
        assert (await get(worker, "/healthz")).status == 200
    # Both ready once the group has shared the partitions between them.
    answers = [await ready(worker) for worker in (first, second)]
    assert all(a.body == {"status": "ready", "checks": ALL_OK} for a in answers)
    # The web server does not hold up a SIGTERM; its port goes with the worker.
    assert first.terminate() < 10.0
    assert await asyncio.to_thread(ask, first.url("/healthz")) is None
    assert (await get(second, "/healthz")).status == 200
    await ready(second)  # the survivor has every partition and is ready again


async def test_a_second_worker_on_a_taken_port_stops_and_says_why(service: Service):
    first = await service.up()
    clash = service.worker(COMM_WEB_PORT=str(first.web_port))
    await until(lambda: not clash.running, 40, "the second worker to stop")
    assert clash.process is not None and clash.process.returncode != 0
    assert b"address already in use" in clash.new_log()
    assert (await get(first, "/healthz")).status == 200 and first.running
