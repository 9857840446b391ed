"""The sender agent's handling of send commands, against fakes (no broker, no
database): the persistence functions are replaced by recorders, so what is checked
is the agent's part — decoding, grouping into runs, order, one transaction per
batch, acknowledging, and the dead letter of a command that cannot be stored."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from streams.agents.send_backlog import Backlog
from streams.agents.sender import SenderAgent, in_runs, is_urgent
from streams.delivery.wakeups import Wakeups
from streams.email.context import Identity
from streams.messages import inbox, send_commands
from streams.messages.bundles import Entry, pack
from streams.messages.codec import encode
from streams.persistence import call_booking, directory, email_creation, settled_requests, waiting_requests
from streams.persistence.outbox import Channels
from streams.settings import Settings
from tests.fakes import Record, RecordingDatabase, RecordStream, StagedRecordStream, recording_topics, sent

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
PROFILE = TherapistProfile(7, "praxis7@example.org", "Eva", "Müller")


def request(request_id: int) -> PlacementRequest:
    return PlacementRequest(request_id, request_id + 1000, NOW - timedelta(days=30), {"first_name": "Pat"})


def email(key: str, *request_ids: int) -> send_commands.SendEmail:
    requests = tuple(request(r) for r in request_ids)
    return send_commands.SendEmail(key, "contact_request", 7, PROFILE, requests, NOW, True, "batch_request")


class Calls:
    """What the agent asked of persistence, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_on: str | None = None) -> None:
        self.log: list[tuple[str, Any]] = []

        def recorder(name: str, result: Any = None) -> Any:
            def record(session: object, what: Any, *args: Any) -> Any:
                if fail_on is not None and fail_on in repr(what):
                    raise ValueError("cannot be stored")
                # A copy: the agent reuses its run lists.
                self.log.append((name, list(what) if isinstance(what, list) else what))
                return result(what) if callable(result) else result

            return record

        monkeypatch.setattr(email_creation, "store_send_commands", recorder("emails", lambda c: [1] * len(c)))
        monkeypatch.setattr(waiting_requests, "keep", recorder("details"))
        monkeypatch.setattr(waiting_requests, "forget", recorder("forget"))
        monkeypatch.setattr(settled_requests, "settle_request", recorder("settle"))
        monkeypatch.setattr(directory, "update_directory", recorder("directory"))
        monkeypatch.setattr(call_booking, "book_instead_of_email", recorder("call"))

    def names(self) -> list[str]:
        return [name for name, _ in self.log]


def sender() -> tuple[SenderAgent, RecordingDatabase]:
    database = RecordingDatabase()
    agent = SenderAgent(
        Settings.from_environ({}),
        recording_topics(),
        database,  # type: ignore[arg-type]
        SimpleNamespace(render=None),  # type: ignore[arg-type]  # email creation is replaced
        Channels(events="communication-events", inbox="svc-therapist-inbox"),
        Wakeups(),
        lambda: NOW,
        None,  # type: ignore[arg-type]  # the call policy: booking is replaced
        Identity("vermittlung@example.org", "Vermittlung"),
    )
    return agent, database


def records(*commands: send_commands.SendCommand) -> RecordStream:
    return RecordStream(Record(encode(c), b"7", "svc-send-commands", 0, i) for i, c in enumerate(commands))


async def test_a_batch_is_one_transaction_in_which_runs_of_emails_and_of_details_are_stored_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = Calls(monkeypatch)
    agent, database = sender()
    stream = records(
        send_commands.RequestDetails(7, request(1)),
        send_commands.RequestDetails(7, request(2)),
        email("a", 1),
        email("b", 2),
        send_commands.SettleRequest(7, 3, "cancelled"),
        send_commands.DirectoryUpdate(7, PROFILE),
        send_commands.ForgetRequestDetails(7, (4,)),
        send_commands.BookCall(7, "call-1", "undeliverable", (request(5),), NOW),
        email("c", 6),
    )
    await agent(stream)  # type: ignore[arg-type]

    assert len(database.runs) == 1
    assert calls.names() == ["details", "emails", "settle", "directory", "forget", "call", "emails"]
    assert [d.request.placement_request_id for d in calls.log[0][1]] == [1, 2]
    assert [e.email_key for e in calls.log[1][1]] == ["a", "b"]
    assert calls.log[4][1] == (4,)
    assert len(stream.acked) == 9


async def test_details_are_stored_before_an_email_that_follows_them(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    agent, _ = sender()
    await agent(records(email("a", 1), send_commands.RequestDetails(7, request(2)), email("b", 2)))  # type: ignore[arg-type]

    assert calls.names() == ["emails", "details", "emails"]


async def test_a_command_that_cannot_be_stored_is_dead_lettered_alone_and_releases_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = Calls(monkeypatch, fail_on="'broken'")
    agent, _ = sender()
    stream = records(email("good", 1), email("broken", 2), send_commands.SettleRequest(7, 3, "closed"))
    await agent(stream)  # type: ignore[arg-type]

    # The batch failed as a whole, then each command was stored on its own.
    stored = [what for name, what in calls.log if name == "emails"]
    assert [[e.email_key for e in run] for run in stored] == [["good"]]
    assert ("settle", send_commands.SettleRequest(7, 3, "closed")) in calls.log
    [dead] = [json.loads(s.value) for s in sent(agent.topics.dlq)]
    assert (dead["offset"], dead["reason"]) == (1, "internal error: ValueError")
    [released] = [inbox.decode(s.value) for s in sent(agent.topics.inbox)]
    assert released == inbox.EmailFailed(7, "broken")
    assert len(stream.acked) == 3


async def test_an_undecodable_command_is_dead_lettered_and_nothing_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    Calls(monkeypatch)
    agent, _ = sender()
    stream = RecordStream([Record(b'{"kind": "send_fax"}', b"7", "svc-send-commands", 0, 0)])
    await agent(stream)  # type: ignore[arg-type]

    [dead] = [json.loads(s.value) for s in sent(agent.topics.dlq)]
    assert dead["reason"] == "internal error: UnknownMessage"
    assert sent(agent.topics.inbox) == []


async def test_a_send_email_too_broken_to_decode_still_releases_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    Calls(monkeypatch)
    agent, _ = sender()
    broken = json.loads(encode(email("k-1", 1)))
    broken["decided_at"] = "not a time"
    await agent(RecordStream([Record(json.dumps(broken).encode(), b"7", "svc-send-commands", 0, 0)]))  # type: ignore[arg-type]

    [dead] = [json.loads(s.value) for s in sent(agent.topics.dlq)]
    assert dead["reason"] == "internal error: ValueError"
    [released] = [inbox.decode(s.value) for s in sent(agent.topics.inbox)]
    assert released == inbox.EmailFailed(7, "k-1")


def bundled(*commands: send_commands.SendCommand, offset: int = 0) -> Record:
    [record] = pack([Entry(0, b"7", encode(c), None) for c in commands])
    return Record(record.value, record.key, "svc-send-commands", 0, offset)


async def test_the_commands_of_bundles_are_stored_together_in_their_order(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    agent, database = sender()
    stream = RecordStream(
        [
            bundled(send_commands.RequestDetails(7, request(1)), send_commands.RequestDetails(7, request(2))),
            bundled(email("a", 1), send_commands.SettleRequest(7, 3, "cancelled"), offset=1),
        ]
    )
    await agent(stream)  # type: ignore[arg-type]

    assert len(database.runs) == 1
    assert calls.names() == ["details", "emails", "settle"]
    assert [d.request.placement_request_id for d in calls.log[0][1]] == [1, 2]
    assert len(stream.acked) == 2


async def test_a_bundled_command_that_cannot_be_stored_is_dead_lettered_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch, fail_on="'broken'")
    agent, _ = sender()
    broken = email("broken", 2)
    stream = RecordStream([bundled(email("good", 1), broken, send_commands.SettleRequest(7, 3, "closed"), offset=4)])
    await agent(stream)  # type: ignore[arg-type]

    assert [[e.email_key for e in run] for name, run in calls.log if name == "emails"] == [["good"]]
    assert ("settle", send_commands.SettleRequest(7, 3, "closed")) in calls.log
    [dead] = [json.loads(s.value) for s in sent(agent.topics.dlq)]
    assert (dead["offset"], dead["key"], dead["reason"]) == (4, "7", "internal error: ValueError")
    assert dead["value"] == encode(broken).decode()  # the command alone
    [released] = [inbox.decode(s.value) for s in sent(agent.topics.inbox)]
    assert released == inbox.EmailFailed(7, "broken")
    assert len(stream.acked) == 1


async def test_an_undecodable_bundle_releases_the_windows_of_the_emails_it_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Calls(monkeypatch)
    agent, _ = sender()
    record = bundled(email("k-1", 1), email("k-2", 2))
    value = record.value.replace(b'"decided_at":"', b'"decided_at":"x')  # type: ignore[union-attr]
    await agent(RecordStream([Record(value, None, "svc-send-commands", 0, 0)]))  # type: ignore[arg-type]

    [dead] = [json.loads(s.value) for s in sent(agent.topics.dlq)]
    assert dead["reason"] == "internal error: ValueError"
    released = [inbox.decode(s.value) for s in sent(agent.topics.inbox)]
    assert released == [inbox.EmailFailed(7, "k-1"), inbox.EmailFailed(7, "k-2")]


def therapist_email(therapist_id: int, key: str, kind: str = "contact_request") -> send_commands.SendEmail:
    profile = TherapistProfile(therapist_id, f"praxis{therapist_id}@example.org", "Eva", "Müller")
    return send_commands.SendEmail(key, kind, therapist_id, profile, (request(therapist_id),), NOW, True, "x")


async def test_under_a_burst_the_therapists_with_a_confirmation_are_stored_first_each_in_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = Calls(monkeypatch)
    agent, database = sender()
    commands: list[send_commands.SendCommand] = [therapist_email(t, f"contact-{t}") for t in range(1, 251)]
    # Therapist 900: its request's details, then its confirmation, behind 250 contact emails.
    commands += [send_commands.RequestDetails(900, request(900)), therapist_email(900, "confirm", "confirmation")]
    commands += [therapist_email(t, f"contact-{t}") for t in range(251, 301)]
    # As a batch run's commands come: one bundle per partition.
    stream = RecordStream([bundled(*commands[:250]), bundled(*commands[250:], offset=1)])
    await agent(stream)  # type: ignore[arg-type]

    assert calls.names()[:2] == ["details", "emails"]
    assert [d.request.placement_request_id for d in calls.log[0][1]] == [900]
    assert [e.email_key for e in calls.log[1][1]] == ["confirm"]
    stored = [e.email_key for name, run in calls.log if name == "emails" for e in run]
    assert stored[1:] == [f"contact-{t}" for t in range(1, 301)]  # the others in their order
    assert len(database.runs) == 4  # the urgent ones on their own, then groups of STORE_GROUP commands
    assert len(stream.acked) == 2


class HeldDatabase(RecordingDatabase):
    """A database whose first unit of work waits, once started, until released."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self, work: Any, *args: Any) -> Any:
        if not self.started.is_set():
            self.started.set()
            await self.release.wait()
        return await super().run(work, *args)


async def test_a_confirmation_taken_while_contact_emails_are_stored_is_stored_next_and_acknowledged_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = Calls(monkeypatch)
    agent, _ = sender()
    database = agent.database = HeldDatabase()  # type: ignore[assignment]
    contacts = bundled(*(therapist_email(t, f"contact-{t}") for t in range(1, 301)))
    confirmation = Record(encode(therapist_email(900, "confirm", "confirmation")), b"900", "svc-send-commands", 1, 0)

    async def while_the_first_group_is_stored() -> None:
        await database.started.wait()

    async def once_taken() -> None:  # the agent asks for more: the confirmation is in its backlog
        database.release.set()

    stream = StagedRecordStream(
        ([None, [contacts]]), (while_the_first_group_is_stored, [confirmation]), (once_taken, [])
    )
    await agent(stream)  # type: ignore[arg-type]

    stored = [[e.email_key for e in run] for name, run in calls.log if name == "emails"]
    assert stored == [
        [f"contact-{t}" for t in range(1, 101)],  # the group in hand when the confirmation came
        ["confirm"],
        [f"contact-{t}" for t in range(101, 201)],
        [f"contact-{t}" for t in range(201, 301)],
    ]
    # The confirmation's record was stored first but is acknowledged after the one taken before it.
    assert stream.acked == [contacts, confirmation]


async def test_the_backlog_hands_out_urgent_therapists_first_each_in_its_order_and_releases_in_order_taken() -> None:
    backlog = Backlog(limit=10, group_size=2, is_urgent=is_urgent)
    backlog.add("a", [therapist_email(1, "c1"), therapist_email(2, "c2"), therapist_email(3, "c3")])
    # Therapist 4's follow-up is more urgent than a contact request; its details come with it.
    backlog.add("b", [send_commands.RequestDetails(4, request(4)), therapist_email(4, "f", "follow_up")])

    handed, released = [], []
    while backlog:
        group = await backlog.next_group()
        assert group is not None
        handed.append([getattr(command, "email_key", "details") for _, command in group.commands])
        released.append(backlog.stored(group))

    assert handed == [["details", "f"], ["c1", "c2"], ["c3"]]
    assert released == [[], [], ["a", "b"]]


async def test_without_an_urgent_email_the_backlog_keeps_the_order_and_a_full_backlog_waits_for_room() -> None:
    backlog = Backlog(limit=2, group_size=2, is_urgent=is_urgent)
    backlog.add("a", [therapist_email(3, "c3"), therapist_email(1, "c1")])
    backlog.add("b", [therapist_email(2, "c2")])
    room = asyncio.ensure_future(backlog.room())
    await asyncio.sleep(0)
    assert not room.done()  # two records held: full

    first = await backlog.next_group()
    assert first is not None
    assert backlog.stored(first) == ["a"]
    await asyncio.wait_for(room, 1)  # one record held: room
    second = await backlog.next_group()
    assert second is not None
    assert backlog.stored(second) == ["b"]
    backlog.close()

    assert await backlog.next_group() is None
    assert [[c.email_key for _, c in g.commands] for g in (first, second)] == [["c3", "c1"], ["c2"]]  # type: ignore[attr-defined]


async def test_confirmations_of_many_therapists_are_stored_as_one_run_of_emails_each_therapist_in_its_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = Calls(monkeypatch)
    agent, database = sender()
    # As acceptances come: each therapist's settled request, then its confirmation.
    commands: list[send_commands.SendCommand] = []
    for t in range(1, 51):
        commands += [send_commands.SettleRequest(t, t, "accepted"), therapist_email(t, f"confirm-{t}", "confirmation")]
    await agent(RecordStream([bundled(*commands)]))  # type: ignore[arg-type]

    assert len(database.runs) == 1
    assert calls.names() == ["settle"] * 50 + ["emails"]  # one run of 50 emails, not 50 runs of one
    assert [e.email_key for e in calls.log[-1][1]] == [f"confirm-{t}" for t in range(1, 51)]


def test_runs_keep_each_therapists_order() -> None:
    details = send_commands.RequestDetails(1, request(1))
    first, second = therapist_email(1, "a"), therapist_email(1, "b")
    settle, other = send_commands.SettleRequest(2, 5, "closed"), therapist_email(2, "c")
    commands: list[send_commands.SendCommand] = [first, settle, details, other, second]

    ordered = in_runs(commands)

    assert ordered == [first, settle, details, other, second]  # round by round, details before emails
    for therapist in (1, 2):
        own = [c for c in commands if c.therapist_id == therapist]
        assert [c for c in ordered if c.therapist_id == therapist] == own


async def test_a_backlog_of_large_bundles_is_full_by_their_bytes_before_their_number() -> None:
    big = bundled(*(therapist_email(t, f"c{t}") for t in range(1, 201)))  # a batch run's bundle
    size = len(big.value or b"")
    backlog = Backlog(limit=1000, group_size=100, is_urgent=is_urgent, max_bytes=3 * size)
    for offset in range(3):
        backlog.add(SimpleNamespace(message=big, value=big.value, offset=offset), None)
    assert backlog.full() and len(backlog) == 3

    group = await backlog.next_group()  # the first, unreadable here: dead-lettered and released
    assert group is not None and group.unreadable is not None
    assert len(backlog.stored(group)) == 1 and not backlog.full()
