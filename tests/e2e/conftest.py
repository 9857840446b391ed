from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from streams.local_broker import LocalBroker
from streams.smtp_capture import SmtpCapture
from tests.e2e.harness import FAST, Collector, Mailbox, Publisher, Service, Topics
from tests.services import postgres_database

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One Tansu broker for the session; every test uses topics and an app id of its own."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with LocalBroker(log_path=log) as running:
        yield running


@pytest.fixture
async def service(broker: LocalBroker, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Service]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topics = Topics.unique(prefix)
    smtp = SmtpCapture().start()
    with postgres_database() as database_url:
        environ = {
            **FAST,
            **topics.environ(),
            "COMM_KAFKA_BROKER": broker.url,
            "COMM_APP_ID": prefix,
            "COMM_DATABASE_URL": database_url,
            "COMM_SMTP_HOST": "127.0.0.1",
            "COMM_SMTP_PORT": str(smtp.port),
        }
        publisher = await Publisher(broker.bootstrap).start()
        collector = Collector(broker.bootstrap, [topics.events, topics.dlq])
        log_path = tmp_path / "worker.log"
        svc = Service(broker, topics, database_url, smtp, Mailbox(smtp), publisher, collector, environ, log_path)
        try:
            yield svc
        finally:
            for worker in svc.workers:
                if worker.running:
                    worker.kill()
            if hasattr(collector, "task"):
                await collector.stop()
            await publisher.stop()
            smtp.stop()
            if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
                print(f"--- worker log ({log_path}) ---\n" + log_path.read_text(errors="replace")[-8000:])


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
