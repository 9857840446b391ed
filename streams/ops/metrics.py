"""Metrics (Prometheus): what the service counts, and ``GET /metrics``.

``Metrics`` is the port the agents, the delivery loop and the outbox relay count
through (the base counts nothing: tests and tools that measure nothing use it);
``PrometheusMetrics`` is the one the worker serves. Labels name kinds, classes,
outcomes, codes and configured topics, never an address, a name or an id.

Where each count is made:
- input events and dead letters: in the agents, where the outcome is known;
- emails created, phone-call events and alerts: when the outbox relay publishes
  the ``communication.*`` event that reports them (``reported``). Each is written
  in the transaction of the change it reports, so what is counted was committed,
  wherever it happened (agents, scheduled work, the delivery process);
- sends, send failures, SMTP latency and waits for the send rate: in the
  delivery loop. With COMM_DELIVERY_PROCESS the loop runs in a child process, whose
  ``ForwardedMetrics`` passes each count to the worker (``FORWARDED``), which
  counts it in its own registry: one process serves them all.

The database gauges (queue depth, outbox backlog and their ages) are read at scrape
time, in the scrape's thread, at most once per ``BACKLOG_MAX_AGE``: they are what
the database holds, the same from every worker (aggregate them with ``max``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, cast

import faust
from aiohttp.web import Response as AiohttpResponse
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.web import Request, Response, View
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from domain.decisions import CONFIRMATION, CONTACT_REQUEST, FOLLOW_UP, MANUAL
from streams.ops.logs import ThrottledWarning
from streams.persistence import backlog
from streams.persistence.db import Database

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """commsvc_input_events_total{outcome}"""

    ACCEPTED = "accepted"  # applied
    DUPLICATE = "duplicate"  # an event_id seen before: changed nothing
    REJECTED = "rejected"  # invalid (dead-lettered), or a command refused with a reason
    ERROR = "error"  # an internal failure (dead-lettered for a person)


class SendFailure(enum.StrEnum):
    """commsvc_email_send_failures_total{class}"""

    TEMPORARY = "temporary"  # the server or connection failed the attempt; retried with backoff
    PERMANENT = "permanent"  # the message or recipient was refused: failed for good
    OUTAGE = "outage"  # no SMTP session: the email went back to the queue untouched


KINDS = (CONTACT_REQUEST, FOLLOW_UP, CONFIRMATION, MANUAL)

# Faust's sensor's metrics are named faust_* whatever the app id.
FAUST_PREFIX = "faust"
BACKLOG_MAX_AGE = 5.0  # seconds

_EVENT_TYPE = '"event_type":"'
_PHONE_CALL = "communication.phone_call_"


class Metrics:
    """What the service counts; this base counts nothing."""

    def input_event(self, topic: str, outcome: Outcome) -> None:
        """An input (event or command) consumed from ``topic``, with its outcome."""

    def dead_lettered(self, source: str) -> None:
        """A record of ``source`` (its topic) went to the DLQ."""

    def email_created(self, kind: str) -> None: ...

    def email_sent(self, kind: str) -> None:
        """The SMTP server accepted an email."""

    def send_failed(self, kind: str, failure: SendFailure) -> None:
        """A send attempt failed."""

    def smtp_send_took(self, seconds: float) -> None:
        """One message's SMTP transaction, accepted or refused."""

    def rate_waited(self, seconds: float) -> None:
        """Delivery waited for a send slot of COMM_SMTP_RATE_LIMIT."""

    def batch_run_took(self, seconds: float) -> None:
        """A due batch run on one partition, from the tick to the table written."""

    def phone_call(self, event: str) -> None:
        """A phone-call event (scheduled, rescheduled, reminder, completed, cancelled, …)."""

    def alert(self, code: str) -> None: ...

    def reported(self, value: str) -> None:
        """The relay published ``value`` (an output envelope): count what it reports."""
        try:
            counted = _counted(value)
        except (ValueError, KeyError, TypeError, AttributeError):
            return  # not an envelope this counts; metrics never stop the relay
        if counted is not None:
            count, label = counted
            getattr(self, count)(label)


def _counted(value: str) -> tuple[str, str] | None:
    """What an output event counts (and its label); None for the others, found
    without decoding them (the relay publishes hundreds a second)."""
    at = value.find(_EVENT_TYPE)
    if at < 0:
        return None
    start = at + len(_EVENT_TYPE)
    event_type = value[start : value.find('"', start)]
    if event_type not in ("communication.email_created", "communication.alert") and not event_type.startswith(
        _PHONE_CALL
    ):
        return None
    payload = json.loads(value)["payload"]
    if event_type == "communication.email_created":
        return "email_created", _label(payload["kind"])
    if event_type == "communication.alert":
        return "alert", _label(payload["code"])
    return "phone_call", _label(event_type.removeprefix(_PHONE_CALL))


def _label(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a label")
    return value[:64]


NO_METRICS = Metrics()


class PrometheusMetrics(Metrics):
    """The service's metrics in a registry of its own (with Faust's sensor's, and
    the process's, once ``serve_metrics`` wired them)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.input_events = Counter(
            "commsvc_input_events", "Inputs consumed, by topic and outcome.", ["topic", "outcome"], registry=r
        )
        self.dlq_records = Counter(
            "commsvc_dlq_records", "Records dead-lettered, by source topic.", ["source"], registry=r
        )
        self.emails_created = Counter("commsvc_emails_created", "Emails created, by kind.", ["kind"], registry=r)
        self.emails_sent = Counter(
            "commsvc_emails_sent", "Emails the SMTP server accepted, by kind.", ["kind"], registry=r
        )
        self.send_failures = Counter(
            "commsvc_email_send_failures",
            "Failed send attempts, by kind and class (temporary, permanent, outage).",
            ["kind", "class"],
            registry=r,
        )
        self.batch_run_duration = Histogram(
            "commsvc_batch_run_duration_seconds",
            "Due batch runs (one partition each), from the tick to the table written.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
            registry=r,
        )
        self.smtp_send_duration = Histogram(
            "commsvc_smtp_send_duration_seconds",
            "SMTP transactions of one message each, accepted or refused.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.rate_wait = Counter(
            "commsvc_smtp_rate_wait_seconds",
            "Seconds delivery waited for a send slot of COMM_SMTP_RATE_LIMIT (summed over connections).",
            registry=r,
        )
        self.phone_calls = Counter("commsvc_phone_calls", "Phone-call events, by event.", ["event"], registry=r)
        self.alerts = Counter("commsvc_alerts", "Alerts raised, by code.", ["code"], registry=r)
        for kind in KINDS:  # present from the start, so that rate() sees the first one
            self.emails_created.labels(kind)
            self.emails_sent.labels(kind)
            for failure in SendFailure:
                self.send_failures.labels(kind, failure)

    def input_event(self, topic: str, outcome: Outcome) -> None:
        self.input_events.labels(topic, outcome).inc()

    def dead_lettered(self, source: str) -> None:
        self.dlq_records.labels(source).inc()

    def email_created(self, kind: str) -> None:
        self.emails_created.labels(kind).inc()

    def email_sent(self, kind: str) -> None:
        self.emails_sent.labels(kind).inc()

    def send_failed(self, kind: str, failure: SendFailure) -> None:
        self.send_failures.labels(kind, failure).inc()

    def smtp_send_took(self, seconds: float) -> None:
        self.smtp_send_duration.observe(seconds)

    def rate_waited(self, seconds: float) -> None:
        self.rate_wait.inc(seconds)

    def batch_run_took(self, seconds: float) -> None:
        self.batch_run_duration.observe(seconds)

    def phone_call(self, event: str) -> None:
        self.phone_calls.labels(event).inc()

    def alert(self, code: str) -> None:
        self.alerts.labels(code).inc()


# --- the delivery process --------------------------------------------------------

# What the delivery loop counts; the only calls the delivery process forwards.
FORWARDED = frozenset({"email_sent", "send_failed", "smtp_send_took", "rate_waited"})
Forwarded = tuple[str, tuple[Any, ...]]


class ForwardedMetrics(Metrics):
    """The delivery process's metrics: each count goes to the worker (``send``),
    which counts it (``apply_forwarded``). Sent one by one, as they happen: nothing
    waits in the child to be lost when it dies."""

    def __init__(self, send: Callable[[Forwarded], None]) -> None:
        self._send = send

    def _forward(self, name: str, *args: Any) -> None:
        with contextlib.suppress(OSError, ValueError):  # the worker is gone; so is its /metrics
            self._send((name, args))

    def email_sent(self, kind: str) -> None:
        self._forward("email_sent", kind)

    def send_failed(self, kind: str, failure: SendFailure) -> None:
        self._forward("send_failed", kind, failure)

    def smtp_send_took(self, seconds: float) -> None:
        self._forward("smtp_send_took", seconds)

    def rate_waited(self, seconds: float) -> None:
        self._forward("rate_waited", seconds)


def apply_forwarded(metrics: Metrics, update: object) -> None:
    """Count a call ``ForwardedMetrics`` passed on (anything else is ignored)."""
    match update:
        case (str() as name, tuple() as args) if name in FORWARDED:
            getattr(metrics, name)(*args)
        case _:
            log.warning("ignored a metrics update from the delivery process")


# --- what the database holds -------------------------------------------------------


class BacklogCollector(Collector):
    """The queue and outbox gauges, measured when scraped (in the scraping thread,
    not on the event loop), at most every ``max_age`` seconds however many scrapers
    ask. One scrape measures at a time: the others report the last measurement
    meanwhile, so a database that hangs holds one thread, not one per scrape. While
    the database does not answer, the gauges are left out (``absent()`` says so)
    rather than reported stale for longer than ``STALE_AFTER``."""

    STALE_AFTER = 30.0  # seconds

    def __init__(self, measure: Callable[[], backlog.Backlog], max_age: float = BACKLOG_MAX_AGE) -> None:
        self.measure = measure
        self.max_age = max_age
        self._measuring = threading.Lock()
        self._measured: tuple[float, backlog.Backlog | None] = (-max_age, None)  # (when, what)
        self._warning = ThrottledWarning(log)

    def describe(self) -> Iterable[Metric]:
        return _families(None)

    def collect(self) -> Iterable[Metric]:
        at, measured = self._measured
        if time.monotonic() - at >= self.max_age and self._measuring.acquire(blocking=False):
            try:
                at, measured = self._measured = (time.monotonic(), self._measure())
            finally:
                self._measuring.release()
        if measured is None or time.monotonic() - at > self.STALE_AFTER:
            return []
        return _families(measured)

    def _measure(self) -> backlog.Backlog | None:
        try:
            return self.measure()
        except SQLAlchemyError as exc:
            self._warning("metrics: the database did not answer (%s); backlog gauges left out", type(exc).__name__)
            return None


def _families(measured: backlog.Backlog | None) -> list[Metric]:
    depth = GaugeMetricFamily(
        "commsvc_email_queue_depth", "Emails not yet sent or failed, by status.", labels=["status"]
    )
    oldest = GaugeMetricFamily(
        "commsvc_email_oldest_queued_seconds",
        "How long the most overdue queued email has been due (0: none is due).",
    )
    outbox = GaugeMetricFamily("commsvc_outbox_backlog", "Outbox messages not yet published.")
    outbox_oldest = GaugeMetricFamily(
        "commsvc_outbox_oldest_seconds", "How long the oldest unpublished outbox message has waited (0: none waits)."
    )
    if measured is not None:
        for status, count in measured.emails.items():
            depth.add_metric([status.value], count)
        oldest.add_metric([], measured.oldest_due.total_seconds() if measured.oldest_due else 0.0)
        outbox.add_metric([], measured.unpublished)
        waited = measured.oldest_unpublished
        outbox_oldest.add_metric([], waited.total_seconds() if waited else 0.0)
    return [depth, oldest, outbox, outbox_oldest]


# --- GET /metrics ------------------------------------------------------------------


def serve_metrics(
    app: faust.App,
    metrics: PrometheusMetrics,
    database: Database,
    clock: Callable[[], datetime],
    *,
    page: bool = True,
) -> None:
    """Faust's Prometheus sensor, the process's own metrics and the backlog into
    ``metrics``' registry, served at ``/metrics`` (rendered off the event loop)
    when ``page`` (the web server is on; after the probes, which choose its driver)."""
    registry = metrics.registry
    app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(registry, FAUST_PREFIX))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(BacklogCollector(lambda: database.transaction(backlog.measure, clock())))

    if not page:
        return

    async def metrics_page(view: View, request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.to_thread(encode, registry)
        return cast(Response, AiohttpResponse(body=body, headers={"Content-Type": content_type}))

    app.page("/metrics", name="metrics")(metrics_page)
