"""The service's own JSON (orjson: the table, the internal topics, the outbox) and the
input guard for what orjson cannot write (issue 19, point 2)."""

from __future__ import annotations

import json
import math
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.messages.codec import dumps, loads
from streams.messages.commands import COMMANDS
from streams.messages.inputs import MATCHING_EVENTS
from streams.messages.parsing import MAX_DEPTH, InputEvent, Rejection, parse_input, unencodable
from tests.events import encode, envelope, match_created

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_the_bytes_decode_to_the_same_values_as_the_standard_library_reads_them(value: Any):
    raw = dumps(value)
    assert loads(raw) == value
    assert json.loads(raw.decode("utf-8")) == value
    assert unencodable({"payload": value}) is None


def test_the_encoding_is_compact_utf8_as_before():
    document = {"name": "Müller", "ids": [1, 2], "nested": {"a": None}}
    assert dumps(document) == json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def test_read_only_mappings_are_written_as_objects():
    assert loads(dumps({"context": MappingProxyType({"n": 1})})) == {"context": {"n": 1}}


def test_what_is_not_json_is_still_refused_when_written():
    with pytest.raises(TypeError):
        dumps({"value": object()})


def create_email(context: Any) -> bytes:
    raw = json.dumps(
        envelope("communication.create_email", {"therapist_id": 1, "template": "custom", "context": context})
    )
    return raw.encode("utf-8")


@pytest.mark.parametrize(
    ("context", "reason"),
    [
        ({"n": 2**64}, "payload.context.n: the integer is outside the 64-bit range"),
        ({"n": -(2**63) - 1}, "payload.context.n: the integer is outside the 64-bit range"),
        ({"list": [1, {"x": float("nan")}]}, "payload.context.list[1].x: NaN and Infinity are not JSON numbers"),
        ({"x": float("inf")}, "payload.context.x: NaN and Infinity are not JSON numbers"),
    ],
)
def test_a_command_context_orjson_cannot_write_is_rejected_naming_the_field(context, reason):
    rejection = parse_input(create_email(context), COMMANDS)
    assert isinstance(rejection, Rejection)
    assert rejection.reason.startswith(reason)
    assert rejection.event_type == "communication.create_email" and rejection.event_id is not None
    assert str(2**64) not in rejection.reason


def test_the_edges_of_the_range_are_accepted_and_written():
    for edge in (2**64 - 1, -(2**63)):
        parsed = parse_input(create_email({"n": edge}), COMMANDS)
        assert isinstance(parsed, InputEvent)
        assert loads(dumps(parsed.payload.model_dump()))["context"]["n"] == edge


def test_nesting_deeper_than_the_limit_is_rejected_and_at_the_limit_accepted():
    def nested(levels: int) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for _ in range(levels):
            document = {"a": document}
        return document

    # The envelope and the payload are two levels, the context a third.
    assert isinstance(parse_input(create_email(nested(MAX_DEPTH - 3)), COMMANDS), InputEvent)
    rejection = parse_input(create_email(nested(MAX_DEPTH - 2)), COMMANDS)
    assert isinstance(rejection, Rejection)
    assert f"nested deeper than {MAX_DEPTH} levels" in rejection.reason


def test_nesting_that_python_cannot_even_read_is_rejected_not_raised():
    raw = b'{"event_type": "match.created", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    rejection = parse_input(raw, MATCHING_EVENTS)
    assert isinstance(rejection, Rejection) and "nested deeper" in rejection.reason


def test_a_patient_field_with_a_huge_number_is_rejected_before_it_reaches_the_inbox():
    rejection = parse_input(encode(match_created(1, 1, "2026-01-01T10:00:00+01:00", extra=10**30)), MATCHING_EVENTS)
    assert isinstance(rejection, Rejection)
    assert rejection.reason.startswith("payload.patient.extra: the integer is outside")


def test_finite_floats_pass():
    assert unencodable({"x": [math.pi, -0.0, 1e308]}) is None
