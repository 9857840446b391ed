"""Wires the service together: the one place that builds engines, mailers,
renderers and agents from settings (nothing is created at import time)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import faust
from mode import Service

from domain.retry import RetryPolicy
from streams.agents.commands import CommandAgent
from streams.agents.ingest import matching_ingest, therapist_ingest
from streams.agents.ingest_consumer import IngestConsumer
from streams.agents.sender import SenderAgent
from streams.agents.therapist import TherapistAgent
from streams.agents.ticks import send_ticks
from streams.api.pages import serve_api
from streams.api.tracking import serve_tracking
from streams.api.unsubscribe import serve_unsubscribe
from streams.clock import utcnow
from streams.delivery.loop import DeliveryService
from streams.delivery.mailer import Mailer, smtp_mailers
from streams.delivery.process import DeliveryProcess
from streams.delivery.relay import OutboxRelay
from streams.delivery.scheduled import ScheduledWork
from streams.delivery.store import SqlDeliveryStore
from streams.delivery.wakeups import Wakeups
from streams.email.context import Identity
from streams.email.rendering import Renderer
from streams.email.unsubscribe import OptOut
from streams.kafka.app import create_app
from streams.kafka.own_producer import OwnProducer
from streams.kafka.table import declare_therapist_table
from streams.kafka.topics import declare_topics
from streams.ops.interpreter import freeze_startup
from streams.ops.metrics import Metrics, PrometheusMetrics, serve_metrics
from streams.ops.web import serve_probes
from streams.persistence.call_booking import CallPolicy
from streams.persistence.db import Database
from streams.persistence.delivery_queue import SendWindowPolicy
from streams.persistence.outbox import Channels
from streams.settings import Settings

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def open_database(settings: Settings) -> Database:
    return Database(settings.database_url.get_secret_value())


def call_policy(settings: Settings) -> CallPolicy:
    """The booking rules of phone calls, for the agents and the scheduled work."""
    return CallPolicy(
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


def retry_policy(settings: Settings) -> RetryPolicy:
    """When a failed send is tried again, and how often."""
    return RetryPolicy(settings.max_send_attempts, settings.retry_backoff_base, settings.retry_backoff_max)


def sender_identity(settings: Settings) -> Identity:
    return Identity(settings.sender_email, settings.sender_name, OptOut.from_settings(settings))


@dataclass
class DeliveryPorts:
    """What delivery needs, in the worker or in its delivery process."""

    database: Database
    mailers: list[Mailer]


def delivery_services(settings: Settings) -> DeliveryPorts:
    """The delivery process's own database and SMTP connections (the child shares
    nothing with its parent but wake-ups)."""
    return DeliveryPorts(open_database(settings), smtp_mailers(settings))


def child_delivery(
    settings: Settings, channels: Channels, worker_id: str, wakeups: Wakeups, metrics: Metrics
) -> tuple[DeliveryService, Callable[[], None]]:
    """The delivery loop of the delivery process, built in the child: its own
    database and SMTP connections, its counts forwarded to the worker (``metrics``);
    and what to close when it ends."""
    ports = delivery_services(settings)
    delivery = build_delivery(
        settings,
        ports.database,
        ports.mailers,
        channels,
        wakeups,
        worker_id,
        utcnow,
        claim_ahead=True,
        metrics=metrics,
    )
    return delivery, ports.database.dispose


def build_delivery(
    settings: Settings,
    database: Database,
    mailers: Sequence[Mailer],
    channels: Channels,
    wakeups: Wakeups,
    worker_id: str,
    clock: Callable[[], datetime],
    *,
    claim_ahead: bool = False,
    metrics: Metrics,
    loop: asyncio.AbstractEventLoop | None = None,
    beacon: Any = None,
) -> DeliveryService:
    """The one place a delivery loop is built: in the worker, and in the delivery process."""
    window = SendWindowPolicy.of(settings.send_window, settings.timezone, settings.send_window_confirmations)
    store = SqlDeliveryStore(database, worker_id, channels, retry_delay=settings.poll_interval, window=window)
    return DeliveryService(
        settings,
        store,
        mailers,
        retry_policy(settings),
        wakeups,
        clock,
        claim_ahead=claim_ahead,
        metrics=metrics,
        loop=loop,
        beacon=beacon,
    )


@dataclass
class Services:
    settings: Settings
    database: Database
    renderer: Renderer
    mailers: list[Mailer]
    call_policy: CallPolicy
    identity: Identity
    clock: Callable[[], datetime] = utcnow
    worker_id: str = field(default_factory=new_worker_id)
    wakeups: Wakeups = field(default_factory=Wakeups)
    metrics: PrometheusMetrics = field(default_factory=PrometheusMetrics)

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        return cls(
            settings=settings,
            database=open_database(settings),
            renderer=Renderer(settings.timezone, settings.template_dir),
            # With a delivery process the child opens its own connections.
            mailers=[] if settings.delivery_process else smtp_mailers(settings),
            call_policy=call_policy(settings),
            identity=sender_identity(settings),
        )


@dataclass
class ServiceApp:
    app: faust.App
    # Starts what must run only once the worker is fully up (tables recovered).
    on_ready: Callable[[], Awaitable[None]]


class ServiceWorker(faust.Worker):  # type: ignore[misc]
    """faust.Worker takes over ``app.on_startup_finished``; this chains ours after it."""

    def __init__(self, service_app: ServiceApp, **kwargs: Any) -> None:
        super().__init__(service_app.app, **kwargs)
        self._service_ready = service_app.on_ready

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        await self._service_ready()
        freeze_startup()  # streams.ops.interpreter


def build_app(services: Services) -> ServiceApp:
    settings = services.settings
    clock = services.clock
    app = create_app(settings)
    probes = serve_probes(app, settings, services.database)  # before any other page
    metrics = services.metrics
    serve_metrics(app, metrics, services.database, clock, page=settings.web_enabled)
    topics = declare_topics(app, settings)
    table = declare_therapist_table(app, settings)
    serve_api(app, settings, services.database, table, clock)  # /api/…, when a token is configured
    channels = Channels(events=topics.events.get_topic_name(), inbox=topics.inbox.get_topic_name())
    serve_tracking(app, settings, services.database, channels.events, services.wakeups, clock)  # /t/…, opt-in
    serve_unsubscribe(app, settings, services.database, topics.inbox)  # /unsubscribe/…, when configured

    # The input topics are read by a consumer of aiokafka's own, in large batches
    # (streams.agents.ingest_consumer), started with the other runtime services.
    inputs = IngestConsumer(
        settings,
        {
            topics.matching.get_topic_name(): matching_ingest(topics, clock, settings, metrics),
            topics.therapists.get_topic_name(): therapist_ingest(topics, clock, settings, metrics),
        },
        loop=app.loop,
        beacon=app.beacon,
    )
    app.agent(topics.inbox, name="therapists")(
        TherapistAgent(settings, topics, table, clock, metrics=metrics, gate=app.table_gate)
    )
    app.agent(topics.commands, name="commands")(
        CommandAgent(
            topics,
            services.database,
            channels,
            services.wakeups,
            clock,
            services.call_policy,
            settings,
            metrics=metrics,
            render=services.renderer.render,
            identity=services.identity,
        )
    )
    app.agent(topics.send_commands, name="sender")(
        SenderAgent(
            settings,
            topics,
            services.database,
            services.renderer,
            channels,
            services.wakeups,
            clock,
            services.call_policy,
            services.identity,
            metrics=metrics,
        )
    )

    inbox = topics.inbox.get_topic_name()

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: object, assigned: set[Any], **kwargs: object) -> None:
        owned = sorted(tp.partition for tp in assigned if tp.topic == inbox)
        log.info("worker %s owns inbox partitions %s", services.worker_id, owned)

    async def tick() -> None:
        # Not before the inputs that were waiting at the start are in the inbox: a
        # batch run caught up after a restart must see the requests a stopped
        # worker read but did not commit.
        if inputs.caught_up:
            await send_ticks(app, topics, clock)

    app.timer(settings.tick_interval.total_seconds(), name="batch-run-ticks")(tick)

    async def on_startup_finished() -> None:
        delivery: Service
        if settings.delivery_process:
            delivery = DeliveryProcess(
                settings,
                channels,
                services.wakeups,
                services.worker_id,
                child_delivery,
                metrics=metrics,
                loop=app.loop,
                beacon=app.beacon,
            )
        else:
            delivery = build_delivery(
                settings,
                services.database,
                services.mailers,
                channels,
                services.wakeups,
                services.worker_id,
                clock,
                metrics=metrics,
                loop=app.loop,
                beacon=app.beacon,
            )
        relay = OutboxRelay(
            settings,
            services.database,
            OwnProducer(settings),
            channels.events,
            services.wakeups.relay,
            services.worker_id,
            clock,
            metrics=metrics,
            loop=app.loop,
            beacon=app.beacon,
        )
        scheduled = ScheduledWork(
            settings,
            services.database,
            channels,
            services.wakeups,
            clock,
            services.call_policy,
            loop=app.loop,
            beacon=app.beacon,
        )
        await app.add_runtime_dependency(delivery)
        await app.add_runtime_dependency(relay)
        probes.relay = relay
        await app.add_runtime_dependency(scheduled)
        await app.add_runtime_dependency(inputs)
        probes.inputs = inputs
        app.add_future(ready_once_reading())

    async def ready_once_reading() -> None:
        # Faust's group reads the commands by now; the inputs' group joins on its own.
        await inputs.wait_joined()
        log.info("commsvc worker ready (id %s, app %s)", services.worker_id, settings.app_id)

    return ServiceApp(app, on_startup_finished)
