"""Waiting for a condition the test cannot be told about (the SMTP server's thread,
a log file, /proc, a service's state): poll it until it holds, or fail the test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How often a condition is looked at unless the call site says otherwise.
EVERY = 0.05


class _Deadline:
    """One wait: how long it may take, and what the test says when it took too long."""

    def __init__(self, timeout: float, what: str | Callable[[], str], error: type[Exception]) -> None:
        self.timeout, self.what, self.error = timeout, what, error
        self.at = time.monotonic() + timeout

    def check(self) -> None:
        if time.monotonic() > self.at:
            what = self.what() if callable(self.what) else self.what
            raise self.error(f"timed out after {self.timeout}s waiting for {what}")


async def until(
    check: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str],
    *,
    every: float = EVERY,
    error: type[Exception] = AssertionError,
) -> T:
    """``check()`` once it is true (it may raise to give up early); ``error`` naming
    ``what`` (a callable: read when the time is up) after ``timeout`` seconds."""
    deadline = _Deadline(timeout, what, error)
    while not (result := check()):
        deadline.check()
        await asyncio.sleep(every)
    return result


def until_blocking(
    check: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str],
    *,
    every: float = EVERY,
    error: type[Exception] = AssertionError,
) -> T:
    """``until`` for a caller without an event loop (it blocks the thread)."""
    deadline = _Deadline(timeout, what, error)
    while not (result := check()):
        deadline.check()
        time.sleep(every)
    return result
