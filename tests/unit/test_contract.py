"""The published contract (issue 16): docs/asyncapi.yaml is what ``commsvc schema``
generates now, it is a valid AsyncAPI 3.0 document, it documents every message the
service knows with a valid example, and the JSON Schemas per message agree with the
models; docs/asyncapi.html is the rendering of that document."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from streams.contract import catalogue
from streams.contract.command import asyncapi_text, json_schemas, run_schema
from streams.contract.document import build, documented_security, supported_security
from streams.contract.schemas import document_model
from streams.messages.commands import COMMANDS
from streams.messages.inputs import MATCHING_EVENTS, THERAPIST_EVENTS
from streams.messages.output_envelope import event_model
from streams.messages.outputs import DEAD_LETTER, OUTPUT_EVENTS
from streams.settings import Settings
from tests.asyncapi_spec import asyncapi_errors

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "asyncapi.yaml"
PAGE = ROOT / "docs" / "asyncapi.html"
REGENERATE = "run `commsvc schema --out docs/asyncapi.yaml` (then .ci/render-asyncapi-html) and commit the result"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build()


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    return json_schemas()


def test_the_committed_document_is_what_the_generator_writes() -> None:
    assert COMMITTED.exists(), f"docs/asyncapi.yaml is missing: {REGENERATE}"
    committed = COMMITTED.read_text(encoding="utf-8")
    generated = asyncapi_text()
    if committed != generated:
        diff = difflib.unified_diff(
            committed.splitlines(), generated.splitlines(), "docs/asyncapi.yaml", "commsvc schema", lineterm=""
        )
        pytest.fail(
            f"docs/asyncapi.yaml is out of date with the wire models: {REGENERATE}\n" + "\n".join(list(diff)[:40]),
            pytrace=False,
        )


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert asyncapi_errors(document) == []


def test_the_validator_sees_an_invalid_document(document: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(document))
    broken["channels"]["matching-events"]["address"] = 5
    del broken["operations"]["receiveMatchingEvents"]["action"]
    broken["components"]["securitySchemes"]["saslPlain"]["type"] = "password"
    errors = asyncapi_errors(broken)
    assert len(errors) >= 3, errors


def test_generation_is_deterministic(document: dict[str, Any]) -> None:
    assert build() == document
    assert asyncapi_text() == asyncapi_text()
    assert yaml.safe_load(asyncapi_text()) == document


def test_every_message_the_service_knows_is_documented(document: dict[str, Any]) -> None:
    expected = {*MATCHING_EVENTS, *THERAPIST_EVENTS, *COMMANDS, *OUTPUT_EVENTS, "dead_letter"}
    assert set(document["components"]["messages"]) == expected
    on_channels = {name for channel in document["channels"].values() for name in channel["messages"]}
    assert on_channels == expected
    in_operations = {ref["$ref"].rsplit("/", 1)[-1] for op in document["operations"].values() for ref in op["messages"]}
    assert in_operations == expected


def test_the_five_public_topics_under_their_default_names(document: dict[str, Any]) -> None:
    defaults = [
        Settings.model_fields[name].default
        for name in ("topic_matching", "topic_therapists", "topic_commands", "topic_events", "topic_dlq")
    ]
    assert defaults == [
        "matching-events",
        "therapist-events",
        "communication-commands",
        "communication-events",
        "communication-dlq",
    ]
    channels = document["channels"]
    assert list(channels) == defaults
    for topic, channel in channels.items():
        assert channel["address"] == topic
        assert channel["bindings"]["kafka"]["topic"] == topic
    actions = {op["channel"]["$ref"].rsplit("/", 1)[-1]: op["action"] for op in document["operations"].values()}
    assert actions == {
        "matching-events": "receive",
        "therapist-events": "receive",
        "communication-commands": "receive",
        "communication-events": "send",
        "communication-dlq": "send",
    }


def test_every_message_names_its_key(document: dict[str, Any]) -> None:
    keys = {
        "matching-events": "placement_request_id",
        "therapist-events": "therapist_id",
        "communication-commands": "therapist_id",
        "communication-events": "therapist_id",
    }
    for topic, channel in document["channels"].items():
        for name in channel["messages"]:
            key = document["components"]["messages"][name]["bindings"]["kafka"]["key"]
            if topic in keys:
                assert key["type"] == "string" and keys[topic] in key["description"], (name, key)
                assert re.fullmatch(key["pattern"], key["examples"][0])
            else:
                assert key["type"] == ["string", "null"], (name, key)


def test_the_security_the_service_supports_is_documented(document: dict[str, Any]) -> None:
    assert documented_security() == supported_security()
    schemes = document["components"]["securitySchemes"]
    assert {scheme["type"] for scheme in schemes.values()} == {"plain", "scramSha256", "scramSha512", "X509"}
    servers = document["servers"]
    protocols = {server["title"].removeprefix("COMM_KAFKA_SECURITY_PROTOCOL=") for server in servers.values()}
    assert protocols == {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
    for server in servers.values():
        tls = server["title"].endswith("SSL")
        assert server["protocol"] == ("kafka-secure" if tls else "kafka")
        for requirement in server.get("security", ()):
            assert requirement["$ref"].removeprefix("#/components/securitySchemes/") in schemes
    assert servers["ssl-client-certificate"]["security"] == [{"$ref": "#/components/securitySchemes/mutualTLS"}]


def _messages() -> list[catalogue.Message]:
    return catalogue.messages()


@pytest.mark.parametrize("message", _messages(), ids=lambda m: m.name)
def test_every_example_is_valid(
    document: dict[str, Any], schemas: dict[str, dict[str, Any]], message: catalogue.Message
) -> None:
    examples = document["components"]["messages"][message.name]["examples"]
    assert examples, f"{message.name} has no example"
    for sample in examples:
        value = sample["payload"]
        document_model(message).model_validate(value)
        assert list(Draft202012Validator(schemas[message.name]).iter_errors(value)) == []
        if message.kind == "output":
            # The example is what the service itself would publish, key for key.
            real = event_model(message.payload).model_validate(value)
            assert real.model_dump(mode="json") == value
            assert value["event_type"] == message.name and value["producer"] == "communication-service"
        elif message.kind == "dead_letter":
            assert DEAD_LETTER.model_validate(value).model_dump(mode="json") == value
        else:
            assert message.payload.model_validate(value["payload"])
            assert value["event_type"] == message.name


@pytest.mark.parametrize("message", _messages(), ids=lambda m: m.name)
def test_each_json_schema_is_the_whole_message(schemas: dict[str, dict[str, Any]], message: catalogue.Message) -> None:
    schema = schemas[message.name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    if message.enveloped:
        properties = schema["properties"]
        assert set(schema["required"]) >= {"event_id", "event_type", "schema_version", "occurred_at", "payload"}
        assert properties["event_type"]["const"] == message.name
        assert properties["schema_version"]["const"] == 1
        assert properties["payload"]["$ref"].startswith("#/$defs/")
    else:
        assert set(schema["required"]) >= {"reason", "source_topic", "partition", "offset", "key", "value"}


def test_a_json_schema_refuses_a_wrong_message(schemas: dict[str, dict[str, Any]]) -> None:
    sent = build()["components"]["messages"]["communication.email_sent"]["examples"][0]["payload"]
    validator = Draft202012Validator(schemas["communication.email_sent"])
    assert not list(validator.iter_errors(sent))
    wrong_type = {**sent, "event_type": "communication.email_queued"}
    no_field = {**sent, "payload": {k: v for k, v in sent["payload"].items() if k != "message_id"}}
    retyped = {**sent, "payload": {**sent["payload"], "email_id": "42"}}
    for bad in (wrong_type, no_field, retyped):
        assert list(validator.iter_errors(bad)), bad


def test_the_envelope_of_an_input_accepts_what_the_parser_accepts(schemas: dict[str, dict[str, Any]]) -> None:
    created = build()["components"]["messages"]["match.created"]["examples"][0]["payload"]
    extended = {**created, "trace_id": "abc", "payload": {**created["payload"], "source": "portal"}}
    assert not list(Draft202012Validator(schemas["match.created"]).iter_errors(extended))


def test_run_schema_writes_yaml_or_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_schema("asyncapi", tmp_path / "contract" / "asyncapi.yaml") == 0
    assert (tmp_path / "contract" / "asyncapi.yaml").read_text(encoding="utf-8") == asyncapi_text()
    assert run_schema("asyncapi", tmp_path / "asyncapi.json") == 0
    assert json.loads((tmp_path / "asyncapi.json").read_text(encoding="utf-8")) == build()
    capsys.readouterr()
    assert run_schema() == 0
    assert capsys.readouterr().out == asyncapi_text()


def test_run_schema_writes_one_json_schema_per_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schemas"
    assert run_schema("jsonschema", out) == 0
    written = sorted(path.name for path in out.iterdir())
    assert written == sorted(f"{message.name}.json" for message in _messages())
    for name in ("communication.email_sent.json", "match.created.json", "dead_letter.json"):
        assert name in written
    assert json.loads((out / "dead_letter.json").read_text(encoding="utf-8"))["title"] == DEAD_LETTER.__name__
    capsys.readouterr()
    assert run_schema("jsonschema") == 0
    mapping = json.loads(capsys.readouterr().out)
    assert mapping == json_schemas()
    assert json.loads((out / "match.created.json").read_text(encoding="utf-8")) == mapping["match.created"]


def test_run_schema_refuses_a_file_for_the_json_schemas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "taken"
    target.write_text("", encoding="utf-8")
    assert run_schema("jsonschema", target) == 2
    assert "not a directory" in capsys.readouterr().err
    assert run_schema("openapi", None) == 2  # type: ignore[arg-type]


def _page_document() -> tuple[str, dict[str, Any]]:
    page = PAGE.read_text(encoding="utf-8")
    stamp = re.search(r'<meta name="asyncapi-document-sha256" content="([0-9a-f]{64})">', page)
    assert stamp, "docs/asyncapi.html carries no asyncapi-document-sha256: run .ci/render-asyncapi-html"
    embedded = re.search(r"const schema = (\{.*?\});\n\s*const config", page, re.S)
    assert embedded, "docs/asyncapi.html embeds no document"
    return stamp.group(1), json.loads(embedded.group(1))


def test_the_html_reference_is_the_rendering_of_the_committed_document() -> None:
    assert PAGE.exists(), "docs/asyncapi.html is missing: run .ci/render-asyncapi-html"
    stamp, embedded = _page_document()
    committed = yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))
    assert stamp == hashlib.sha256(COMMITTED.read_bytes()).hexdigest(), (
        "docs/asyncapi.html was rendered from another docs/asyncapi.yaml: run .ci/render-asyncapi-html"
    )
    assert embedded["info"]["title"] == committed["info"]["title"]
    assert set(embedded["components"]["messages"]) == set(committed["components"]["messages"])
    assert set(embedded["channels"]) == set(committed["channels"])


def test_the_html_reference_loads_nothing_from_elsewhere() -> None:
    page = PAGE.read_text(encoding="utf-8")
    for tag in re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", page):
        assert not re.search(r"""\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", tag), tag
