"""Jinja2 rendering of the email templates (HTML and plain text, autoescaped HTML).

A template directory given in the settings takes precedence over the packaged
templates, so an operator can change the wording without a release.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape



def packaged_templates() -> Path:
    return Path(str(resources.files("templates")))


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


class RenderError(Exception):
    """A template could not be rendered; the message says which and why."""


class Renderer:
    def __init__(self, zone: tzinfo, override_dir: Path | None = None) -> None:
        loaders = [FileSystemLoader(str(override_dir))] if override_dir else []
        loaders.append(FileSystemLoader(str(packaged_templates())))
        self.zone = zone
        self.environment = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(
                enabled_extensions=("html",), disabled_extensions=("txt",), default=True
            ),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self.environment.filters["local_date"] = self._local_date

    def _local_date(self, value: datetime | str) -> str:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return moment.astimezone(self.zone).strftime("%d.%m.%Y")

    def render(self, template: str, context: Mapping[str, Any]) -> RenderedEmail:
        try:
            raw_subject = self.environment.get_template(f"{template}.subject.txt").render(context)
            # One line: a line break in a header value could inject headers.
            subject = " ".join(raw_subject.split())
            context = {**context, "subject": subject}
            html = self.environment.get_template(f"{template}.html").render(context)
            text = self.environment.get_template(f"{template}.txt").render(context)
        except Exception as exc:
            raise RenderError(f"template {template!r}: {type(exc).__name__}: {exc}") from exc
        return RenderedEmail(subject=subject, html=html, text=text.strip() + "\n")
