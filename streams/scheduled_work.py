"""Time-driven work that lives in the database: follow-ups of unanswered emails,
call reminders and the daily call list (batch runs are driven by per-partition
ticks instead, see streams.therapist_agent).

Every worker runs this loop. Due rows are claimed with FOR UPDATE SKIP LOCKED and
marked done in the transaction that writes their events, so each due item is
handled once across the workers, and late rather than never after downtime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from mode import Service
from sqlalchemy.exc import SQLAlchemyError

from streams.delivery import ThrottledWarning, Wakeups
from streams.persistence import calls
from streams.persistence.db import Database
from streams.persistence.emails import Channels
from streams.settings import Settings

log = logging.getLogger(__name__)

# Follow-ups handled per round (each in its own transaction) before the others get a turn.
FOLLOW_UPS_PER_ROUND = 50


def call_policy(settings: Settings) -> calls.CallPolicy:
    return calls.CallPolicy(
        slot=settings.call_slot,
        min_notice=settings.call_min_notice,
        horizon=settings.call_horizon,
        capacity=settings.call_capacity,
        reminder_before=settings.call_reminder_before,
        max_attempts=settings.max_call_attempts,
        follow_up_after=settings.follow_up_after,
        zone=settings.timezone,
        daily_call_list=settings.daily_call_list,
    )


class ScheduledWork(Service):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        database: Database,
        channels: Channels,
        wakeups: Wakeups,
        clock: Callable[[], datetime],
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.database = database
        self.channels = channels
        self.wakeups = wakeups
        self.clock = clock
        self.policy = call_policy(settings)
        self.database_warning = ThrottledWarning(log)

    @Service.task
    async def _run(self) -> None:
        pause = self.settings.poll_interval.total_seconds()
        while not self.should_stop:
            try:
                did = await self.round()
            except SQLAlchemyError as exc:
                self.database_warning("scheduled work: database unavailable (%s); retrying", type(exc).__name__)
                did = 0
            if did:
                self.wakeups.relay.set()
            await self.sleep(pause)

    async def round(self) -> int:
        """One pass over everything that is due; how many items were handled."""
        done = 0
        for _ in range(FOLLOW_UPS_PER_ROUND):
            if not await self.database.run(calls.next_follow_up, self.policy, self.channels, self.clock()):
                break
            done += 1
        done += await self.database.run(calls.send_reminders, self.policy, self.channels, self.clock())
        if await self.database.run(calls.daily_call_list, self.policy, self.channels, self.clock()):
            done += 1
        return done
