"""``commsvc status``: one screen on how the service is doing, from the database
(``streams.ops.status_database``) and the broker (``streams.ops.status_broker``),
read at the same time. No address, name or patient detail is shown.

When one of them does not answer, the other's part is still shown, the missing part
says what did not answer, and the command exits with 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from streams.ops import status_broker, status_database
from streams.ops.status_broker import BrokerStatus, TopicLag
from streams.ops.status_database import DatabaseStatus
from streams.ops.topic_reader import Broker, BrokerUnavailable
from streams.persistence.db import Database, is_transient
from streams.settings import Settings

T = TypeVar("T")
WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Status:
    as_of: datetime
    zone: tzinfo
    window: timedelta
    database: DatabaseStatus | None
    broker: BrokerStatus | None
    # What did not answer, by part ("database", "broker").
    errors: dict[str, str] = field(default_factory=dict)


async def _in_daemon_thread(work: Callable[[], T]) -> T:
    """``work()`` in a thread of its own that does not keep the process alive: a
    database that never answers must not keep the command from ending."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:
            outcome = partial(future.set_exception, exc)
        else:
            outcome = partial(future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the command gave up waiting, and its loop is closed
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name="commsvc-status-database", daemon=True).start()
    return await future


async def read_database(settings: Settings, database: Database, now: datetime, answer_within: float) -> DatabaseStatus:
    window = min(WINDOW, settings.outbox_retention)
    work = partial(
        status_database.read,
        now=now,
        zone=settings.timezone,
        events_topic=settings.topic_events,
        window=window,
        timeout=answer_within,
    )
    limit = 2 * answer_within + 5
    where = f"the database at {settings.database_url_display}"
    try:
        # PostgreSQL connects within 5 s and runs each statement within ``timeout``.
        return await asyncio.wait_for(_in_daemon_thread(partial(database.transaction, work)), limit)
    except TimeoutError:
        raise DatabaseUnavailable(f"{where} did not answer within {limit:g}s") from None
    except SQLAlchemyError as exc:
        cause = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        if "does not exist" in cause or "no such table" in cause:
            raise DatabaseUnavailable(f"{where} has no schema yet ({cause}); run commsvc migrate") from None
        if is_transient(exc):
            raise DatabaseUnavailable(f"{where} is not reachable ({cause})") from None
        raise DatabaseUnavailable(f"{where} refused the query ({type(exc).__name__}: {cause})") from None


class DatabaseUnavailable(RuntimeError):
    """The database could not be read; the message says what happened."""


async def read_broker(broker: Broker, now: datetime, progress: Callable[[str], None]) -> BrokerStatus:
    return await status_broker.read(broker, now - WINDOW, progress)


async def collect(
    settings: Settings,
    database: Database,
    now: datetime,
    *,
    answer_within: float,
    progress: Callable[[str], None],
) -> Status:
    broker = Broker(settings, answer_within)
    progress(f"asking the database ({settings.database_url_display}) and the broker ({broker.address})")
    from_database, from_broker = await asyncio.gather(
        read_database(settings, database, now, answer_within),
        read_broker(broker, now, progress),
        return_exceptions=True,
    )
    errors = {}
    for part, outcome in (("database", from_database), ("broker", from_broker)):
        if isinstance(outcome, DatabaseUnavailable | BrokerUnavailable):
            errors[part] = str(outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
    return Status(
        as_of=now,
        zone=settings.timezone,
        window=min(WINDOW, settings.outbox_retention),
        database=from_database if isinstance(from_database, DatabaseStatus) else None,
        broker=from_broker if isinstance(from_broker, BrokerStatus) else None,
        errors=errors,
    )


# -- JSON -------------------------------------------------------------------------


def _time(value: datetime | None, zone: tzinfo) -> str | None:
    return None if value is None else value.astimezone(zone).isoformat()


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else round(value.total_seconds(), 3)


def as_json(status: Status) -> dict[str, Any]:
    zone = status.zone
    document: dict[str, Any] = {
        "as_of": _time(status.as_of, zone),
        "timezone": str(zone),
        "emails": None,
        "failures_24h": None,
        "alerts_24h": None,
        "outbox": None,
        "calls_today": None,
        "dlq_24h": None,
        "consumer_lag": None,
        "suppressed_addresses": None,
        "errors": dict(status.errors),
    }
    db = status.database
    if db is not None:
        oldest = db.oldest_queued
        document["emails"] = {
            "by_status": dict(db.emails),
            "oldest_queued": None
            if oldest is None
            else {
                "email_id": oldest.email_id,
                "kind": oldest.kind,
                "queued_at": _time(oldest.queued_at, zone),
                "waiting_seconds": _seconds(max(status.as_of - oldest.queued_at, timedelta(0))),
                "next_attempt_at": _time(oldest.next_attempt_at, zone),
                "retry_count": oldest.retry_count,
            },
            "most_overdue_seconds": _seconds(db.most_overdue),
        }
        since = _time(db.since, zone)
        document["failures_24h"] = {
            "since": since,
            "attempts": db.failed_attempts,
            "failed_for_good": db.failed_for_good,
        }
        document["alerts_24h"] = {"since": since, "total": sum(db.alerts.values()), "by_code": dict(db.alerts)}
        row = db.outbox_oldest
        document["outbox"] = {
            "backlog": db.outbox_backlog,
            "oldest": None
            if row is None
            else {
                "id": row.id,
                "topic": row.topic,
                "created_at": _time(row.created_at, zone),
                "age_seconds": _seconds(db.outbox_oldest_age),
            },
        }
        document["calls_today"] = {
            "date": db.day.isoformat(),
            "total": sum(db.calls_today.values()),
            "by_status": dict(db.calls_today),
        }
    broker = status.broker
    if broker is not None:
        document["dlq_24h"] = {
            "since": _time(broker.dlq_since, zone),
            "records": broker.dlq_records,
            "by_source": dict(broker.dlq_by_source),
        }
        document["consumer_lag"] = {
            "group": broker.group,
            "topics": {
                lag.topic: {
                    "group": lag.group,
                    "lag": lag.lag,
                    "partitions": {
                        str(p): {"committed": part.committed, "end": part.end, "lag": part.lag}
                        for p, part in lag.partitions.items()
                    },
                }
                for lag in broker.lag
            },
        }
        document["suppressed_addresses"] = broker.suppressed_addresses
    return document


# -- text -------------------------------------------------------------------------


def duration(value: timedelta) -> str:
    """``3d 4h``, ``2h 05m``, ``3m 10s``, ``45s``."""
    seconds = max(int(value.total_seconds()), 0)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def _window(value: timedelta) -> str:
    """``24h`` (or a shorter outbox retention)."""
    return f"{int(value.total_seconds() // 3600)}h" if value >= timedelta(hours=1) else duration(value)


def _counts(counts: dict[str, int]) -> str:
    return " · ".join(f"{name} {count}" for name, count in counts.items()) or "none"


def _local(value: datetime, zone: tzinfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def as_text(status: Status) -> str:
    zone = status.zone
    hours = _window(status.window)
    lines = [f"commsvc status at {_local(status.as_of, zone)} ({zone})", ""]
    db = status.database
    if db is None:
        lines.append(f"Database        not available: {status.errors.get('database', 'unknown')}")
    else:
        lines.append(f"Emails          {_counts(db.emails)}")
        oldest = db.oldest_queued
        if oldest is not None:
            waited = duration(status.as_of - oldest.queued_at)
            retry = f", {oldest.retry_count} failed attempt(s)" if oldest.retry_count else ""
            following = f", next attempt {_local(oldest.next_attempt_at, zone)}" if oldest.next_attempt_at else ""
            lines.append(f"  oldest queued #{oldest.email_id} ({oldest.kind}), waiting {waited}{following}{retry}")
        if db.most_overdue is not None:
            lines.append(f"  most overdue  due {duration(db.most_overdue)} ago")
        alerts = f" ({_counts(db.alerts)})" if db.alerts else ""
        lines.append(
            f"{'Last ' + hours:<16}failed attempts {db.failed_attempts} · failed for good {db.failed_for_good} · "
            f"alerts {sum(db.alerts.values())}{alerts}"
        )
        outbox = f"Outbox          backlog {db.outbox_backlog}"
        if db.outbox_oldest is not None:
            age = f", {duration(db.outbox_oldest_age)} old" if db.outbox_oldest_age is not None else ""
            outbox += f" (oldest #{db.outbox_oldest.id} for {db.outbox_oldest.topic}{age})"
        lines.append(outbox)
        calls = f" ({_counts(db.calls_today)})" if db.calls_today else ""
        lines.append(f"Calls today     {sum(db.calls_today.values())}{calls}")
    broker = status.broker
    if broker is None:
        lines.append(f"Broker          not available: {status.errors.get('broker', 'unknown')}")
    else:
        sources = f" ({_counts(broker.dlq_by_source)})" if broker.dlq_by_source else ""
        lines.append(f"DLQ             {broker.dlq_records} record(s) in the last 24h{sources}")
        lines.append(f"Consumer lag    {_lag_by_group(broker.lag)}")
        lines.append(f"Suppressed      {broker.suppressed_addresses} address(es)")
    return "\n".join(lines)


async def run_status(
    settings: Settings,
    database: Database,
    *,
    as_json_output: bool,
    answer_within: float,
    now: datetime,
    out: Callable[[str], None],
    progress: Callable[[str], None],
    err: Callable[[str], None],
) -> int:
    status = await collect(settings, database, now, answer_within=answer_within, progress=progress)
    out(json.dumps(as_json(status), ensure_ascii=False, indent=2) if as_json_output else as_text(status))
    for part, error in status.errors.items():
        err(f"{part}: {error}")
    return 1 if status.errors else 0


def _lag_by_group(lags: list[TopicLag]) -> str:
    """``a 1 · b 0 (group g1) · c 0 (group g2)``: each group after its topics."""
    by_group: dict[str, list[TopicLag]] = {}
    for lag in lags:
        by_group.setdefault(lag.group, []).append(lag)
    return " · ".join(
        " · ".join(f"{t.topic} {t.lag}" for t in topics) + f" (group {group})" for group, topics in by_group.items()
    )
