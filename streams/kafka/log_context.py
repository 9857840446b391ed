"""The Kafka record a log line was written while processing, for the log's fields."""

from __future__ import annotations

from collections.abc import Mapping

from faust.streams import current_event


def current_record() -> Mapping[str, object] | None:
    """topic, partition and offset of the record the running agent handles, if any."""
    event = current_event()
    if event is None:
        return None
    message = event.message
    return {"topic": message.topic, "partition": message.partition, "offset": message.offset}
