"""Jinja2 rendering of the email templates: subject, HTML and plain text.

Lookup, first match wins:

- per therapist: ``therapists/<therapist_id>/<name>.html|.txt|.subject.txt``, any
  subset of the three parts, in ``override_dir`` and then in the packaged templates;
- standard: ``<name>.html|.txt|.subject.txt`` in ``override_dir`` and then in the
  packaged templates (so an operator can change the wording without a release).

A broken per-therapist override never blocks an email: the standard templates are
used instead and ``RenderedEmail.fallback_reason`` says why (the caller raises an
alert). A broken standard template raises ``RenderError``, which fails that one
email. Neither message carries patient data: the context holds health data, and
these messages end up in logs, alerts and the ``error_message`` column.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    select_autoescape,
)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

PARTS = (".subject.txt", ".html", ".txt")
THERAPIST_KEYS = ("title", "salutation", "first_name", "last_name", "email", "phone")
PATIENT_KEYS = (
    "first_name",
    "last_name",
    "gender",
    "age",
    "insurance",
    "diagnosis",
    "availability",
    "notes",
    "registered_at",
    "placement_request_id",
)
SENDER_KEYS = ("name", "email")
MAX_SUBJECT = 200
# How often template files are looked at again (overrides added, templates edited).
RESCAN_EVERY = 30.0

# Template names come from commands of other services: never a path.
_TEMPLATE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Line breaks and other control characters, which must never reach a header.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# Free-text gender values as the matching service may send them -> (label, grammar).
# Grammar drives German word forms: "f" Patientin, "m" Patient, "n" Person (neutral).
_GENDERS: dict[str, tuple[str, str]] = {}
for _label, _grammar, _spellings in (
    ("weiblich", "f", ("female", "weiblich", "w", "f", "frau", "woman")),
    ("männlich", "m", ("male", "männlich", "maennlich", "m", "mann", "man")),
    ("divers", "n", ("diverse", "divers", "d", "x", "non-binary", "nonbinary", "nichtbinär")),
):
    for _spelling in _spellings:
        _GENDERS[_spelling] = (_label, _grammar)


def packaged_templates() -> Path:
    return Path(str(resources.files("templates")))


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    # Set when a per-therapist override was broken and the standard templates were
    # used instead; says which file and why, never patient data.
    fallback_reason: str | None = None


class RenderError(Exception):
    """A standard template could not be rendered; the message says which and why."""


class _TemplateProblem(Exception):
    """Raised by the renderer's own checks and filters; its message is safe to report."""


_SAFE_MESSAGES = (
    TemplateSyntaxError,
    UndefinedError,
    TemplateNotFound,
    SecurityError,
    _TemplateProblem,
)


class Renderer:
    def __init__(self, zone: tzinfo, override_dir: Path | None = None) -> None:
        self.zone = zone
        self.search_path = [p for p in (override_dir, packaged_templates()) if p is not None]
        # Sandboxed: per-therapist templates may be written by people who should not
        # be able to reach Python internals through a template.
        self.environment = SandboxedEnvironment(
            loader=FileSystemLoader([str(p) for p in self.search_path]),
            autoescape=select_autoescape(enabled_extensions=("html",), disabled_extensions=("txt",), default=True),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            # Checked every RESCAN_EVERY seconds instead (see _refresh): stat()ing
            # every template file on every render was a tenth of delivery's CPU.
            auto_reload=False,
        )
        self._override_files: frozenset[str] = frozenset()
        self._scanned_at: float | None = None
        self.environment.filters["local_date"] = self.local_date
        self.environment.globals.update(
            salutation=salutation,
            full_name=full_name,
            gender_label=gender_label,
            grammar=grammar,
        )

    def local_date(self, value: datetime | str) -> str:
        """A German date (05.01.2026) in the renderer's time zone."""
        try:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        except ValueError:
            raise _TemplateProblem("local_date: not an ISO 8601 date") from None
        if not isinstance(moment, datetime):
            raise _TemplateProblem("local_date: not a date")
        if moment.tzinfo is None:  # the service stores UTC
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(self.zone).strftime("%d.%m.%Y")

    def render(self, template: str, context: Mapping[str, Any], therapist_id: int | None = None) -> RenderedEmail:
        if not _TEMPLATE_NAME.fullmatch(template):
            raise RenderError("template name must be lower-case letters, digits and '_'")
        try:
            complete = complete_context(context)
        except Exception as exc:
            raise RenderError(f"template {template!r}: malformed context ({type(exc).__name__})") from exc
        fallback_reason = None
        if therapist_id is not None:
            overrides = self._overrides(template, int(therapist_id))
            if overrides:
                try:
                    return self._render(template, complete, overrides)
                except Exception as exc:
                    fallback_reason = (
                        f"therapist {int(therapist_id)}: override of template {template!r} "
                        f"is broken, standard template used: {self._describe(exc, complete)}"
                    )
        try:
            rendered = self._render(template, complete, {})
        except Exception as exc:
            raise RenderError(f"template {template!r}: {self._describe(exc, complete)}") from exc
        return replace(rendered, fallback_reason=fallback_reason)

    def _overrides(self, template: str, therapist_id: int) -> dict[str, str]:
        """The parts this therapist has an override for: part -> template name."""
        self._refresh()
        found = {}
        for part in PARTS:
            name = f"therapists/{therapist_id}/{template}{part}"
            if name in self._override_files:
                found[part] = name
        return found

    def _refresh(self) -> None:
        """Rescan the per-therapist overrides and forget compiled templates at most
        every RESCAN_EVERY seconds, so edited templates take effect without a restart."""
        now = time.monotonic()
        if self._scanned_at is not None and now - self._scanned_at < RESCAN_EVERY:
            return
        self._scanned_at = now
        files: set[str] = set()
        for base in self.search_path:
            therapists = base / "therapists"
            if therapists.is_dir():
                files.update(p.relative_to(base).as_posix() for p in therapists.glob("*/*") if p.is_file())
        self._override_files = frozenset(files)
        if self.environment.cache is not None:
            self.environment.cache.clear()

    def _render(self, template: str, context: Mapping[str, Any], overrides: Mapping[str, str]) -> RenderedEmail:
        def load(part: str) -> Any:
            return self.environment.get_template(overrides.get(part, f"{template}{part}"))

        subject = one_line(load(".subject.txt").render(context))
        if not subject:
            raise _TemplateProblem("the subject is empty")
        context = {**context, "subject": subject}
        html = load(".html").render(context)
        text = load(".txt").render(context)
        if not html.strip() or not text.strip():
            raise _TemplateProblem("the HTML or the text part is empty")
        return RenderedEmail(subject=subject, html=html, text=tidy_text(text))

    def _describe(self, exc: BaseException, context: Mapping[str, Any]) -> str:
        """Where and what, without the data: a message is only kept for exception
        types whose messages are made from template source, and even then any value
        taken from the context is blanked out."""
        where = self._where(exc)
        what = type(exc).__name__
        if isinstance(exc, _SAFE_MESSAGES):
            if isinstance(exc, TemplateNotFound):  # its message lists the search path
                message = f"{exc.name!r} not found"
            elif isinstance(exc, TemplateSyntaxError):  # str() would quote the source line
                message = exc.message or ""
            else:
                message = str(exc)
            message = one_line(scrub(message, context))
            if message:
                what = f"{what}: {message}"
        return f"{where}: {what}" if where else what

    def _where(self, exc: BaseException) -> str:
        if isinstance(exc, TemplateSyntaxError) and exc.filename:
            return f"{self._relative(exc.filename)} line {exc.lineno}"
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename.endswith((".html", ".txt")):
                return f"{self._relative(frame.filename)} line {frame.lineno}"
        return ""

    def _relative(self, filename: str) -> str:
        path = Path(filename)
        for base in self.search_path:
            if path.is_relative_to(base):
                return path.relative_to(base).as_posix()
        return path.name


def complete_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """The context with every documented key present (None when unknown) and blank
    strings as None, so templates test ``if p.notes`` and never print "None"."""

    def complete(value: Any, keys: tuple[str, ...]) -> dict[str, Any]:
        if value is not None and not isinstance(value, Mapping):
            raise TypeError("expected a mapping")
        given = dict(value or {})
        return {key: _blank_as_none(given.get(key)) for key in keys} | {
            key: _blank_as_none(item) for key, item in given.items() if key not in keys
        }

    patients = context.get("patients") or []
    return {
        **context,
        "therapist": complete(context.get("therapist"), THERAPIST_KEYS),
        "patients": [complete(p, PATIENT_KEYS) for p in patients],
        "sender": complete(context.get("sender"), SENDER_KEYS),
        # The footer's one-click opt-out link (contact and follow-up emails, when on).
        "unsubscribe_url": _blank_as_none(context.get("unsubscribe_url")),
    }


def _blank_as_none(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


def one_line(value: str) -> str:
    """A header value: no line breaks or control characters, collapsed blanks, bounded."""
    return " ".join(_CONTROL.sub(" ", value).split())[:MAX_SUBJECT]


def tidy_text(text: str) -> str:
    """At most one blank line in a row, no trailing blanks, one final newline."""
    # "-- " (with its blank) is the signature delimiter mail clients recognise.
    lines = [line if line == "-- " else line.rstrip() for line in text.strip().splitlines()]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy) + "\n"


def scrub(message: str, context: Mapping[str, Any]) -> str:
    for value in sorted(set(_values(context)), key=len, reverse=True):
        if len(value) >= 2 or value.isdigit():
            pattern = rf"\b{re.escape(value)}\b" if value.isdigit() else re.escape(value)
            message = re.sub(pattern, "…", message, flags=re.IGNORECASE)
    return message


def _values(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _values(item)
    elif isinstance(value, str | int) and not isinstance(value, bool):
        yield str(value).strip()


def salutation(therapist: Mapping[str, Any]) -> str:
    """``Sehr geehrte Frau Dr. Müller``; ``Guten Tag Kim Müller`` when the salutation
    is not Frau or Herr (neutral form); ``Guten Tag`` when no name is known."""
    title = therapist.get("title") or ""
    last = therapist.get("last_name") or ""
    form = str(therapist.get("salutation") or "").strip().casefold()
    if last and form == "frau":
        return " ".join(p for p in ("Sehr geehrte Frau", title, last) if p)
    if last and form == "herr":
        return " ".join(p for p in ("Sehr geehrter Herr", title, last) if p)
    name = " ".join(p for p in (title, therapist.get("first_name"), last) if p)
    return f"Guten Tag {name}" if name else "Guten Tag"


def full_name(person: Mapping[str, Any]) -> str:
    return " ".join(str(p) for p in (person.get("first_name"), person.get("last_name")) if p)


def gender_label(value: Any) -> str:
    """The gender as German text; a value the service does not know is shown as given."""
    if value is None:
        return ""
    known = _GENDERS.get(str(value).strip().casefold())
    return known[0] if known else str(value)


def grammar(patient: Mapping[str, Any]) -> str:
    """``f``, ``m`` or ``n``: which German word forms fit; neutral unless known."""
    known = _GENDERS.get(str(patient.get("gender") or "").strip().casefold())
    return known[1] if known else "n"
