"""The log format: JSON lines with the ids in context as fields; text unchanged."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config

import pytest

from streams.ops.logs import bind_log_context, log_context, logging_config


def capture(log_format: str, sources=()) -> tuple[logging.Logger, io.StringIO]:
    config = logging_config("INFO", log_format, sources)  # type: ignore[arg-type]
    stream = io.StringIO()
    config["handlers"]["stderr"]["stream"] = stream
    config["disable_existing_loggers"] = False
    logging.config.dictConfig(config)
    return logging.getLogger("commsvc.test"), stream


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False, "root": {"handlers": []}})


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message():
    log, stream = capture("json")
    log.warning("email %s sent", 7)
    [line] = lines(stream)
    assert line["level"] == "WARNING"
    assert line["logger"] == "commsvc.test"
    assert line["message"] == "email 7 sent"
    assert line["time"].endswith("+00:00") and line["time"][:4].isdigit()


def test_ids_in_context_become_fields_and_leave_with_the_block():
    log, stream = capture("json")
    with log_context(therapist_id=4, email_id=9):
        with log_context(event_id="e-1"):
            log.info("inner")
        log.info("outer")
    log.info("after")
    inner, outer, after = lines(stream)
    assert (inner["therapist_id"], inner["email_id"], inner["event_id"]) == (4, 9, "e-1")
    assert "event_id" not in outer and outer["email_id"] == 9
    assert not {"therapist_id", "email_id", "event_id"} & after.keys()


async def test_bound_ids_replace_the_previous_ones_and_stay_in_their_task():
    log, stream = capture("json")

    async def handle(event_id: str, therapist_id: int | None) -> None:
        bind_log_context(event_id=event_id, therapist_id=therapist_id)
        log.info("handled")
        bind_log_context(event_id=event_id + "-next")  # the next message of the loop
        log.info("next")

    await asyncio.gather(handle("a", 1), handle("b", None))
    log.info("outside the tasks")
    got = lines(stream)
    assert {(g.get("event_id"), g.get("therapist_id")) for g in got[:-1]} == {
        ("a", 1),
        ("a-next", None),
        ("b", None),
        ("b-next", None),
    }
    assert "event_id" not in got[-1]


def test_a_source_adds_the_record_being_processed():
    record = {"topic": "matching-events", "partition": 2, "offset": 41}
    log, stream = capture("json", [lambda: record])
    log.info("forwarded")
    [line] = lines(stream)
    assert (line["topic"], line["partition"], line["offset"]) == ("matching-events", 2, 41)


def test_only_ids_may_go_into_the_context():
    with pytest.raises(ValueError, match="first_name"), log_context(first_name="Eva"):
        pass


def test_text_format_is_one_plain_line():
    log, stream = capture("text")
    with log_context(email_id=3):
        log.info("email sent")
    text = stream.getvalue()
    assert "INFO [commsvc.test] email sent" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_debug_never_reaches_the_frameworks_whose_debug_lines_carry_record_values():
    loggers = logging_config("DEBUG", "json")["loggers"]
    for name in ("faust", "aiokafka", "mode"):
        assert loggers[name]["level"] == "INFO"
    assert loggers["sqlalchemy"]["level"] == "WARNING"  # statements with their parameters
