"""Delivery from a process of its own (COMM_DELIVERY_PROCESS) over several SMTP
connections at once (COMM_SMTP_CONNECTIONS): each email still goes out once, the
parent still reports every send, and the child never outlives its worker."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.e2e.harness import Service, WorkerProcess, plain_text
from tests.events import match_created, therapist_created
from tests.waiting import until

SPLIT = {"COMM_DELIVERY_PROCESS": "true", "COMM_SMTP_CONNECTIONS": "3"}


def children(pid: int) -> set[int]:
    """The live delivery processes of worker ``pid`` (from /proc; multiprocessing's
    resource tracker is a child too)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            listed = (task / "children").read_text()
        except FileNotFoundError:  # a thread that ended since the directory was listed
            continue
        found.update(int(c) for c in listed.split())
    return {c for c in found if alive(c) and b"spawn_main" in command_line(c)}


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:  # it ended meanwhile
        return b""


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state


async def one_request_each(service: Service, therapist_ids: range) -> None:
    for t in therapist_ids:
        await service.matches(match_created(t, t, "2026-01-01T10:00:00+01:00"))
    for t in therapist_ids:
        await service.therapists(therapist_created(t))


async def delivered_by_a_child(service: Service, therapists: int) -> tuple[WorkerProcess, int]:
    """A worker with its delivery process, once it delivered one email to each of
    ``therapists`` therapists."""
    worker = await service.up()
    [child] = children(worker.process.pid)
    await one_request_each(service, range(1, therapists + 1))
    await service.smtp_distinct_messages(therapists)
    return worker, child


async def sent_events(service: Service, count: int) -> set[int]:
    await service.collector.wait_for(
        lambda: len({e["payload"]["email_id"] for e in service.events("communication.email_sent")}) >= count,
        timeout=60,
        what=f"email_sent for {count} emails",
    )
    return {e["payload"]["email_id"] for e in service.events("communication.email_sent")}


async def test_delivery_process_sends_each_email_once_and_dies_with_its_worker(make_service):
    async with make_service(**SPLIT) as service:
        worker = await service.up()
        [child] = children(worker.process.pid)
        before = service.smtp.controller.opened
        await one_request_each(service, range(1, 41))
        await service.smtp_distinct_messages(40)
        # The child records the sends; the parent's relay reports them.
        assert len(await sent_events(service, 40)) == 40
        assert len(service.smtp.messages) == 40  # none twice
        for received in service.smtp.messages:
            [to] = received.rcpt_tos
            therapist_id = int(to.removeprefix("therapeut").split("@")[0])
            assert f"Pat{therapist_id}" in plain_text(received)
        assert service.smtp.controller.opened - before >= 2  # more than one connection was used
        assert service.query("SELECT status, count(*) FROM emails GROUP BY status") == [("gesendet", 40)]

        worker.kill()  # SIGKILL: the parent cannot tell the child anything
        await until(lambda: not alive(child), 30, "the delivery process ends with its worker")


async def test_a_delivery_process_that_dies_is_replaced(make_service):
    async with make_service(**SPLIT) as service:
        worker, first = await delivered_by_a_child(service, 10)
        os.kill(first, signal.SIGKILL)
        await service.wait_log("the delivery process ended")
        await until(lambda: len(children(worker.process.pid)) == 1, 30, "a new delivery process")
        assert children(worker.process.pid) != {first}
        await one_request_each(service, range(11, 21))
        await service.smtp_distinct_messages(20)
        assert len(await sent_events(service, 20)) == 20
        assert len(service.smtp.messages) == 20
        assert worker.running


async def test_sigterm_stops_the_worker_and_its_delivery_process(make_service):
    async with make_service(**SPLIT) as service:
        worker, child = await delivered_by_a_child(service, 5)
        assert worker.terminate(timeout=30) < 30
        assert worker.process.returncode == 0
        assert not alive(child)


async def test_the_delivery_process_logs_at_the_configured_level(make_service):
    async with make_service(**SPLIT, COMM_LOG_LEVEL="WARNING") as service:
        worker = service.worker()  # no ready line to wait for at WARNING
        # The child is spawned once the topics exist and the app starts.
        await until(lambda: children(worker.process.pid), 60, "the delivery process")
        await one_request_each(service, range(1, 6))
        await service.smtp_distinct_messages(5)
        logged = service.log_path.read_text()
        assert "sent to therapist" not in logged  # an INFO line per email
        assert " DEBUG " not in logged and " INFO " not in logged
