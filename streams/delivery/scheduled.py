"""Time-driven work that lives in the database: follow-ups of unanswered emails,
call reminders and the daily call list (batch runs are driven by per-partition
ticks instead, see streams.agents.ticks).

Every worker runs this loop. Due rows are claimed with FOR UPDATE SKIP LOCKED and
marked done in the transaction that writes their events, so each due item is
handled once across the workers, and late rather than never after downtime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from mode import Service
from sqlalchemy.exc import SQLAlchemyError

from streams.delivery.wakeups import Wakeups
from streams.ops.logs import ThrottledWarning, log_failure
from streams.persistence import call_booking, call_jobs
from streams.persistence.db import Database, is_transient
from streams.persistence.outbox import Channels
from streams.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Follow-ups handled per round (each in its own transaction) before the others get a turn.
FOLLOW_UPS_PER_ROUND = 50


class ScheduledWork(Service):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        database: Database,
        channels: Channels,
        wakeups: Wakeups,
        clock: Callable[[], datetime],
        policy: call_booking.CallPolicy,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.database = database
        self.channels = channels
        self.wakeups = wakeups
        self.clock = clock
        self.policy = policy
        self.database_warning = ThrottledWarning(log)

    @Service.task
    async def _run(self) -> None:
        pause = self.settings.poll_interval.total_seconds()
        while not self.should_stop:
            if await self.round():
                self.wakeups.relay.set()
            await self.sleep(pause)

    async def round(self) -> int:
        """One pass over everything that is due; how many items were handled. Each
        job runs on its own, so one that fails does not hold up the others."""
        done = 0
        for _ in range(FOLLOW_UPS_PER_ROUND):
            handled = await self._job("follow-up", call_jobs.next_follow_up)
            if not handled:
                break
            done += 1
        done += await self._job("reminders", call_jobs.send_reminders) or 0
        done += 1 if await self._job("daily call list", call_jobs.daily_call_list) else 0
        return done

    async def _job(self, name: str, work: Callable[..., T]) -> T | None:
        try:
            return await self.database.run(work, self.policy, self.channels, self.clock())
        except SQLAlchemyError as exc:
            if is_transient(exc):
                self.database_warning("scheduled work: database unavailable (%s); retrying", type(exc).__name__)
            else:
                log_failure(log, f"scheduled work: {name} failed", exc)
            return None
