"""The read-only API end to end (issue 15 §1), on Tansu, PostgreSQL and aiosmtpd:
the therapist view is the same, and right, whichever of two workers is asked, and
still right after one of them is killed; pages return every email once while new
ones arrive; the token is required (and /api is off without one); unknown ids and
bad parameters are answered as such."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from streams.agents.ticks import partition_of
from tests.e2e.harness import Service, WorkerProcess
from tests.events import match_created, therapist_created
from tests.waiting import until, until_blocking

TOKEN = "e2e-staff-tool-token-0001"
API = {"COMM_API_TOKEN": TOKEN}
PARTITIONS = 4  # COMM_PARTITIONS in the harness
BERLIN = ZoneInfo("Europe/Berlin")
ALWAYS = {
    day: [{"start": "00:00", "end": "24:00"}]
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
}
CREATE = "communication.create_email"


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def ask(url: str, token: str | None = TOKEN, headers: dict[str, str] | None = None) -> Answer | None:
    """GET ``url`` (blocking: call it in a thread); None while nothing answers there."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return _answer(response.status, response.read(), response.headers)
    except urllib.error.HTTPError as error:
        return _answer(error.code, error.read(), error.headers)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _answer(status: int, raw: bytes, headers: Any) -> Answer:
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode("utf-8", errors="replace")
    return Answer(status, body, {k: v for k, v in headers.items()})


async def get(worker: WorkerProcess, path: str, token: str | None = TOKEN, **headers: str) -> Answer:
    answer = await asyncio.to_thread(ask, worker.url(path), token, headers)
    assert answer is not None, f"nothing answers at {worker.url(path)}"
    return answer


async def wait_answer(worker: WorkerProcess, path: str, wanted: Callable[[Answer], bool], what: str) -> Answer:
    """Ask until the answer is ``wanted`` (in a thread: the test's loop goes on)."""
    last: list[Answer | None] = [None]

    def check() -> Answer | None:
        last[0] = ask(worker.url(path))
        return last[0] if last[0] is not None and wanted(last[0]) else None

    return await asyncio.to_thread(until_blocking, check, 60, lambda: f"{what} (last answer: {last[0]})", every=0.2)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def owned_partitions(service: Service) -> dict[str, list[int]]:
    """The latest assignment each worker logged."""
    latest: dict[str, list[int]] = {}
    for worker, partitions in re.findall(
        r"worker (\S+) owns inbox partitions \[([\d, ]*)\]", service.log_path.read_text()
    ):
        latest[worker] = [int(p) for p in partitions.split(",") if p.strip()]
    return latest


def worker_ids(service: Service) -> list[str]:
    return re.findall(r"commsvc worker ready \(id (\S+),", service.log_path.read_text())


# --- the therapist view with two workers, and after one is killed


def expected_view(service: Service, therapist_id: int, waiting: list[int], known: bool = True) -> dict[str, Any]:
    """What the view must say, from what the test sent and what the database holds:
    the first request emailed (the window of 1 h holds the others), the others waiting."""
    [(email_id, subject, sent_at)] = service.query(
        "SELECT id, subject, sent_at FROM emails WHERE therapist_id = :t", t=therapist_id
    ) or [(None, None, None)]
    view: dict[str, Any] = {
        "therapist_id": therapist_id,
        "known": known,
        "waiting_requests": list(waiting),
        "emails_in_flight": [],
        "last_contact_email": None,
        "contact_sent_at": [],
        "next_contact_at": None,
        "upcoming_calls": [],
        "suppression": None,
    }
    if email_id is not None:
        last = {"email_id": email_id, "kind": "contact_request", "subject": subject, "sent_at": rfc3339(sent_at)}
        view["last_contact_email"] = last
        view["contact_sent_at"] = [rfc3339(sent_at)]
        view["next_contact_at"] = rfc3339(sent_at + timedelta(hours=1))
    return view


def seen_view(answer: Answer) -> dict[str, Any] | None:
    """The parts of an answer ``expected_view`` predicts (None: not a 200)."""
    if answer.status != 200:
        return None
    body = answer.body
    return {
        "therapist_id": body["therapist_id"],
        "known": body["known"],
        "waiting_requests": [r["placement_request_id"] for r in body["waiting_requests"]],
        "emails_in_flight": body["emails_in_flight"],
        "last_contact_email": body["last_contact_email"],
        "contact_sent_at": body["weekly_rule"]["contact_sent_at"],
        "next_contact_at": body["weekly_rule"]["next_contact_at"],
        "upcoming_calls": body["upcoming_calls"],
        "suppression": body["suppression"],
    }


async def view_is(worker: WorkerProcess, therapist_id: int, expected: dict[str, Any]) -> Answer:
    return await wait_answer(
        worker,
        f"/api/therapists/{therapist_id}/communication",
        lambda answer: seen_view(answer) == expected,
        f"the view of therapist {therapist_id} asked at port {worker.web_port} to be {expected}",
    )


async def test_the_therapist_view_is_right_whichever_worker_is_asked_and_after_one_is_killed(make_service):
    async with make_service(COMM_CONTACT_INTERVAL="1h", **API) as service:
        first = await service.up()
        second = await service.start_worker()
        therapists = list(range(1, 9))
        # they cover every partition, so each worker is asked about therapists it does not own
        assert {partition_of(t, PARTITIONS) for t in therapists} == set(range(PARTITIONS))
        for t in therapists:
            await service.therapists(therapist_created(t))
            await service.matches(match_created(t * 10, t, "2026-01-01T10:00:00+01:00"))
        await service.wait_event("communication.email_sent", count=len(therapists), timeout=60)
        # inside the window of 1 h: these wait; therapist 9 is not known, so its request waits too
        for t in therapists:
            await service.matches(
                match_created(t * 10 + 2, t, "2026-02-02T10:00:00+01:00"),
                match_created(t * 10 + 1, t, "2026-02-01T10:00:00+01:00"),
            )
        await service.matches(match_created(91, 9, "2026-01-05T10:00:00+01:00"))
        await service.forwarded("match_created", 2 * len(therapists) + len(therapists) + 1)

        owned = owned_partitions(service)
        ids = worker_ids(service)
        assert sorted(owned[ids[0]] + owned[ids[1]]) == list(range(PARTITIONS)) and owned[ids[0]] and owned[ids[1]]
        expected = {t: expected_view(service, t, [t * 10 + 1, t * 10 + 2]) for t in therapists}
        expected[9] = expected_view(service, 9, [91], known=False)
        assert all(v["last_contact_email"] for t, v in expected.items() if t != 9)
        for t, view in expected.items():
            answers = [await view_is(worker, t, view) for worker in (first, second)]
            # the whole answer is the same from both, not only the parts checked
            assert answers[0].body == answers[1].body, t
            assert answers[0].headers["Cache-Control"] == "no-store"
            body = answers[0].body
            if t != 9:
                assert body["weekly_rule"]["may_contact_now"] is False
                assert body["waiting_requests"][0]["registered_at"] == "2026-02-01T09:00:00+00:00"

        first.kill()  # its partitions move to the survivor, which reads them back from the changelog
        for t, view in expected.items():
            await view_is(second, t, view)
        # and it is the live picture: a request that arrives now is in it
        await service.matches(match_created(13, 1, "2026-02-03T10:00:00+01:00"))
        await view_is(second, 1, {**expected[1], "waiting_requests": [11, 12, 13]})
        assert TOKEN not in service.log_path.read_text()


# --- pagination while new emails arrive


async def stored_emails(service: Service, count: int) -> list[int]:
    def enough() -> list[int]:
        ids = [row[0] for row in service.query("SELECT id FROM emails")]
        return ids if len(ids) >= count else []

    return await until(enough, 30, f"{count} emails stored")


async def drafts(service: Service, therapist_id: int, numbers: range) -> None:
    for n in numbers:
        await service.command(
            CREATE,
            {"therapist_id": therapist_id, "subject": f"Rückfrage {n}", "body_html": f"<p>{n}</p>", "queue": False},
        )


async def test_pages_return_every_email_once_while_new_emails_arrive(make_service):
    async with make_service(**API) as service:
        worker = await service.up()
        await service.therapists(therapist_created(1))
        await service.known_for_calls(1)  # the therapist is known: commands for them are carried out
        await drafts(service, 1, range(12))
        there = set(await stored_emails(service, 12))

        seen: list[int] = []
        order: list[tuple[str, int]] = []
        path = "/api/emails?limit=5"
        total = 12
        while True:
            answer = await get(worker, path)
            assert answer.status == 200, answer
            seen += [email["id"] for email in answer.body["emails"]]
            order += [(email["created_at"], email["id"]) for email in answer.body["emails"]]
            cursor = answer.body["next_cursor"]
            if cursor is None:
                break
            # new emails arrive between the pages
            await drafts(service, 1, range(total, total + 3))
            total += 3
            await stored_emails(service, total)
            path = f"/api/emails?limit=5&cursor={cursor}"

        assert total > 12 + 3  # emails did arrive while paging
        assert len(seen) == len(set(seen)), "an email was returned twice"
        assert there <= set(seen), "an email that was there was skipped"
        assert [datetime.fromisoformat(at) for at, _ in order] == sorted(
            (datetime.fromisoformat(at) for at, _ in order), reverse=True
        )
        # a new walk, all at once, has every email, newest first
        everything = await get(worker, "/api/emails?limit=500&therapist_id=1&status=entwurf&kind=manual")
        assert len(everything.body["emails"]) == total and everything.body["next_cursor"] is None
        assert {e["subject"] for e in everything.body["emails"]} == {f"Rückfrage {n}" for n in range(total)}


# --- access, unknown ids, bad parameters, phone calls


async def test_access_needs_the_token_and_bad_requests_are_named(make_service):
    async with make_service(COMM_CALL_MIN_NOTICE="0s", **API) as service:
        worker = await service.up()
        await service.therapists(therapist_created(5, availability=ALWAYS, phone="+49 30 1234"))
        await service.matches(match_created(51, 5, "2026-01-01T10:00:00+01:00", diagnosis="F41.1"))
        [sent] = await service.wait_event("communication.email_sent", therapist_id=5)
        email_id = sent["payload"]["email_id"]
        await service.known_for_calls(5)
        await service.command("communication.schedule_phone_call", {"therapist_id": 5, "placement_request_ids": [51]})
        [booked] = await service.wait_event("communication.phone_call_scheduled", therapist_id=5)
        call_id = booked["payload"]["phone_call_id"]

        # no token, a wrong one, a malformed header: 401 and nothing more
        for token, headers in ((None, {}), ("wrong-token-but-long-enough", {}), (None, {"Authorization": TOKEN})):
            for path in (f"/api/emails/{email_id}", "/api/emails", "/api/therapists/5/communication", "/api/x"):
                answer = await get(worker, path, token, **headers)
                assert (answer.status, answer.body) == (401, {"error": "unauthorized"}), (path, token, headers)
                assert answer.headers["WWW-Authenticate"] == "Bearer"
        # health and metrics stay open
        assert (await get(worker, "/healthz", None)).status == 200
        metrics = await get(worker, "/metrics", None)
        assert metrics.status == 200 and "Pat51" not in metrics.body

        # the right token: an email in full, never cached
        email = await get(worker, f"/api/emails/{email_id}")
        assert email.status == 200 and email.headers["Cache-Control"] == "no-store"
        assert "Pat51" in email.body["body_text"] and email.body["status"] == "gesendet"
        assert [b["placement_request_id"] for b in email.body["batches"]] == [51]
        assert datetime.fromisoformat(email.body["sent_at"]) == datetime.fromisoformat(sent["payload"]["sent_at"])
        # the call, in the day's list and in full
        call = await get(worker, f"/api/phone-calls/{call_id}")
        assert call.status == 200
        assert [r["placement_request_id"] for r in call.body["requests"]] == [51]
        day = datetime.fromisoformat(call.body["scheduled_at"]).astimezone(BERLIN).date().isoformat()
        listed = await get(worker, f"/api/phone-calls?date={day}&therapist_id=5&status=scheduled")
        assert [c["id"] for c in listed.body["phone_calls"]] == [call_id]
        view = await get(worker, "/api/therapists/5/communication")
        assert [c["id"] for c in view.body["upcoming_calls"]] == [call_id]
        assert view.body["has_phone_hours"] is True

        # unknown ids and bad parameters
        for path, status, error in (
            ("/api/emails/987654", 404, "no email 987654"),
            ("/api/phone-calls/987654", 404, "no phone call 987654"),
            ("/api/therapists/424242/communication", 404, "no therapist 424242"),
            ("/api/nothing-here", 404, "no such route"),
            ("/api/emails/abc", 400, "id: "),
            ("/api/emails?limit=abc", 400, "limit: "),
            ("/api/emails?status=sent", 400, "status: "),
            ("/api/emails?since=gestern", 400, "since: "),
            ("/api/emails?cursor=xyz", 400, "cursor: "),
            ("/api/emails?therapist=5", 400, "therapist: unknown parameter"),
            ("/api/phone-calls?date=2026-02-30", 400, "date: "),
        ):
            answer = await get(worker, path)
            assert answer.status == status, (path, answer)
            assert answer.body["error"].startswith(error), (path, answer.body)
            assert answer.headers["Content-Type"].startswith("application/json")
        capped = await get(worker, "/api/emails?limit=100000")
        assert (capped.status, capped.body["limit"]) == (200, 500)

        log = service.log_path.read_text()
        assert TOKEN not in log
        assert "Pat51" not in log and "F41.1" not in log


async def test_without_a_token_the_api_is_off(service: Service):
    worker = await service.up()
    for path in ("/api/emails", "/api/emails/1", "/api/therapists/1/communication", "/api/phone-calls"):
        assert (await get(worker, path)).status == 404
        assert (await get(worker, path, None)).status == 404
    assert (await get(worker, "/healthz", None)).status == 200
    assert service.log_path.read_text().count("the read-only API is off") == 1
