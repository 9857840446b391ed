"""``commsvc preview``: every email template rendered with realistic sample data.

The files let a person read exactly what therapists will receive (HTML and plain
text, with the subject) before anything goes out. The people in the samples are
invented; no real data is read.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from streams.email.rendering import PATIENT_KEYS, RenderedEmail, Renderer
from streams.email.unsubscribe import make_token

DEFAULT_ZONE = "Europe/Berlin"
SENDER = {"name": "Therapieplatz-Vermittlung", "email": "therapieplatz@example.org"}
# The footer's one-click opt-out link of contact and follow-up emails, as it looks
# with COMM_UNSUBSCRIBE_URL set (without it there is no such line).
UNSUBSCRIBE_URL = "https://therapieplatz.example.org/unsubscribe/" + make_token(
    b"preview", 7, "praxis.mueller@example.org"
)


@dataclass(frozen=True)
class PreviewCase:
    name: str
    title: str
    template: str
    context: Mapping[str, Any]


def _therapist(first_name: str, last_name: str, salutation: str | None, title: str | None = None) -> dict[str, Any]:
    return {
        "title": title,
        "salutation": salutation,
        "first_name": first_name,
        "last_name": last_name,
        "email": f"praxis.{last_name.lower()}@example.org",
        "phone": None,
    }


def _patient(request_id: int, registered_at: str, **fields: Any) -> dict[str, Any]:
    keys = [key for key in PATIENT_KEYS if key not in ("registered_at", "placement_request_id")]
    return {
        **{key: fields.get(key) for key in keys},
        "registered_at": registered_at,
        "placement_request_id": request_id,
    }


ANNA = _patient(
    4711,
    "2026-01-05T10:15:00+01:00",
    first_name="Anna",
    last_name="Schneider",
    gender="female",
    age=34,
    insurance="gesetzlich (Techniker Krankenkasse)",
    diagnosis="F32.1 Mittelgradige depressive Episode",
    availability="Montags und mittwochs ab 16 Uhr, freitags ganztägig",
    notes=("Wünscht Verhaltenstherapie; Termine am frühen Morgen sind wegen Schichtarbeit nicht möglich."),
)
FIVE = [
    _patient(
        4702,
        "2025-11-18T08:40:00+01:00",
        first_name="Jonas",
        last_name="Weber",
        gender="male",
        age=27,
        insurance="gesetzlich (AOK)",
        diagnosis="F41.1 Generalisierte Angststörung",
        availability="Vormittags",
    ),
    _patient(
        4705,
        "2025-12-02T14:05:00+01:00",
        first_name="Selin",
        last_name="Yılmaz",  # noqa: RUF001 - a Turkish name, spelt with the dotless i
        gender="female",
        age=19,
        insurance="gesetzlich (Barmer)",
        diagnosis="F50.2 Bulimia nervosa",
        availability="Nach 15 Uhr (Ausbildung)",
        notes="Erstgespräch gern auch per Video.",
    ),
    _patient(
        4711,
        "2026-01-05T10:15:00+01:00",
        first_name="Anna",
        last_name="Schneider",
        gender="female",
        age=34,
        insurance="gesetzlich (Techniker Krankenkasse)",
        diagnosis="F32.1 Mittelgradige depressive Episode",
        availability="Montags und mittwochs ab 16 Uhr",
    ),
    _patient(
        4716,
        "2026-01-12T09:00:00+01:00",
        first_name="Kim",
        last_name="Hoffmann-Przybylski",
        age=41,
        insurance="privat",
        notes="Bevorzugt eine Praxis, die barrierefrei erreichbar ist (Rollstuhl).",
    ),
    _patient(
        4720,
        "2026-01-20T17:30:00+01:00",
        first_name="Mehmet",
        last_name="Demir",
        gender="male",
        age=52,
        insurance="gesetzlich (DAK-Gesundheit)",
        diagnosis="F43.1 Posttraumatische Belastungsstörung",
        availability="Flexibel",
    ),
]


def preview_cases() -> list[PreviewCase]:
    dr_mueller = _therapist("Sabine", "Müller", "Frau", "Dr.")
    becker = _therapist("Thomas", "Becker", "Herr")
    return [
        PreviewCase(
            "one_patient",
            "Erstanfrage, eine Patientin",
            "initial_contact",
            {"therapist": dr_mueller, "patients": [ANNA], "sender": SENDER, "unsubscribe_url": UNSUBSCRIBE_URL},
        ),
        PreviewCase(
            "five_patients",
            "Sammelanfrage, fünf Personen",
            "batch_request",
            {"therapist": becker, "patients": FIVE, "sender": SENDER, "unsubscribe_url": UNSUBSCRIBE_URL},
        ),
        PreviewCase(
            "follow_up",
            "Erinnerung, zwei Personen noch ohne Antwort",
            "follow_up",
            {
                "therapist": dr_mueller,
                "patients": FIVE[:2],
                "sender": SENDER,
                "original_sent_at": "2026-01-26T09:00:00+01:00",
                "unsubscribe_url": UNSUBSCRIBE_URL,
            },
        ),
        PreviewCase(
            "confirmation",
            "Bestätigung einer Zusage",
            "confirmation",
            {"therapist": becker, "patients": [FIVE[0]], "sender": SENDER},
        ),
        PreviewCase(
            "neutral_salutation",
            "Ohne Anrede, nur wenige Angaben",
            "initial_contact",
            {
                "therapist": _therapist("Kim", "Berger", None, "Dipl.-Psych."),
                "patients": [_patient(4730, "2026-02-02T11:00:00+01:00", first_name="Alex", age=45)],
                "sender": SENDER,
                "unsubscribe_url": UNSUBSCRIBE_URL,
            },
        ),
    ]


def run_preview(out_dir: Path, zone: tzinfo | None = None, override_dir: Path | None = None) -> list[Path]:
    """Render every preview case into ``out_dir``; return the files written."""
    renderer = Renderer(zone or ZoneInfo(DEFAULT_ZONE), override_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rendered: list[tuple[PreviewCase, RenderedEmail]] = []
    for case in preview_cases():
        email = renderer.render(case.template, case.context)
        rendered.append((case, email))
        for suffix, content in ((".html", email.html), (".txt", email.text), (".subject.txt", email.subject + "\n")):
            path = out_dir / f"{case.name}{suffix}"
            path.write_text(content, encoding="utf-8")
            written.append(path)
    index = out_dir / "index.html"
    index.write_text(_index(rendered), encoding="utf-8")
    written.append(index)
    return written


def _index(rendered: list[tuple[PreviewCase, RenderedEmail]]) -> str:
    rows = "\n".join(
        '<tr><td style="padding:10px 0;border-top:1px solid #d9e1df;overflow-wrap:anywhere;">'
        f"<strong>{html.escape(case.title)}</strong><br>"
        f'<span style="color:#5b6770;">Vorlage {html.escape(case.template)} · '
        f"Betreff: {html.escape(email.subject)}</span><br>"
        f'<a href="{case.name}.html">HTML</a> · <a href="{case.name}.txt">Text</a></td></tr>'
        for case, email in rendered
    )
    return f"""<!DOCTYPE html>
<html lang="de">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Vorschau der E-Mail-Vorlagen</title>
</head>
<body style="margin:0;padding:16px;font-family:Arial,Helvetica,sans-serif;color:#1f2933;">
<h1 style="font-size:20px;margin:0 0 8px 0;">Vorschau der E-Mail-Vorlagen</h1>
<p style="margin:0 0 12px 0;">Beispieldaten, keine echten Personen.</p>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0"
 style="width:100%;max-width:800px;">
{rows}
</table>
</body>
</html>
"""
