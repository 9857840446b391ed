"""The command agent against fakes (no broker, no database): commands that need the
therapist's state go to the inbox as typed messages, the others reach the
database handlers as validated models (not re-parsed JSON), and malformed ones
go to the DLQ with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.agents.commands import CommandAgent
from streams.bootstrap import call_policy
from streams.delivery.wakeups import Wakeups
from streams.messages import inbox
from streams.messages.commands import RecordEmailResponse, ScheduleCall
from streams.persistence import processed_commands
from streams.persistence.outbox import Channels
from streams.settings import Settings
from tests.events import encode, envelope
from tests.fakes import Record, RecordingDatabase, RecordStream, recording_topics, sent

SETTINGS = Settings.from_environ({"COMM_MAX_COMMAND_BYTES": "4096"})
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


class Executed:
    """Replaces ``processed_commands.execute``: records each command and its handler set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commands: list[processed_commands.Command] = []
        self.rejections: list[str] = []

        def execute(
            session: object, command: processed_commands.Command, channels: Channels, now: datetime, handlers: Any
        ) -> str:
            self.commands.append(command)
            try:
                handlers[command.command_type](session, command, channels, now)
            except processed_commands.Rejected as rejected:
                self.rejections.append(str(rejected))
                return "rejected"
            except Exception:  # a real handler needs a real session: not what is tested here
                return "done"
            return "done"

        monkeypatch.setattr(processed_commands, "execute", execute)


def agent() -> tuple[CommandAgent, RecordingDatabase]:
    database = RecordingDatabase()
    channels = Channels(events="communication-events", inbox="svc-therapist-inbox")
    command_agent = CommandAgent(
        recording_topics(),
        database,  # type: ignore[arg-type]
        channels,
        Wakeups(),
        lambda: NOW,
        call_policy(SETTINGS),
        SETTINGS,
    )
    return command_agent, database


def command(command_type: str, payload: dict[str, Any], offset: int = 0) -> Record:
    document = envelope(command_type, payload, producer="staff-tool")
    return Record(encode(document), str(payload.get("therapist_id", 7)).encode(), "communication-commands", 0, offset)


async def test_create_email_goes_to_the_therapists_inbox_and_not_to_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    executed = Executed(monkeypatch)
    command_agent, database = agent()
    payload = {"therapist_id": 7, "subject": "Rückfrage", "body_html": "<p>Guten Tag</p>", "queue": False}
    await command_agent(RecordStream([command("communication.create_email", payload)]))  # type: ignore[arg-type]

    [forwarded] = sent(command_agent.topics.inbox)
    assert forwarded.key == b"7"
    message = inbox.decode(forwarded.value)
    assert isinstance(message, inbox.CreateEmail)
    content = message.content
    assert (content.subject, content.body_html) == ("Rückfrage", "<p>Guten Tag</p>")
    assert (content.queue, content.respect_contact_limit, content.recipient_email) == (False, True, None)
    assert database.runs == [] and executed.commands == []


async def test_lifting_a_suppression_goes_to_the_inbox_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    Executed(monkeypatch)
    command_agent, _ = agent()
    payload = {"therapist_id": 7, "reason": "Postfach wieder erreichbar"}
    await command_agent(RecordStream([command("communication.lift_email_suppression", payload)]))  # type: ignore[arg-type]

    [forwarded] = sent(command_agent.topics.inbox)
    message = inbox.decode(forwarded.value)
    assert isinstance(message, inbox.LiftEmailSuppression)
    assert (message.therapist_id, message.reason) == (7, "Postfach wieder erreichbar")


async def test_database_commands_reach_their_handlers_as_validated_models(monkeypatch: pytest.MonkeyPatch) -> None:
    executed = Executed(monkeypatch)
    command_agent, database = agent()
    response = {"email_id": 42, "received_at": "2026-11-23T10:15:00+01:00", "responses": []}
    call = {"therapist_id": 7, "placement_request_ids": [4711], "scheduled_at": "2026-11-24T10:05:00+01:00"}
    stream = RecordStream(
        [
            command("communication.record_email_response", response, 0),
            command("communication.schedule_phone_call", call, 1),
        ]
    )
    await command_agent(stream)  # type: ignore[arg-type]

    assert len(database.runs) == 2  # one transaction each
    first, second = executed.commands
    assert isinstance(first.payload, RecordEmailResponse)
    assert first.payload.received_at == datetime(2026, 11, 23, 9, 15, tzinfo=UTC)
    assert isinstance(second.payload, ScheduleCall)
    assert second.payload.placement_request_ids == [4711]
    assert sent(command_agent.topics.dlq) == []


async def test_a_malformed_command_is_dead_lettered_naming_the_field_and_the_next_one_is_carried_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    executed = Executed(monkeypatch)
    command_agent, _ = agent()
    stream = RecordStream(
        [
            command("communication.cancel_phone_call", {"phone_call_id": "neun"}, 5),
            command("communication.cancel_phone_call", {"phone_call_id": 9}, 6),
        ]
    )
    await command_agent(stream)  # type: ignore[arg-type]

    [dead] = [json.loads(s.value) for s in sent(command_agent.topics.dlq)]
    assert dead["offset"] == 5
    assert str(dead["reason"]).startswith("invalid payload: payload.phone_call_id")
    assert dead["event_type"] == "communication.cancel_phone_call"
    assert [c.command_type for c in executed.commands] == ["communication.cancel_phone_call"]


async def test_an_oversize_command_is_answered_with_a_rejection_not_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    executed = Executed(monkeypatch)
    command_agent, _ = agent()
    payload = {"therapist_id": 7, "subject": "Bild", "body_html": "<p>" + "x" * 5000 + "</p>"}
    await command_agent(RecordStream([command("communication.create_email", payload)]))  # type: ignore[arg-type]

    assert sent(command_agent.topics.dlq) == [] and sent(command_agent.topics.inbox) == []
    [refused] = executed.commands
    assert refused.payload is None
    [reason] = executed.rejections
    assert "COMM_MAX_COMMAND_BYTES" in reason and "payload.body_html" in reason
