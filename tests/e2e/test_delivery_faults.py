"""SMTP faults against the real worker (CONTRACT §5.6): replies 421/451/550, dropped
connections, stalls, an unreachable server. Each test asserts exactly which emails
arrived and which events were published."""

from __future__ import annotations

from collections import Counter

from streams.demo.smtp_capture import DROP, STALL, Received
from tests.e2e.harness import Service, plain_text
from tests.events import match_created, therapist_created

# Fast retries: backoff 1 s doubling to 2 s, three attempts, a 2 s SMTP timeout.
FAULTS = {
    "COMM_RETRY_BACKOFF": "1s",
    "COMM_RETRY_BACKOFF_MAX": "2s",
    "COMM_MAX_SEND_ATTEMPTS": "3",
    "COMM_SMTP_TIMEOUT": "2s",
    "COMM_SMTP_OUTAGE_BACKOFF_MAX": "1s",
    "COMM_SMTP_OUTAGE_ALERT_AFTER": "3s",
}


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


def scripted(replies: dict[str, list[str | None]]):
    """Per recipient, the reply to each successive attempt (None: accept)."""
    attempts: Counter[str] = Counter()

    def respond(received: Received) -> str | None:
        recipient = received.rcpt_tos[0]
        script = replies.get(recipient, [])
        attempt = attempts[recipient]
        attempts[recipient] += 1
        return script[attempt] if attempt < len(script) else None

    return respond


async def start_with_one_request_each(service: Service, *therapist_ids: int) -> None:
    await service.up(**FAULTS)
    for therapist_id in therapist_ids:
        await service.therapists(therapist_created(therapist_id))
        await service.matches(match_created(therapist_id * 10, therapist_id, "2026-01-01T10:00:00+01:00"))


def failures(service: Service, therapist_id: int) -> list[dict]:
    return [e["payload"] for e in service.events("communication.email_failed", therapist_id=therapist_id)]


async def test_temporary_failures_are_retried_until_delivered(service: Service):
    service.smtp.handler.responder = scripted({address(1): ["451 4.3.0 greylisted", "421 4.3.2 busy"]})
    await start_with_one_request_each(service, 1)
    [email] = await service.mailbox.wait_for(address(1), 1)
    sent = await service.wait_event("communication.email_sent", therapist_id=1)
    assert [(f["retry_count"], f["will_retry"]) for f in failures(service, 1)] == [(1, True), (2, True)]
    assert all(f["next_attempt_at"] for f in failures(service, 1))
    assert "451" in failures(service, 1)[0]["error"] and "421" in failures(service, 1)[1]["error"]
    assert sent[0]["payload"]["message_id"] == email.message["Message-ID"]
    # every attempt carried the same Message-ID
    assert {r.message["Message-ID"] for r, _ in service.smtp.handler.refused} == {email.message["Message-ID"]}
    assert service.query("SELECT status, retry_count, error_message FROM emails") == [("gesendet", 2, None)]


async def test_dropped_connection_and_stall_are_temporary(service: Service):
    service.smtp.handler.stall_seconds = 4.0  # longer than COMM_SMTP_TIMEOUT
    service.smtp.handler.responder = scripted({address(2): [DROP, STALL]})
    await start_with_one_request_each(service, 2)
    await service.mailbox.wait_for(address(2), 1, timeout=40)
    await service.wait_event("communication.email_sent", therapist_id=2)
    errors = [f["error"] for f in failures(service, 2)]
    assert len(errors) == 2 and "timed out" in errors[1]
    assert len(service.mailbox.to(address(2))) == 1  # the stalled attempt was not delivered
    assert service.query("SELECT status, retry_count FROM emails") == [("gesendet", 2)]


async def test_permanent_failure_stops_at_once_and_releases_the_window(service: Service):
    # The message refused, not the mailbox (that one is suppressed: tests/e2e/test_suppression.py).
    service.smtp.handler.responder = scripted({address(3): ["554 5.6.0 message content rejected"]})
    await start_with_one_request_each(service, 3)
    alert = await service.wait_event("communication.alert", therapist_id=3)
    assert alert[0]["payload"]["severity"] == "error" and alert[0]["payload"]["code"] == "email_failed"
    assert [(f["retry_count"], f["will_retry"], f["next_attempt_at"]) for f in failures(service, 3)] == [
        (1, False, None)
    ]
    rows = service.query("SELECT status, retry_count, error_message FROM emails")
    assert rows[0][:2] == ("fehlgeschlagen", 1) and "554" in rows[0][2]
    assert service.events("communication.email_suppressed") == []
    assert service.mailbox.to(address(3)) == []
    # A failed email was never delivered: it does not hold the therapist's window, and
    # its request waits for the next email (here after the mailbox was fixed).
    service.smtp.handler.responder = None
    await service.matches(match_created(31, 3, "2026-01-02T10:00:00+01:00"))
    [email] = await service.mailbox.wait_for(address(3), 1)
    assert "Pat30" in plain_text(email) and "Pat31" in plain_text(email)


async def test_temporary_failures_give_up_after_the_maximum_attempts(service: Service):
    service.smtp.handler.responder = scripted({address(4): ["451 4.3.0 try later"] * 10})
    await start_with_one_request_each(service, 4)
    await service.wait_event("communication.alert", therapist_id=4, timeout=40)
    assert [(f["retry_count"], f["will_retry"]) for f in failures(service, 4)] == [(1, True), (2, True), (3, False)]
    assert service.query("SELECT status, retry_count FROM emails") == [("fehlgeschlagen", 3)]
    assert service.mailbox.to(address(4)) == []


async def test_a_retrying_email_never_holds_up_the_others(service: Service):
    service.smtp.handler.responder = scripted({address(5): ["451 4.3.0 try later"] * 10})
    await start_with_one_request_each(service, 5, 6, 7, 8)
    for other in (6, 7, 8):
        await service.mailbox.wait_for(address(other), 1)
    # the others went out while therapist 5's email was still being retried
    assert len(failures(service, 5)) < 3
    await service.wait_event("communication.alert", therapist_id=5, timeout=40)
    assert {e["payload"]["therapist_id"] for e in service.events("communication.email_sent")} == {6, 7, 8}


async def test_unreachable_smtp_server_is_waited_for_without_spending_attempts(service: Service):
    service.smtp.stop()  # the server is down before anything is sent
    await start_with_one_request_each(service, 9, 10)
    alert = await service.wait_event("communication.alert", code="smtp_unavailable", timeout=30)
    assert alert[0]["payload"]["therapist_id"] is None
    assert service.query("SELECT count(*) FROM emails WHERE status = 'in_warteschlange'") == [(2,)]
    service.smtp.restart()
    for therapist_id in (9, 10):
        await service.mailbox.wait_for(address(therapist_id), 1, timeout=30)
    await service.wait_event("communication.email_sent", count=2)
    assert service.events("communication.email_failed") == []
    assert service.query("SELECT status, retry_count FROM emails ORDER BY id") == [("gesendet", 0), ("gesendet", 0)]
