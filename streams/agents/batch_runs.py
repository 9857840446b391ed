"""Batch runs: on a tick, the due run on the tick's partition, a slice at a time.

A run emails every eligible therapist of the partition, whoever has waited longest
first, or books a call for those whom email does not reach or who asked for phone
only. A therapist whose send window (``COMM_SEND_WINDOW``) is closed at the run is
left out: the requests wait for the first run inside it.

The run decides for at most ``COMM_BATCH_RUN_SLICE`` therapists at a time, then
sends its partition a continuation tick. The inbox messages that arrived meanwhile
go in between, so an acceptance's confirmation overtakes the run's contact emails
instead of waiting behind the whole partition's. The therapist agent applies a
batch's messages before its ticks and makes at most one slice per batch: the runs
of the partitions take turns, and a run whose turn it is not gets only its
continuation tick, so an acceptance waits for at most one slice.

The run in hand is kept in memory only. After a restart, or at the partition's new
owner, the next tick starts the due run again (its bookmark is written when the
run is done): whom it already emailed has nothing waiting, or is inside the contact
limit, and every decision's key is derived from the run's time, so nothing goes out
twice."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import faust

from domain import batching, schedule, send_window
from domain.decisions import BookCall, SendEmail
from domain.therapist_state import TherapistState
from streams.agents.outbound import Outbound
from streams.agents.ticks import bookmark_key, partition_of
from streams.kafka.table_gate import TableGate
from streams.kafka.topics import Topics
from streams.messages import inbox, send_commands
from streams.messages.codec import encode
from streams.ops.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)

# A continuation tick not back within this long is taken as lost: the next tick
# that finds the run in hand sends another.
CHAIN_LOST_AFTER = 5.0  # seconds


@dataclass
class _Run:
    """A due run being worked through."""

    at: datetime
    turn: list[int]  # therapist ids still to decide, in turn
    started: float
    emails: int = 0
    slices: int = 0
    continuation: datetime | None = None  # the continuation tick in flight
    continuation_sent: float = 0.0


class BatchRuns:
    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        table: faust.Table,
        clock: Callable[[], datetime],
        gate: TableGate,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.table = table
        self.clock = clock
        self.gate = gate
        self.metrics = metrics
        self._runs: dict[int, _Run] = {}  # partition -> its run in hand

    async def on_ticks(self, partition: int, ticks: Sequence[inbox.Tick], *, slice_: bool = True) -> None:
        """The partition's ticks taken together: a slice of the due run (as of the
        latest), and a continuation tick when more is left. One continuation is in
        flight at a time; the other ticks only help the run along, so several ticks
        taken at once make one slice, not one each. Without ``slice_`` (another
        partition's slice goes first), the run only gets its continuation, so that
        it goes on when that comes back."""
        now = max(tick.now for tick in ticks)
        if slice_:
            if not await self.slice(partition, now):
                return
        elif not self.has_work(partition, now):
            return
        run = self._runs.get(partition)
        lost = run is None or time.monotonic() - run.continuation_sent > CHAIN_LOST_AFTER
        if run is None or run.continuation is None or run.continuation in {tick.now for tick in ticks} or lost:
            sent_at = self.clock()
            sent = await self.topics.inbox.send(value=encode(inbox.Tick(sent_at)), partition=partition)
            await sent  # acknowledged: otherwise the run would wait for the periodic ticks
            if run is not None:
                run.continuation, run.continuation_sent = sent_at, time.monotonic()

    def has_work(self, partition: int, now: datetime) -> bool:
        """Whether a tick at ``now`` would make a slice: a run is in hand, or due."""
        if partition in self._runs:
            return True
        bookmark = self.table.get(bookmark_key(partition))
        if bookmark is None:
            return False
        return (
            schedule.due_run(self.settings.batch_schedule, datetime.fromisoformat(bookmark["last_run"]), now)
            is not None
        )

    async def run(self, partition: int, now: datetime) -> None:
        """The due run, all of it at once (outside a stream: tests, tools)."""
        while await self.slice(partition, now):
            pass

    async def slice(self, partition: int, now: datetime) -> bool:
        """The next slice of the run due at ``now`` on ``partition``, starting it if
        need be; whether more of it is left. Safe to repeat until it returns: the run
        in hand moves on only once the slice's commands and states are written."""
        key = bookmark_key(partition)
        self.gate.check()
        bookmark = self.table.get(key)
        plan = self.settings.batch_schedule
        if bookmark is None:
            # First tick here: runs start from now on; none are invented for the past.
            self.table[key] = {"last_run": plan.latest_at_or_before(now).isoformat()}
            return False
        run_at = schedule.due_run(plan, datetime.fromisoformat(bookmark["last_run"]), now)
        run = self._runs.get(partition)
        if run is None or run.at != run_at:
            # Nothing in hand, or what is in hand is no longer the due run (done
            # elsewhere, or a later one is due and covers it).
            self._runs.pop(partition, None)
            if run_at is None:
                return False
            run = self._runs[partition] = self._start(partition, run_at)
        turn = run.turn[: self.settings.batch_run_slice]
        planned, calls = self._plan(turn, run.at)
        outbound = Outbound(self.topics, self.settings.partitions, self.clock)
        for _, decision in planned:
            outbound.command(send_commands.SendEmail.decided(decision, None, True))
        for updated, call in calls:
            outbound.command(send_commands.BookCall.decided(updated.therapist_id, call))
        await outbound.flush()
        self.gate.check()
        for updated, _ in [*planned, *calls]:
            self.table[updated.therapist_id] = updated
        del run.turn[: len(turn)]
        run.emails += len(planned)
        run.slices += 1
        if run.turn:
            return True
        self.table[key] = {"last_run": run.at.isoformat()}
        del self._runs[partition]
        self.metrics.batch_run_took(time.perf_counter() - run.started)
        if run.emails:
            log.info(
                "batch run %s on partition %d: %d contact email(s) decided, in %d slice(s)",
                run.at.isoformat(),
                partition,
                run.emails,
                run.slices,
            )
        return False

    def _start(self, partition: int, run_at: datetime) -> _Run:
        """The run's turn: every therapist of the partition with requests waiting,
        whoever has waited longest first (their oldest request leads)."""
        waiting = [
            (batching.oldest_registration(state.pending.values()), state.therapist_id)
            for state in self._states_of(partition)
            if state.pending
        ]
        waiting.sort(key=lambda entry: (cast(datetime, entry[0]), entry[1]))
        return _Run(run_at, [therapist_id for _, therapist_id in waiting], time.perf_counter())

    def _plan(
        self, turn: list[int], run_at: datetime
    ) -> tuple[list[tuple[TherapistState, SendEmail]], list[tuple[TherapistState, BookCall]]]:
        """The emails and calls for these therapists, each on its current state."""
        interval = self.settings.contact_interval
        planned: list[tuple[TherapistState, SendEmail]] = []
        calls: list[tuple[TherapistState, BookCall]] = []
        for therapist_id in turn:
            self.gate.check()
            state = self.table.get(therapist_id)
            if not isinstance(state, TherapistState) or not state.pending:
                continue
            updated = state.copy()
            reason = updated.phone_reason
            if reason is not None:
                # Email cannot reach them, or they want none: with phone hours, a call for what waits.
                call = updated.plan_phone_call(
                    batching.derived_key(f"{reason}_call", updated.therapist_id, run_at.isoformat()), run_at
                )
                if call is not None:
                    calls.append((updated, call))
                continue
            if not self._window_open(updated, run_at):
                continue
            decision = updated.plan_contact_email(run_at, interval)
            if decision is not None:
                planned.append((updated, decision))
        return planned, calls

    def _window_open(self, state: TherapistState, at: datetime) -> bool:
        window = self.settings.send_window
        if window is None:
            return True
        return send_window.is_open(window, self._zone_of(state), at)

    def _zone_of(self, state: TherapistState) -> tzinfo:
        """The therapist's time zone (validated at ingest), else ``COMM_TIMEZONE``."""
        name = state.profile.timezone if state.profile is not None else None
        try:
            return ZoneInfo(name) if name else cast(tzinfo, self.settings.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return cast(tzinfo, self.settings.timezone)

    def _states_of(self, partition: int) -> list[TherapistState]:
        """The therapists whose inbox messages arrive on ``partition`` (the table may
        also hold standby copies of other partitions' therapists)."""
        partitions = self.settings.partitions
        return [
            value
            for key, value in list(self.table.items())
            if isinstance(value, TherapistState) and partition_of(key, partitions) == partition
        ]
