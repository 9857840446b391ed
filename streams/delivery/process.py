"""Delivery in a process of its own (``COMM_DELIVERY_PROCESS``).

The worker's event loop and its database threads share one GIL: while they
consume, render, store and relay, the delivery loop waits for its turn between
SMTP round trips. Run in a child process, delivery has a core (and a GIL) of its
own. It needs nothing from the parent but wake-ups: the queue, the claims and the
outbox are in the database, so what it does is exactly what the in-process
``DeliveryService`` does (it *is* that service, in another process).

Three pipes join the processes:
- parent -> child: a byte whenever work was added (the in-process ``Wakeups``),
  and end-of-file when the parent is gone, even killed: the child then finishes
  the email in hand, records what it sent, releases its other claims and exits;
- child -> parent: a byte when sends were recorded, so the parent's outbox relay
  publishes them at once;
- child -> parent: what the child's delivery loop counts (``ForwardedMetrics``),
  one message per count, read by a thread of the parent into the worker's metrics,
  so that ``/metrics`` shows the child's sends.

The child ignores SIGINT and SIGTERM (a Ctrl-C reaches the whole process group):
it stops when its parent tells it to, or dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from mode import Service

from streams.delivery.loop import DeliveryService, stop_grace
from streams.delivery.wakeups import Wakeups
from streams.ops.interpreter import freeze_startup, tune_delivery_process
from streams.ops.logs import configure_logging
from streams.ops.metrics import NO_METRICS, ForwardedMetrics, Metrics, apply_forwarded
from streams.persistence.outbox import Channels
from streams.settings import Settings

log = logging.getLogger(__name__)

# Builds the child's delivery loop from its settings (it opens its own database and
# SMTP connections) and the metrics it counts into, and what to close when it ends.
ChildDelivery = Callable[[Settings, Channels, str, Wakeups, Metrics], tuple[DeliveryService, Callable[[], None]]]

# How long a stopping parent waits for the child beyond the child's own grace for
# the emails in hand (see streams.delivery.loop.stop_grace).
STOP_MARGIN = 10.0


class DeliveryProcess(Service):  # type: ignore[misc]
    """The parent's side: starts the child, passes wake-ups both ways, stops it,
    and starts a new one if it dies (its claims expire and are taken over)."""

    def __init__(
        self,
        settings: Settings,
        channels: Channels,
        wakeups: Wakeups,
        worker_id: str,
        build_child: ChildDelivery,
        *,
        metrics: Metrics = NO_METRICS,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics  # the child's counts are counted here
        # Builds the child's delivery loop, in the child: a module-level function
        # (the spawned child receives it by name), from the one wiring place.
        self.build_child = build_child
        self.settings = settings
        self.channels = channels
        self.wakeups = wakeups
        self.worker_id = worker_id
        self.process: Any = None
        self.spawned_at = 0.0
        self._pipes: tuple[Connection, Connection] | None = None
        self._ended = asyncio.Event()

    async def on_start(self) -> None:
        self._spawn()

    def _spawn(self) -> None:
        # A spawned child inherits only the ends handed to it, so the parent's end
        # closing (also by its death) is an end-of-file there.
        context = multiprocessing.get_context("spawn")
        child_reads, to_child = context.Pipe(duplex=False)
        from_child, child_writes = context.Pipe(duplex=False)
        counts, child_counts = context.Pipe(duplex=False)
        self.process = context.Process(
            target=run_child,
            args=(
                self.settings,
                self.channels,
                self.worker_id,
                self.build_child,
                child_reads,
                child_writes,
                child_counts,
            ),
            name="commsvc-delivery",
            daemon=True,
        )
        self.process.start()
        child_reads.close()
        child_writes.close()
        child_counts.close()
        threading.Thread(
            target=_count_forwarded, args=(counts, self.metrics), name="commsvc-delivery-metrics", daemon=True
        ).start()
        self._pipes = (to_child, from_child)
        os.set_blocking(to_child.fileno(), False)
        self._ended.clear()
        _watch(self.loop, from_child.fileno(), on_data=self.wakeups.relay.set, on_end=self._ended.set)
        self.spawned_at = time.monotonic()
        self.wakeups.delivery.set()  # the new child looks for work at once
        log.info("delivery runs in process %s", self.process.pid)

    def _close_pipes(self) -> None:
        if self._pipes is not None:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(self._pipes[1].fileno())
            for pipe in self._pipes:
                pipe.close()
            self._pipes = None

    @Service.task
    async def _supervise(self) -> None:
        pause = 1.0
        while not self.should_stop:
            await self.wait_for_stopped(self._ended.wait())
            if self.should_stop:
                return
            await asyncio.to_thread(self.process.join)
            log.error("the delivery process ended (exit code %s); starting a new one", self.process.exitcode)
            self._close_pipes()
            if time.monotonic() - self.spawned_at > 60:
                pause = 1.0  # it ran well for a while: not a crash loop
            await self.sleep(pause)
            pause = min(pause * 2, 30.0)
            if not self.should_stop:
                self._spawn()

    @Service.task
    async def _forward_wakeups(self) -> None:
        while not self.should_stop:
            await self.wait_for_stopped(self.wakeups.delivery.wait())
            self.wakeups.delivery.clear()
            if self._pipes is not None and not self.should_stop:
                # A full pipe already holds a wake-up; a broken one is the supervisor's.
                with contextlib.suppress(OSError):
                    os.write(self._pipes[0].fileno(), b"w")

    async def on_stop(self) -> None:
        if self._pipes is not None:
            self._pipes[0].close()  # end-of-file: the child finishes and exits
        timeout = stop_grace(self.settings) + STOP_MARGIN
        await asyncio.to_thread(self.process.join, timeout)
        if self.process.is_alive():
            log.warning("delivery process did not stop within %.0fs; killing it", timeout)
            self.process.kill()
            await asyncio.to_thread(self.process.join)
        self._close_pipes()


def _watch(
    loop: asyncio.AbstractEventLoop, fd: int, *, on_data: Callable[[], object], on_end: Callable[[], object]
) -> None:
    """Call ``on_data`` whenever bytes arrive on the pipe ``fd``, and ``on_end`` once
    at its end-of-file (every write end closed: the other process is gone)."""

    def readable() -> None:
        try:
            data = os.read(fd, 512)
        except OSError:
            data = b""
        if data:
            on_data()
        else:
            loop.remove_reader(fd)
            on_end()

    loop.add_reader(fd, readable)


def _count_forwarded(counts: Connection, metrics: Metrics) -> None:
    """Count what the child forwards until it is gone (end-of-file). A thread: a
    message is read whole, however the child's writes arrive, without blocking the
    event loop; the metrics are thread-safe."""
    try:
        while True:
            apply_forwarded(metrics, counts.recv())
    except (EOFError, OSError):
        pass  # the child ended
    except Exception as exc:  # a message cut short by the child's death
        log.debug("metrics from the delivery process: %s", type(exc).__name__)
    finally:
        counts.close()


def run_child(
    settings: Settings,
    channels: Channels,
    worker_id: str,
    build: ChildDelivery,
    wakes: Connection,
    back: Connection,
    counts: Connection,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # COMM_LOG_LEVEL, not the parent's root level when it spawned the child: that
    # let DEBUG through, so the child logged every email it sent at any level.
    configure_logging(settings.log_level, settings.log_format)
    tune_delivery_process()
    try:
        asyncio.run(_serve(settings, channels, worker_id, build, wakes.fileno(), back.fileno(), counts))
    finally:
        wakes.close()
        back.close()
        counts.close()


async def _serve(
    settings: Settings,
    channels: Channels,
    worker_id: str,
    build: ChildDelivery,
    wake_fd: int,
    back_fd: int,
    counts: Connection,
) -> None:
    loop = asyncio.get_running_loop()
    wakeups = Wakeups()
    parent_gone = asyncio.Event()

    os.set_blocking(back_fd, False)

    async def tell_relay() -> None:
        while True:
            await wakeups.relay.wait()
            wakeups.relay.clear()
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(back_fd, b"r")

    _watch(loop, wake_fd, on_data=wakeups.delivery.set, on_end=parent_gone.set)
    delivery, close = build(settings, channels, worker_id, wakeups, ForwardedMetrics(counts.send))
    freeze_startup()
    relay = asyncio.ensure_future(tell_relay())
    try:
        await delivery.start()
        await parent_gone.wait()
        await delivery.stop()
    finally:
        relay.cancel()
        close()
