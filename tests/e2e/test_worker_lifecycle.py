"""Worker lifecycle: errors inside agents do not stop the stream or the shutdown."""

from __future__ import annotations

from tests.e2e.harness import Service, plain_text
from tests.events import match_created, therapist_created


async def test_agent_errors_are_dead_lettered_and_sigterm_still_stops_the_worker(service: Service):
    worker = await service.up()
    app_id = service.environ["COMM_APP_ID"]
    # Messages no producer of the service would write: each makes an agent fail.
    await service.publisher.send(f"{app_id}-therapist-inbox", b"1", b'{"kind": "no-such-kind", "therapist_id": 1}')
    await service.publisher.send(f"{app_id}-therapist-inbox", b"1", b"\x00not json")
    await service.publisher.send(f"{app_id}-send-commands", b"1", b'{"kind": "send_email"}')
    dead = await service.collector.wait_for(
        lambda: len(service.dead_letters()) >= 3 and service.dead_letters(), what="three dead letters"
    )
    assert {d["source_topic"] for d in dead} == {f"{app_id}-therapist-inbox", f"{app_id}-send-commands"}
    assert all(d["reason"].startswith("internal error: ") for d in dead)
    # The stream goes on.
    await service.therapists(therapist_created(1))
    await service.matches(match_created(1, 1, "2026-01-01T10:00:00+01:00"))
    [email] = await service.mailbox.wait_for("therapeut1@praxis.example", 1)
    assert "Pat1" in plain_text(email)
    assert worker.terminate() < 10.0
    assert worker.process.returncode == 0
    log = service.log_path.read_text()
    assert "Pat1" not in log and "Müller-1" not in log  # no personal data in the log
