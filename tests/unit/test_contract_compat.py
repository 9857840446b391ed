"""The compatibility check of the contract (streams/contract/compat.py): it catches
what breaks a consumer of a published message or a producer of a consumed one, and
lets additive changes pass; and the committed document breaks no earlier version of
itself in this repository's history."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from streams.contract.command import to_yaml
from streams.contract.compat import breaking_changes, load, main
from streams.contract.document import build

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = "docs/asyncapi.yaml"


@pytest.fixture(scope="module")
def published() -> dict[str, Any]:
    return build()


@pytest.fixture
def changed(published: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(published)


def schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [str(change) for change in breaking_changes(old, new)]


def test_the_same_document_is_compatible(published: dict[str, Any]) -> None:
    assert changes(published, copy.deepcopy(published)) == []


def test_a_removed_field_of_a_published_message_breaks(published: dict[str, Any], changed: dict[str, Any]) -> None:
    sent = schema(changed, "EmailSent")
    del sent["properties"]["message_id"]
    sent["required"].remove("message_id")
    assert changes(published, changed) == [
        "communication.email_sent: payload.message_id: removed from a published message"
    ]


def test_a_removed_field_of_the_dead_letter_record_breaks(published: dict[str, Any], changed: dict[str, Any]) -> None:
    del schema(changed, "DeadLetter")["properties"]["value_encoding"]
    assert changes(published, changed) == ["dead_letter: value_encoding: removed from a published message"]


def test_a_retyped_field_of_a_published_message_breaks(published: dict[str, Any], changed: dict[str, Any]) -> None:
    schema(changed, "EmailSent")["properties"]["email_id"] = {"type": "string"}
    assert changes(published, changed) == ["communication.email_sent: payload.email_id: retyped from integer to string"]


def test_a_published_field_that_may_now_be_null_breaks(published: dict[str, Any], changed: dict[str, Any]) -> None:
    sent = schema(changed, "EmailSent")
    sent["properties"]["sent_at"] = {"anyOf": [sent["properties"]["sent_at"], {"type": "null"}]}
    assert changes(published, changed) == [
        "communication.email_sent: payload.sent_at: retyped from string(date-time) to null | string(date-time)"
    ]


def test_a_published_field_no_longer_always_there_breaks(published: dict[str, Any], changed: dict[str, Any]) -> None:
    schema(changed, "EmailSent")["required"].remove("sent_at")
    assert changes(published, changed) == ["communication.email_sent: payload.sent_at: no longer always present"]


def test_a_newly_required_input_field_breaks(published: dict[str, Any], changed: dict[str, Any]) -> None:
    schema(changed, "Patient")["required"].append("first_name")
    assert changes(published, changed) == ["match.created: payload.patient.first_name: made required (it was optional)"]


def test_a_new_required_command_field_breaks(published: dict[str, Any], changed: dict[str, Any]) -> None:
    cancel = schema(changed, "CancelCall")
    cancel["properties"]["cancelled_by"] = {"type": "string"}
    cancel["required"].append("cancelled_by")
    assert changes(published, changed) == [
        "communication.cancel_phone_call: payload.cancelled_by: a new required field of an input"
    ]


def test_a_removed_or_retyped_input_field_breaks(published: dict[str, Any], changed: dict[str, Any]) -> None:
    del schema(changed, "Patient")["properties"]["notes"]
    schema(changed, "MatchStatusChanged")["properties"]["patient_id"] = {"type": "string"}
    assert changes(published, changed) == [
        "match.created: payload.patient.notes: removed from an accepted input",
        "match.status_changed: payload.patient_id: retyped from integer to string",
    ]


def test_a_narrowed_input_enumeration_breaks(published: dict[str, Any], changed: dict[str, Any]) -> None:
    outcome = schema(changed, "CallOutcome")["properties"]["status"]
    outcome["enum"] = [value for value in outcome["enum"] if value != "busy"]
    assert changes(published, changed) == ["communication.record_call_outcome: payload.status: no longer accepts busy"]


def test_a_removed_message_breaks(published: dict[str, Any], changed: dict[str, Any]) -> None:
    del changed["components"]["messages"]["communication.email_queued"]
    del changed["channels"]["communication-events"]["messages"]["communication.email_queued"]
    operation = changed["operations"]["sendCommunicationEvents"]
    operation["messages"] = [ref for ref in operation["messages"] if not ref["$ref"].endswith("email_queued")]
    assert changes(published, changed) == ["communication.email_queued: the message was removed"]


def test_a_message_moved_to_another_topic_breaks(published: dict[str, Any], changed: dict[str, Any]) -> None:
    changed["channels"]["communication-dlq"]["address"] = "communication-dead-letters"
    assert changes(published, changed) == [
        "dead_letter: moved from topic communication-dlq to communication-dead-letters"
    ]


def test_an_added_optional_field_passes(published: dict[str, Any], changed: dict[str, Any]) -> None:
    schema(changed, "EmailSent")["properties"]["smtp_reply"] = {"type": "string"}
    schema(changed, "Patient")["properties"]["preferred_language"] = {"type": "string"}
    schema(changed, "CreateEmail")["properties"]["cc"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert changes(published, changed) == []


def test_additive_changes_pass(published: dict[str, Any], changed: dict[str, Any]) -> None:
    # A wider input type, a published field that is never null now, a new value of a
    # published enumeration, an input field made optional, a new message.
    schema(changed, "MatchStatusChanged")["properties"]["patient_id"] = {"type": ["integer", "string"]}
    scheduled = schema(changed, "PhoneCallScheduled")["properties"]["reason"]
    scheduled["enum"] = [*scheduled["enum"], "capacity"]
    schema(changed, "ScheduleCall")["required"].remove("placement_request_ids")
    messages = changed["components"]["messages"]
    messages["communication.email_bounced"] = copy.deepcopy(messages["communication.email_queued"])
    changed["channels"]["communication-events"]["messages"]["communication.email_bounced"] = {
        "$ref": "#/components/messages/communication.email_bounced"
    }
    assert changes(published, changed) == []


def test_the_command_line_exits_1_on_a_breaking_change(
    published: dict[str, Any], changed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "old.yaml").write_text(to_yaml(published), encoding="utf-8")
    (tmp_path / "same.yaml").write_text(to_yaml(published), encoding="utf-8")
    del schema(changed, "EmailSent")["properties"]["sent_at"]
    (tmp_path / "new.yaml").write_text(to_yaml(changed), encoding="utf-8")
    assert main([str(tmp_path / "old.yaml"), str(tmp_path / "same.yaml")]) == 0
    assert main([str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml")]) == 1
    output = capsys.readouterr()
    assert "communication.email_sent: payload.sent_at: removed from a published message" in output.out
    assert "new major version" in output.err
    assert main([]) == 2


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def earlier_versions() -> list[tuple[str, str]]:
    """Every version of docs/asyncapi.yaml committed before, newest first."""
    if shutil.which("git") is None or _git("rev-parse", "--git-dir").returncode != 0:
        return []
    commits = _git("log", "--format=%H", "--", DOCUMENT).stdout.split()
    versions = []
    for commit in commits:
        shown = _git("show", f"{commit}:{DOCUMENT}")
        if shown.returncode == 0:  # not the commit that deleted it
            versions.append((commit[:12], shown.stdout))
    return versions


def test_the_document_breaks_no_earlier_committed_version() -> None:
    """In CI HEAD's version is the committed one; every version before it was
    published too, and the same major version must stay compatible with all of them."""
    current = load((ROOT / DOCUMENT).read_text(encoding="utf-8"))
    versions = earlier_versions()
    if not versions:
        pytest.skip("no earlier docs/asyncapi.yaml in git history")
    major = str(current["info"]["version"]).split(".")[0]
    problems = [
        f"against {commit}: {change}"
        for commit, text in versions
        if str(load(text)["info"]["version"]).split(".")[0] == major  # a new major version starts afresh
        for change in breaking_changes(load(text), current)
    ]
    assert problems == [], "breaking changes to the published contract:\n" + "\n".join(problems)
