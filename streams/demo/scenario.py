"""The demo's scenario: its therapists and patients, shortened intervals, and the
input events it plays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from streams.messages.envelope import envelope

BATCH_EVERY = 5  # seconds between batch runs

INTERVAL = 20  # seconds: the "weekly" contact limit, shortened

FOLLOW_UP_AFTER = 15  # seconds until an unanswered email is followed up

HOURS = {
    day: [{"start": "09:00", "end": "12:00"}, {"start": "14:00", "end": "17:00"}]
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday")
}


NO_HOURS = {6}  # Alex Kaya takes no calls: a follow-up email instead

APP_ID = "commsvc-demo"

BERLIN = ZoneInfo("Europe/Berlin")

THERAPISTS = [
    (1, "Frau", "Dr.", "Eva", "Müller"),
    (2, "Herr", None, "Jonas", "Becker"),
    (3, "Frau", "Dipl.-Psych.", "Miriam", "Schulz"),
    (4, "Herr", "Dr.", "Tobias", "Wagner"),
    (5, "Frau", None, "Lena", "Hoffmann"),
    (6, None, None, "Alex", "Kaya"),  # no salutation: a neutral greeting
    (7, "Frau", "Dr.", "Sabine", "Krüger"),
    (8, "Herr", None, "Markus", "Schmitt"),
    (9, "Frau", None, "Aylin", "Demir"),
    (10, "Herr", "Prof. Dr.", "Stefan", "Richter"),
    (11, "Frau", None, "Katharina", "Wolf"),
    (12, "Herr", None, "Paul", "Neumann"),
    (13, "Frau", "Dr.", "Johanna", "Braun"),  # arrives late: her requests wait for her
]


FIRST_NAMES = [
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Elif",
    "Felix",
    "Greta",
    "Hannah",
    "Ilias",
    "Jana",
    "Karl",
    "Lea",
    "Mehmet",
    "Nora",
    "Oskar",
    "Paula",
    "Quentin",
    "Rosa",
    "Sven",
    "Tara",
    "Uwe",
    "Vera",
    "Willi",
    "Yasmin",
    "Zoe",
    "Moritz",
    "Sophie",
    "Emil",
    "Mia",
    "Noah",
    "Ida",
    "Luis",
    "Frieda",
    "Jakob",
    "Marie",
    "Theo",
]


INSURANCES = ["AOK", "Techniker Krankenkasse", "Barmer", "DAK-Gesundheit", "privat", "IKK classic"]

DIAGNOSES = [
    "F32.1 mittelgradige depressive Episode",
    "F41.1 generalisierte Angststörung",
    "F43.1 posttraumatische Belastungsstörung",
    "F40.1 soziale Phobie",
    "F33.1 rezidivierende depressive Störung",
    "F50.2 Bulimia nervosa",
]


AVAILABILITY = ["vormittags", "nachmittags ab 15 Uhr", "flexibel", "montags und mittwochs", "abends"]


def input_event(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An event of the other services, as the demo plays it: new, and now."""
    return envelope(event_type, payload, event_id=str(uuid.uuid4()), occurred_at=datetime.now(UTC), producer="demo")


def therapist_event(entry: tuple[int, str | None, str | None, str, str]) -> dict[str, Any]:
    therapist_id, salutation, title, first, last = entry
    payload: dict[str, Any] = {
        "therapist_id": therapist_id,
        "first_name": first,
        "last_name": last,
        "email": f"{first.lower()}.{last.lower().replace('ü', 'ue')}@praxis-{therapist_id}.example",
        "phone": f"+49 30 5550{therapist_id:03d}",
    }
    if therapist_id not in NO_HOURS:
        payload["availability"] = HOURS
    if salutation:
        payload["salutation"] = salutation
    if title:
        payload["title"] = title
    return input_event("therapist.created", payload)


def match_event(request_id: int, therapist_id: int, waiting_days: int) -> dict[str, Any]:
    n = request_id % len(FIRST_NAMES)
    registered = datetime.now(UTC) - timedelta(days=waiting_days)
    return input_event(
        "match.created",
        {
            "placement_request_id": request_id,
            "therapist_id": therapist_id,
            "patient_id": 5000 + request_id,
            "patient": {
                "registered_at": registered.isoformat(),
                "first_name": FIRST_NAMES[n],
                "last_name": f"{chr(65 + request_id % 26)}.",
                "age": 19 + (request_id * 7) % 50,
                "gender": ["weiblich", "männlich", "divers"][request_id % 3],
                "insurance": INSURANCES[request_id % len(INSURANCES)],
                "diagnosis": DIAGNOSES[request_id % len(DIAGNOSES)],
                "availability": AVAILABILITY[request_id % len(AVAILABILITY)],
            },
        },
    )


def status_event(request_id: int, therapist_id: int, status: str) -> dict[str, Any]:
    return input_event(
        "match.status_changed",
        {
            "placement_request_id": request_id,
            "therapist_id": therapist_id,
            "patient_id": 5000 + request_id,
            "new_status": status,
        },
    )
