"""The therapist table: therapist_id -> TherapistState, changelogged to Kafka."""

from __future__ import annotations

import faust

from streams.messages.codec import STATE_CODEC, register_state_codec
from streams.settings import Settings

THERAPIST_TABLE = "therapists"


def declare_therapist_table(app: faust.App, settings: Settings) -> faust.Table:
    """therapist_id -> TherapistState, plus one batch-run bookmark per partition."""
    register_state_codec()
    table = app.Table(THERAPIST_TABLE, default=None, partitions=settings.partitions)
    # Faust derives serializers from key_type/value_type (faust Records). Writes read
    # these attributes; recovery decodes through the changelog topic, which was
    # already built (with JSON) when the table registered, so it is built again.
    table.key_serializer = "json"
    table.value_serializer = STATE_CODEC
    table.changelog_topic = table._new_changelog_topic()
    return table
