"""The interpreter settings of the long-running processes (streams.ops.interpreter)."""

from __future__ import annotations

import gc
import multiprocessing
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from streams.delivery import process
from streams.ops.interpreter import DELIVERY_SWITCH_INTERVAL, GC_THRESHOLD, freeze_startup, tune_collector
from streams.persistence.outbox import Channels
from streams.settings import Settings


@pytest.fixture(autouse=True)
def restored_interpreter() -> Iterator[None]:
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    sys.setswitchinterval(interval)


def test_the_collector_runs_less_often() -> None:
    tune_collector()
    assert gc.get_threshold() == GC_THRESHOLD
    assert GC_THRESHOLD[0] > 700  # CPython's default


def test_what_startup_built_is_kept_out_of_later_collections() -> None:
    gc.unfreeze()
    startup = [[i] for i in range(1000)]
    freeze_startup()
    assert gc.get_freeze_count() >= len(startup)
    collected = {id(item) for item in gc.get_objects()}  # the frozen ones are not walked
    assert not any(id(item) in collected for item in startup)


def test_the_delivery_process_runs_with_the_tuned_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def run(coroutine: Any) -> None:  # instead of serving: what the child's loop would run with
        coroutine.close()
        seen.update(threshold=gc.get_threshold(), switch_interval=sys.getswitchinterval())

    monkeypatch.setattr(process.asyncio, "run", run)
    monkeypatch.setattr(process.signal, "signal", lambda *_: None)  # not this process's SIGINT
    monkeypatch.setattr(process, "configure_logging", lambda *_: None)
    ends = [end for _ in range(3) for end in multiprocessing.Pipe(duplex=False)]
    channels = Channels(events="communication-events", inbox="inbox")
    process.run_child(Settings.from_environ({}), channels, "worker-1", None, *ends[:3])  # type: ignore[arg-type]
    for end in ends[3:]:
        end.close()
    assert seen == {"threshold": GC_THRESHOLD, "switch_interval": DELIVERY_SWITCH_INTERVAL}
