"""A mailbox that no longer exists (issue 12, point 1), on the real worker: the address
is suppressed once, the therapist's requests are not lost (a call with phone hours,
else they wait), and a new address or staff lift the suppression."""

from __future__ import annotations

from streams.demo.smtp_capture import Received
from tests.e2e.harness import Service, plain_text
from tests.events import match_created, therapist_created

ALWAYS = {
    day: [{"start": "00:00", "end": "24:00"}]
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
}
GONE = "550 5.1.1 <mailbox unavailable>: Recipient address rejected: User unknown"
LIFT = "communication.lift_email_suppression"


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


def dead(*addresses: str):
    def respond(received: Received) -> str | None:
        return GONE if received.rcpt_tos[0] in addresses else None

    return respond


def attempts_to(service: Service, recipient: str) -> int:
    refused = sum(1 for r, _ in service.smtp.handler.refused if r.rcpt_tos[0] == recipient)
    return refused + len(service.mailbox.to(recipient))


async def batch_runs_pass(service: Service, *therapist_ids: int) -> None:
    """One therapist per batch run, each emailed in a run after the previous arrived:
    proof that that many batch runs happened (and could have emailed anyone waiting)."""
    for n, therapist_id in enumerate(therapist_ids):
        await service.matches(match_created(therapist_id * 10 + n, therapist_id, "2026-01-03T10:00:00+01:00"))
        await service.mailbox.wait_for(address(therapist_id), 1)


async def test_dead_mailbox_is_suppressed_once_and_a_new_address_gets_every_waiting_request(service: Service):
    service.smtp.handler.responder = dead(address(1))
    await service.up()
    await service.therapists(*(therapist_created(t) for t in (1, 2, 3)))
    await service.matches(
        match_created(11, 1, "2026-01-01T10:00:00+01:00"), match_created(12, 1, "2026-01-02T10:00:00+01:00")
    )
    [suppressed] = await service.wait_event("communication.email_suppressed", therapist_id=1)
    [alert] = await service.wait_event("communication.alert", therapist_id=1)
    assert alert["payload"]["code"] == "email_undeliverable" and "no phone hours" in alert["payload"]["message"]
    assert suppressed["payload"]["reason"].startswith("550 5.1.1")
    assert "@" not in str(suppressed["payload"])  # the address only as a hash

    # A request that arrives now waits too; two batch runs pass without a second email.
    await service.matches(match_created(13, 1, "2026-01-03T10:00:00+01:00"))
    await service.forwarded("match_created", 3)
    await batch_runs_pass(service, 2, 3)
    assert attempts_to(service, address(1)) == 1
    assert service.query("SELECT count(*) FROM emails WHERE therapist_id = 1") == [(1,)]
    assert service.events("communication.phone_call_scheduled") == []  # no hours: no call

    moved = therapist_created(1, email="eva.neu@praxis.example")
    moved["event_type"] = "therapist.updated"
    await service.therapists(moved)
    [email] = await service.mailbox.wait_for("eva.neu@praxis.example", 1)
    text = plain_text(email)
    assert all(f"Pat{r}" in text for r in (11, 12, 13))
    [lifted] = await service.wait_event("communication.email_suppression_lifted", therapist_id=1)
    assert lifted["payload"]["reason"] == "address_changed"
    assert lifted["payload"]["address_hash"] == suppressed["payload"]["address_hash"]
    await service.wait_event("communication.email_sent", therapist_id=1)
    # exactly one of each, and the dead address was tried once
    assert len(service.events("communication.email_suppressed")) == 1
    assert len(service.events("communication.alert", therapist_id=1)) == 1
    assert len(service.events("communication.email_suppression_lifted")) == 1
    assert attempts_to(service, address(1)) == 1
    assert len(service.mailbox.to("eva.neu@praxis.example")) == 1


async def test_with_phone_hours_the_requests_go_to_calls_also_after_a_restart_until_staff_lift_it(
    service: Service,
):
    service.smtp.handler.responder = dead(address(4))
    worker = await service.up(COMM_CALL_MIN_NOTICE="0s")
    await service.therapists(therapist_created(4, availability=ALWAYS), therapist_created(5))
    await service.known_for_calls(4)
    await service.matches(
        match_created(41, 4, "2026-01-02T10:00:00+01:00"), match_created(42, 4, "2026-01-01T10:00:00+01:00")
    )
    [call] = await service.wait_event("communication.phone_call_scheduled", therapist_id=4)
    assert call["payload"]["reason"] == "undeliverable"
    assert call["payload"]["placement_request_ids"] == [42, 41]
    [alert] = await service.wait_event("communication.alert", therapist_id=4)
    assert alert["payload"]["code"] == "email_undeliverable" and "phone call" in alert["payload"]["message"]

    # The suppression is state: it holds for the next worker.
    worker.terminate()
    await service.start_worker(COMM_CALL_MIN_NOTICE="0s")
    await service.matches(match_created(43, 4, "2026-01-03T10:00:00+01:00"))
    [_, later] = await service.wait_event("communication.phone_call_scheduled", count=2, therapist_id=4)
    assert later["payload"]["placement_request_ids"] == [43] and later["payload"]["reason"] == "undeliverable"
    await batch_runs_pass(service, 5)
    assert attempts_to(service, address(4)) == 1
    assert service.query(
        "SELECT count(*) FROM phone_call_batches b JOIN phone_calls c ON c.id = b.phone_call_id "
        "WHERE c.therapist_id = 4 AND c.reason = 'undeliverable'"
    ) == [(3,)]

    # Staff fixed the mailbox: email goes to the same address again.
    service.smtp.handler.responder = None
    await service.command(LIFT, {"therapist_id": 4, "reason": "Postfach wieder erreichbar"})
    [lifted] = await service.wait_event("communication.email_suppression_lifted", therapist_id=4)
    assert lifted["payload"]["reason"] == "lifted_by_staff"
    again = await service.command(LIFT, {"therapist_id": 4})
    assert "is not suppressed" in await service.rejection(again)
    await service.matches(match_created(44, 4, "2026-01-04T10:00:00+01:00"))
    [email] = await service.mailbox.wait_for(address(4), 1)
    assert "Pat44" in plain_text(email) and "Pat41" not in plain_text(email)
    assert len(service.events("communication.email_suppressed")) == 1
    assert len(service.events("communication.alert", therapist_id=4)) == 1


async def test_suppressions_hold_with_two_workers_and_move_with_the_partitions(service: Service):
    dead_ones = range(1, 9)  # spread over the four inbox partitions
    service.smtp.handler.responder = dead(*(address(t) for t in dead_ones))
    first = await service.up()
    await service.start_worker()
    await service.therapists(*(therapist_created(t) for t in [*dead_ones, 11, 12]))
    await service.matches(*(match_created(t * 10, t, "2026-01-01T10:00:00+01:00") for t in dead_ones))
    await service.collector.wait_for(
        lambda: (
            {e["payload"]["therapist_id"] for e in service.events("communication.email_suppressed")} == set(dead_ones)
        ),
        what="every dead address suppressed",
    )

    first.kill()  # its partitions, and the suppressions in their table entries, move to the survivor
    await service.matches(*(match_created(t * 10 + 1, t, "2026-01-02T10:00:00+01:00") for t in dead_ones))
    await service.forwarded("match_created", 16)
    await batch_runs_pass(service, 11, 12)  # two batch runs on the survivor
    assert all(attempts_to(service, address(t)) == 1 for t in dead_ones)

    for t in dead_ones:
        moved = therapist_created(t, email=f"neu{t}@praxis.example")
        moved["event_type"] = "therapist.updated"
        await service.therapists(moved)
    for t in dead_ones:
        [email] = await service.mailbox.wait_for(f"neu{t}@praxis.example", 1, timeout=40)
        assert f"Pat{t * 10}" in plain_text(email) and f"Pat{t * 10 + 1}" in plain_text(email)
    suppressed = {e["event_id"] for e in service.events("communication.email_suppressed")}
    lifted = {e["event_id"] for e in service.events("communication.email_suppression_lifted")}
    assert len(suppressed) == len(lifted) == len(dead_ones)  # once each (a replay repeats the same event id)
    assert all(attempts_to(service, address(t)) == 1 for t in dead_ones)
