"""Every example payload in the README is valid input: the commands' payloads of the
Commands table, and any whole event in a JSON code block, against the input models
and against the published JSON Schema of their message (issue 16)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from streams.contract.command import json_schemas
from streams.messages.commands import COMMANDS
from streams.messages.envelope import Envelope
from streams.messages.inputs import MATCHING_EVENTS, THERAPIST_EVENTS
from streams.messages.parsing import InputEvent, parse_input

README = Path(__file__).resolve().parents[2] / "README.md"
INPUTS = {**MATCHING_EVENTS, **THERAPIST_EVENTS, **COMMANDS}


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    following = re.search(r"\n## ", text[start + 1 :])
    return text[start : start + 1 + following.start()] if following else text[start:]


def command_examples() -> list[tuple[str, dict[str, Any]]]:
    """(command, payload) for each example of the Commands table; a row whose first
    cell is empty gives another example of the command above it."""
    table = _section(README.read_text(encoding="utf-8"), "## Commands (`communication-commands`)")
    found: list[tuple[str, dict[str, Any]]] = []
    command = None
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) < 2 or re.fullmatch(r"[-: ]+", cells[0]):  # not a row, or the rule under the head
            continue
        named = re.fullmatch(r"`(communication\.[a-z_]+)`", cells[0])
        if named:
            command = named.group(1)
        payload = re.fullmatch(r"`(\{.*\})`", cells[1])
        if payload and command:
            found.append((command, json.loads(payload.group(1))))
    return found


def event_examples() -> list[tuple[str, dict[str, Any]]]:
    """Whole input events (an envelope with a known event_type) in ```json blocks."""
    found = []
    for block in re.findall(r"```json\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        document = json.loads(block)
        if isinstance(document, dict) and document.get("event_type") in INPUTS:
            found.append((document["event_type"], document))
    return found


def test_the_readme_has_an_example_of_every_command_in_its_table() -> None:
    examples = command_examples()
    assert len(examples) >= 11
    assert {command for command, _ in examples} == set(COMMANDS)


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    return json_schemas()


def _envelope(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": "0b7f5c1e-2f7a-4a44-9a53-1d4f3c3f6a10",
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": "2026-11-22T09:30:00+00:00",
        "producer": "staff-tool",
        "payload": payload,
    }


@pytest.mark.parametrize(
    ("event_type", "document"),
    [(command, _envelope(command, payload)) for command, payload in command_examples()] + event_examples(),
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_readme_example_is_valid_input(
    schemas: dict[str, dict[str, Any]], event_type: str, document: dict[str, Any]
) -> None:
    parsed = parse_input(json.dumps(document).encode(), INPUTS)
    assert isinstance(parsed, InputEvent), parsed
    assert isinstance(parsed.envelope, Envelope)
    errors = [error.message for error in Draft202012Validator(schemas[event_type]).iter_errors(document)]
    assert errors == []


def test_the_contracts_command_examples_are_the_readmes() -> None:
    from streams.contract.examples import INPUT_PAYLOADS

    readme = command_examples()
    for command in COMMANDS:
        assert INPUT_PAYLOADS[command] in [payload for name, payload in readme if name == command], command
