"""In-process nudges between the agents that add work and the loops that do it."""

from __future__ import annotations

import asyncio


class Wakeups:
    """In-process nudges so that new work is picked up without waiting for a poll."""

    def __init__(self) -> None:
        self.delivery = asyncio.Event()
        self.relay = asyncio.Event()

    def work_added(self) -> None:
        self.delivery.set()
        self.relay.set()
