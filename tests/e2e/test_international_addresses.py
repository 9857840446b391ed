"""Internationalised therapist addresses against the real worker (issue 12): an umlaut
domain is sent to in its IDNA form at the first attempt; a non-ASCII local part,
which needs SMTPUTF8 (the harness's aiosmtpd does not offer it), fails at once."""

from __future__ import annotations

from tests.e2e.harness import Service, plain_text
from tests.events import match_created, therapist_created

# Fast retries: were either failure taken for a temporary one, it would show.
RETRIES = {"COMM_RETRY_BACKOFF": "1s", "COMM_RETRY_BACKOFF_MAX": "1s", "COMM_MAX_SEND_ATTEMPTS": "3"}


async def test_an_umlaut_domain_gets_its_email_at_the_first_attempt(service: Service):
    await service.up(**RETRIES)
    await service.therapists(
        therapist_created(1, email="praxis@müller.de"),
        therapist_created(2, email="jürgen@praxis.example"),
    )
    await service.matches(
        match_created(10, 1, "2026-01-01T10:00:00+01:00"),
        match_created(20, 2, "2026-01-01T10:00:00+01:00"),
    )
    [email] = await service.mailbox.wait_for("praxis@xn--mller-kva.de", 1)
    assert email.message["To"].addresses[0].addr_spec == "praxis@xn--mller-kva.de"
    assert "Pat10" in plain_text(email)
    sent = await service.wait_event("communication.email_sent", therapist_id=1)
    assert sent[0]["payload"]["message_id"] == email.message["Message-ID"]
    assert service.events("communication.email_failed", therapist_id=1) == []
    rows = service.query("SELECT status, retry_count, recipient_email FROM emails WHERE therapist_id = 1")
    assert rows == [("gesendet", 0, "praxis@müller.de")]  # stored as given, sent in IDNA form

    [failed] = await service.wait_event("communication.email_failed", therapist_id=2)
    payload = failed["payload"]
    assert (payload["retry_count"], payload["will_retry"]) == (1, False)
    assert "non-ASCII local part" in payload["error"] and "SMTPUTF8" in payload["error"]
    assert [r.rcpt_tos for r in service.smtp.messages] == [("praxis@xn--mller-kva.de",)]
