"""How the service's Kafka clients authenticate and encrypt (COMM_KAFKA_SECURITY_*).

One mapping from settings onto every Kafka client the service opens: Faust's
consumer and producer (``faust_options``) and plain aiokafka clients such as the
admin client that creates topics (``client_options``).
"""

from __future__ import annotations

from typing import Any

from streams.settings import Settings


def faust_options(settings: Settings) -> dict[str, Any]:
    """Options for ``faust.App`` (broker_credentials)."""
    return {}


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client (producer, consumer, admin)."""
    return {}
