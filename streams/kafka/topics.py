"""The service's topics: the public ones of CONTRACT §2 and the internal inbox and
send-command topics, all raw bytes (the messages encode and decode themselves)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from streams.kafka.table import THERAPIST_TABLE
from streams.settings import Settings

RAW = {"key_serializer": "raw", "value_serializer": "raw"}


def ingest_group(settings: Settings) -> str:
    """The consumer group that reads the input topics (streams.agents.ingest_consumer);
    Faust's group, ``COMM_APP_ID``, reads the commands and the internal topics."""
    return f"{settings.app_id}-ingest"


def internal_topic_names(settings: Settings) -> dict[str, str]:
    prefix = settings.app_id
    return {
        "inbox": f"{prefix}-therapist-inbox",
        "send_commands": f"{prefix}-send-commands",
        "changelog": f"{prefix}-{THERAPIST_TABLE}-changelog",
    }


@dataclass(frozen=True)
class Topics:
    matching: faust.TopicT
    therapists: faust.TopicT
    commands: faust.TopicT
    events: faust.TopicT
    dlq: faust.TopicT
    # Everything about one therapist, keyed by therapist: repartitioned inputs,
    # batch-run ticks and delivery feedback. Co-partitioned with the table.
    inbox: faust.TopicT
    # Therapist agent -> sender agent: what it decided (streams.messages.send_commands).
    send_commands: faust.TopicT


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    names = internal_topic_names(settings)

    def topic(name: str, **extra: Any) -> faust.TopicT:
        return app.topic(name, partitions=extra.pop("partitions", None), **RAW, **extra)

    return Topics(
        matching=topic(settings.topic_matching),
        therapists=topic(settings.topic_therapists),
        commands=topic(settings.topic_commands),
        events=topic(settings.topic_events),
        dlq=topic(settings.topic_dlq),
        inbox=topic(names["inbox"], partitions=settings.partitions, internal=True),
        send_commands=topic(names["send_commands"], partitions=settings.partitions, internal=True),
    )
