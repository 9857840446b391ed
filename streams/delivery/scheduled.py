"""Time-driven work that lives in the database: follow-ups of unanswered emails,
call reminders, the daily call list and the retention of old content (batch runs
are driven by per-partition ticks instead, see streams.agents.ticks).

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

from domain.retention import cutoff, retention_schedule
from streams.delivery.wakeups import Wakeups
from streams.ops.logs import ThrottledWarning, log_failure
from streams.persistence import call_booking, call_jobs, retention
from streams.persistence.db import Database, is_transient
from streams.persistence.outbox import Channels
from streams.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Follow-ups handled per round (each in its own transaction) before the others get a turn.
FOLLOW_UPS_PER_ROUND = 50
# Chunks of the retention job per round (each in its own transaction).
RETENTION_CHUNKS_PER_ROUND = 10


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
        self.retention_schedule = retention_schedule(settings.content_retention, settings.timezone)
        # The retention run this worker claimed and has not finished, and its totals so far.
        self.retention_run: datetime | None = None
        # The latest run this worker asked to claim: it asks once per run.
        self.retention_asked: datetime | None = None
        self.retention_done = retention.Redacted()

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
        await self.expire_content()  # publishes nothing
        return done

    async def expire_content(self) -> retention.Redacted | None:
        """Claim the retention run when one is due, then redact a few chunks of it; what
        this round redacted (None: nothing was due, or the database failed)."""
        if self.retention_run is None:
            now = self.clock()
            run_at = self.retention_schedule.latest_at_or_before(now)
            if run_at == self.retention_asked:
                return None  # asked already: claimed by another worker, or done
            claimed = await self._attempt("content retention", retention.claim_run, run_at, now)
            if claimed is None:
                return None  # the database failed: asked again next round
            self.retention_asked = run_at
            if not claimed:
                return None
            self.retention_run, self.retention_done = run_at, retention.Redacted()
            log.info("content retention: run of %s started", self.retention_run.isoformat())
        redacted = retention.Redacted()
        for _ in range(RETENTION_CHUNKS_PER_ROUND):
            now = self.clock()
            chunk = await self._attempt(
                "content retention",
                retention.redact_chunk,
                cutoff(now, self.settings.content_retention),
                now,
            )
            if chunk is None:
                return None  # the rest in the next round
            redacted += chunk
            if chunk.finished:
                break
        self.retention_done += redacted
        self._retention_progress(redacted)
        return redacted

    def _retention_progress(self, redacted: retention.Redacted) -> None:
        total = self.retention_done
        if redacted.emails or redacted.calls:
            log.info(
                "content retention: %d email(s), %d batch entr(ies), %d call(s), %d call entr(ies) redacted so far",
                total.emails,
                total.batch_entries,
                total.calls,
                total.call_entries,
            )
        if redacted.finished:
            assert self.retention_run is not None
            log.info(
                "content retention: run of %s done (%d email(s), %d call(s) redacted)",
                self.retention_run.isoformat(),
                total.emails,
                total.calls,
            )
            self.retention_run = None

    async def _job(self, name: str, work: Callable[..., T]) -> T | None:
        return await self._attempt(name, work, self.policy, self.channels, self.clock())

    async def _attempt(self, name: str, work: Callable[..., T], *args: object) -> T | None:
        """``work(session, *args)`` in a transaction; None (logged) when it fails."""
        try:
            return await self.database.run(work, *args)
        except SQLAlchemyError as exc:
            if is_transient(exc):
                self.database_warning("scheduled work: database unavailable (%s); retrying", type(exc).__name__)
            else:
                log_failure(log, f"scheduled work: {name} failed", exc)
            return None
