"""The worker's web server: health probes and metrics (COMM_WEB_*)."""

from __future__ import annotations

from typing import Any

from streams.settings import Settings


def faust_options(settings: Settings) -> dict[str, Any]:
    """Options for ``faust.App``: the web server, with Faust's own views off."""
    return {"web_enabled": False}
