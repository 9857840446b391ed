"""Where the table lives on the worker's host (COMM_STORE, COMM_DATA_DIR)."""

from __future__ import annotations

from typing import Any

from streams.settings import Settings


def faust_options(settings: Settings) -> dict[str, Any]:
    """Options for ``faust.App``: the store URL and data directory."""
    return {"store": "memory://"}
