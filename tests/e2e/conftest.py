from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from streams.demo.broker import LocalBroker
from tests.e2e.harness import Service, open_service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One Tansu broker per test process; every test uses topics and an app id of its own."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with LocalBroker(log_path=log) as running:
        yield running


@pytest.fixture
def make_service(
    broker: LocalBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., AbstractAsyncContextManager[Service]]:
    """Open a service with options: ``broker=`` (e.g. a private one to pause),
    ``database_url=`` (e.g. a private cluster to stop), ``smtp=``, extra settings."""

    def make(**options: Any) -> AbstractAsyncContextManager[Service]:
        options.setdefault("broker", broker)
        return open_service(tmp_path=tmp_path, node=request.node, **options)

    return make


@pytest.fixture
async def service(make_service: Callable[..., AbstractAsyncContextManager[Service]]) -> AsyncIterator[Service]:
    async with make_service() as svc:
        yield svc


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
