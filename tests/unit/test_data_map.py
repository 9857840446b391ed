"""The data map (docs/data-protection.md) is kept true: the database columns that
hold patient data are declared (streams/persistence/patient_data.py) and listed in
the doc, every other text column is declared free of them, and the places that
need no patient data (events, metrics, API lists, the DLQ topic's creation) carry
none by their shape."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from uuid import UUID

from pydantic import AwareDatetime, BaseModel
from sqlalchemy import JSON, String, Text

from streams.kafka.admin import topic_plan
from streams.kafka.topics import internal_topic_names
from streams.messages.outputs import OUTPUT_EVENTS
from streams.ops.metrics import PrometheusMetrics
from streams.persistence import call_reads, reads
from streams.persistence.models import Base
from streams.persistence.patient_data import (
    ERASED_PATIENT,
    EVENT_TEXT,
    EXPIRED_PATIENT,
    NO_PATIENT_DATA,
    PATIENT_DATA,
    holds_details,
)
from streams.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "data-protection.md"
# What match.created says about a patient, and what would name it in a message.
PATIENT_FIELDS = {"patient", "first_name", "last_name", "gender", "age", "insurance", "diagnosis", "availability"}


def text_columns() -> set[str]:
    """Every JSON or text column, and every string column long enough for free text."""
    found = set()
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            kind = column.type
            free_text = isinstance(kind, String) and not hasattr(kind, "enums") and (kind.length or 0) >= 255
            if isinstance(kind, JSON | Text) or free_text:
                found.add(f"{table.name}.{column.name}")
    return found


def all_columns() -> set[str]:
    return {f"{t.name}.{c.name}" for t in Base.metadata.sorted_tables for c in t.columns}


def test_every_text_column_is_declared_as_patient_data_or_free_of_it():
    undeclared = text_columns() - PATIENT_DATA.keys() - NO_PATIENT_DATA.keys()
    assert undeclared == set(), "declare these in streams/persistence/patient_data.py"
    assert PATIENT_DATA.keys() & NO_PATIENT_DATA.keys() == set()
    assert (PATIENT_DATA.keys() | NO_PATIENT_DATA.keys()) - all_columns() == set()  # no stale names
    assert all(why.strip() for why in (*PATIENT_DATA.values(), *NO_PATIENT_DATA.values()))


def documented_columns() -> list[str]:
    text = DOC.read_text()
    block = text.split("<!-- patient-data-columns -->", 1)[1].split("<!-- /patient-data-columns -->", 1)[0]
    return re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", block, flags=re.MULTILINE)


def test_the_data_map_lists_exactly_the_columns_declared_as_patient_data():
    documented = documented_columns()
    assert len(documented) == len(set(documented))
    assert set(documented) == PATIENT_DATA.keys()


def test_the_markers_say_nothing_about_the_person():
    assert not holds_details(ERASED_PATIENT) and not holds_details(EXPIRED_PATIENT)
    assert not holds_details({}) and not holds_details(None)
    assert holds_details({"first_name": "Erika"})
    assert set(ERASED_PATIENT) & (PATIENT_FIELDS - {"notes"}) == set()


def _leaves(annotation: Any) -> list[Any]:
    """The types a field's annotation allows, unions and lists unpacked."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _leaves(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple):
        return [leaf for arg in get_args(annotation) for leaf in _leaves(arg)]
    return [annotation]


def _fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> typing.Iterator[tuple[str, str, Any]]:
    """(model name, field name, leaf type) of a model and of the models inside it."""
    if model in seen:
        return
    seen.add(model)
    for name, info in model.model_fields.items():
        for leaf in _leaves(info.annotation):
            if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                yield from _fields(leaf, seen)
            else:
                yield model.__name__, name, leaf


CLOSED = (int, bool, float, datetime, AwareDatetime, date, timedelta, UUID, Enum, type(None))


def test_events_carry_ids_times_and_counts_and_their_text_fields_are_declared():
    assert len(OUTPUT_EVENTS) >= 20
    seen: set[type[BaseModel]] = set()
    fields = [f for model in OUTPUT_EVENTS.values() for f in _fields(model, seen)]
    named_after_patients = sorted({f"{m}.{n}" for m, n, _ in fields if n in PATIENT_FIELDS})
    assert named_after_patients == []
    text = {
        f"{m}.{n}"
        for m, n, leaf in fields
        if not (get_origin(leaf) is Literal or (isinstance(leaf, type) and issubclass(leaf, CLOSED)))
    }
    assert text - EVENT_TEXT.keys() == set(), "declare these in patient_data.EVENT_TEXT, or make them closed"
    assert EVENT_TEXT.keys() - text == set()  # no stale names


def test_the_api_lists_carry_no_bodies_answers_or_notes():
    for summary, table in ((reads.EmailSummary, "emails"), (call_reads.CallSummary, "phone_calls")):
        names = {field.name for field in dataclasses.fields(summary)}
        assert {f"{table}.{name}" for name in names} & PATIENT_DATA.keys() == set()
        assert not any(re.search("body|notes|content|patient$", name) for name in names)
    page_items = {f.name: f.type for f in dataclasses.fields(reads.EmailPage)} | {
        f.name: f.type for f in dataclasses.fields(call_reads.CallPage)
    }
    assert set(page_items) == {"emails", "phone_calls", "next_after"}


def test_metric_labels_name_kinds_never_people():
    metrics = PrometheusMetrics()
    labels = {
        name
        for collector in list(metrics.registry._collector_to_names)  # prometheus_client keeps no public list
        for name in getattr(collector, "_labelnames", ())
    }
    assert labels  # the service's own metrics are labelled
    assert labels <= {"topic", "outcome", "source", "kind", "class", "status", "event", "code"}


def test_the_dlq_topic_is_created_with_its_retention_and_the_changelog_compacted():
    settings = Settings.from_environ({"COMM_DLQ_RETENTION": "14d"})
    plan = {name: config for name, _, config in topic_plan(settings)}
    assert plan[settings.topic_dlq] == {"retention.ms": str(14 * 24 * 3600 * 1000)}
    assert plan[internal_topic_names(settings)["changelog"]] == {"cleanup.policy": "compact"}
    default = {name: config for name, _, config in topic_plan(Settings.from_environ({}))}
    assert default["communication-dlq"] == {"retention.ms": "2592000000"}  # 30 days
