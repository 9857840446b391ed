"""Unit tests feed the agents fake streams (tests/fakes.py, RecordStream), whose
``noack_take`` hands out the batches; the therapist agent's own taking
(streams/kafka/taking.py, which needs a Faust stream) is tested on one in
tests/unit/test_taking.py and on the real broker by the e2e tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from streams.agents import therapist


def _fake_batches(stream: Any, max_: int, within: float) -> AsyncIterator[list[Any]]:
    batches: AsyncIterator[list[Any]] = stream.noack_take(max_, within)
    return batches


@pytest.fixture(autouse=True)
def _fake_streams_take_their_own_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(therapist, "noack_batches", _fake_batches)
