"""The email templates rendered by the real Jinja2 renderer: both parts of every
template, escaping, missing data, large batches, salutations, per-therapist
overrides and what happens when a template is broken."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streams.email.preview import preview_cases, run_preview
from streams.email.rendering import RenderedEmail, Renderer, RenderError, one_line

BERLIN = ZoneInfo("Europe/Berlin")
TEMPLATES = ("initial_contact", "batch_request", "follow_up", "confirmation")
LABELS = (
    "Alter",
    "Geschlecht",
    "Versicherung",
    "Diagnose",
    "Verfügbarkeit",
    "Anmerkungen",
    "Angemeldet seit",
)
SENDER = {"name": "Therapieplatz-Vermittlung", "email": "vermittlung@example.org"}


def therapist(**changes: Any) -> dict[str, Any]:
    base = {
        "title": "Dr.",
        "salutation": "Frau",
        "first_name": "Sabine",
        "last_name": "Müller",
        "email": "praxis@example.org",
        "phone": "+49 30 1234567",
    }
    return {**base, **changes}


def patient(number: int = 1, **changes: Any) -> dict[str, Any]:
    base = {
        "first_name": "Anna",
        "last_name": f"Schneider{number}",
        "gender": "female",
        "age": 34,
        "insurance": "gesetzlich (TK)",
        "diagnosis": "F32.1 depressive Episode",
        "availability": "Montags ab 16 Uhr",
        "notes": "Wünscht Verhaltenstherapie",
        "registered_at": f"2026-01-{number:02d}T10:00:00+01:00",
        "placement_request_id": 100 + number,
    }
    return {**base, **changes}


def bare_patient(number: int = 1) -> dict[str, Any]:
    """Only what the contract requires of a patient."""
    return patient(
        number,
        first_name=None,
        last_name=None,
        gender=None,
        age=None,
        insurance=None,
        diagnosis=None,
        availability=None,
        notes=None,
    )


def context(patients: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"therapist": therapist(), "patients": patients, "sender": SENDER, **extra}


def patients_for(template: str) -> list[dict[str, Any]]:
    if template in ("batch_request", "follow_up"):
        return [patient(n) for n in range(1, 4)]
    return [patient()]


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(BERLIN)


def write(root: Path, name: str, content: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


class VisibleText(HTMLParser):
    """The text a reader sees: everything outside <head>, entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.in_head = self.in_head or tag == "head"

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self.in_head = False

    def handle_data(self, data: str) -> None:
        if not self.in_head:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = VisibleText()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text))


def both(email: RenderedEmail) -> tuple[str, str]:
    return visible_text(email.html), email.text


# --- every template, both parts ---------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_renders_subject_html_and_text(renderer: Renderer, template: str) -> None:
    patients = patients_for(template)
    email = renderer.render(template, context(patients))

    assert email.subject and "\n" not in email.subject and "\r" not in email.subject
    assert email.fallback_reason is None
    assert email.html.startswith("<!DOCTYPE html>")
    assert f"<title>{email.subject}</title>" in email.html
    for part in both(email):
        assert "Sehr geehrte Frau Dr. Müller," in part
        assert "Therapieplatz-Vermittlung" in part  # the sender's name
        assert "Mit freundlichen Grüßen" in part
        assert "antworten Sie" in part.lower() or "Antworten Sie" in part  # how to answer
        assert "vermittlung@example.org" in part  # the platform's contact
        assert "None" not in part
        assert "{{" not in part and "{%" not in part
        for p in patients:
            assert f"{p['first_name']} {p['last_name']}" in part
            for field in ("insurance", "diagnosis", "availability", "notes"):
                assert p[field] in part
            assert f"{p['age']} Jahre" in part
            assert "weiblich" in part
    assert email.text.endswith("\n") and not email.text.endswith("\n\n")
    assert "\n-- \n" in email.text  # the signature delimiter survives tidying


@pytest.mark.parametrize("template", TEMPLATES)
def test_html_is_mail_client_safe(renderer: Renderer, template: str) -> None:
    html = renderer.render(template, context(patients_for(template))).html.lower()

    for forbidden in (
        "<script",
        "<style",
        "<link",
        "<img",
        "<iframe",
        "<form",
        "<object",
        "@import",
        "url(",
        "javascript:",
        "http://",
        "https://",
    ):
        assert forbidden not in html, forbidden
    assert not re.search(r"\son\w+\s*=", html), "no event handler attributes"
    assert set(re.findall(r'href="([a-z]+):', html)) <= {"mailto"}
    assert 'role="presentation"' in html  # table layout
    assert "max-width:600px" in html
    assert "overflow-wrap:anywhere" in html  # long words wrap at 375 px


@pytest.mark.parametrize("template", TEMPLATES)
def test_plain_text_carries_the_same_content_as_html(renderer: Renderer, template: str) -> None:
    email = renderer.render(template, context(patients_for(template)))
    html_words, text_words = words(visible_text(email.html)), words(email.text)

    assert html_words == text_words, html_words ^ text_words


@pytest.mark.parametrize("template", TEMPLATES)
def test_subject_carries_no_patient_data(renderer: Renderer, template: str) -> None:
    patients = patients_for(template)
    subject = renderer.render(template, context(patients)).subject

    for p in patients:
        for field in ("first_name", "last_name", "insurance", "diagnosis", "availability", "notes"):
            assert p[field] not in subject
        assert str(p["age"]) not in subject
        assert "weiblich" not in subject and "female" not in subject


# --- escaping ------------------------------------------------------------------------

SCRIPT = "<script>alert('x')</script>"


@pytest.mark.parametrize("template", TEMPLATES)
def test_markup_in_data_arrives_as_text(renderer: Renderer, template: str) -> None:
    hostile = patient(first_name=SCRIPT, notes='"><img src=x onerror=alert(1)>', diagnosis="A & B")
    ctx = {
        "therapist": therapist(last_name="<b>Müller</b>"),
        "patients": [hostile],
        "sender": {"name": "<i>Vermittlung</i>", "email": 'x@example.org"><script>'},
    }
    email = renderer.render(template, ctx)

    assert "<script" not in email.html
    assert "<img" not in email.html and "<b>" not in email.html and "<i>" not in email.html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in email.html
    assert "A &amp; B" in email.html
    assert SCRIPT in visible_text(email.html)  # what the therapist reads
    assert SCRIPT in email.text  # plain text is not escaped
    assert '"><img src=x onerror=alert(1)>' in email.text
    assert "Sehr geehrte Frau Dr. <b>Müller</b>," in email.text


def test_a_therapist_override_is_autoescaped_too(tmp_path: Path) -> None:
    write(tmp_path, "therapists/7/initial_contact.html", "<p>{{ patients[0].first_name }}</p>")
    ctx = context([patient(first_name=SCRIPT)])
    email = Renderer(BERLIN, tmp_path).render("initial_contact", ctx, 7)

    assert email.fallback_reason is None
    assert email.html == "<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</p>"


# --- missing data ----------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
def test_missing_optional_fields_leave_no_trace(renderer: Renderer, template: str) -> None:
    several = template in ("batch_request", "follow_up")
    patients = [bare_patient(1), bare_patient(2)] if several else [bare_patient()]
    ctx = {
        "therapist": therapist(title=None, email=None, phone=None),
        "patients": patients,
        "sender": SENDER,
    }
    email = renderer.render(template, ctx)

    for part in both(email):
        assert "None" not in part
        for label in LABELS[:-1]:
            assert f"{label}:" not in part, label
        assert "Angemeldet seit: 01.01.2026" in part  # registered_at is always known
        assert not re.search(rf"({'|'.join(LABELS)}):\s*$", part, re.MULTILINE), "an empty label"
        assert "Sehr geehrte Frau Müller," in part


def test_blank_strings_and_absent_keys_count_as_missing(renderer: Renderer) -> None:
    sparse = {"registered_at": "2026-01-05T10:00:00+01:00", "placement_request_id": 1, "notes": " "}
    ctx = {
        "therapist": {"first_name": "Kim", "last_name": "Berger"},
        "patients": [sparse],
        "sender": SENDER,
    }
    email = renderer.render("initial_contact", ctx)

    for part in both(email):
        assert "Anmerkungen" not in part and "None" not in part
        assert "Guten Tag Kim Berger," in part
        assert "der folgenden Person" in part


def test_age_one_is_singular_and_unknown_gender_is_shown_as_given(renderer: Renderer) -> None:
    email = renderer.render("initial_contact", context([patient(age=1, gender="agender")]))

    for part in both(email):
        assert "Alter: 1 Jahr" in part and "1 Jahre" not in part
        assert "Geschlecht: agender" in part
        assert "der folgenden Person" in part  # neutral wording for an unknown gender


# --- batches ---------------------------------------------------------------------------


def test_a_batch_of_twenty_shows_count_and_keeps_the_callers_order(renderer: Renderer) -> None:
    patients = [patient(n, first_name=f"Person{n:02d}", last_name="Test") for n in range(1, 21)]
    email = renderer.render("batch_request", context(patients))

    assert "20" in email.subject
    for part in both(email):
        assert "der folgenden 20 Personen" in part
        positions = [part.index(f"Person{n:02d} Test") for n in range(1, 21)]
        assert positions == sorted(positions), "oldest registration first, as given"
        for n in range(1, 21):
            assert f"Nr. {n} von 20" in part
        assert "Nr. 21" not in part
    assert "Nr. 20 von 20: Person20 Test" in email.text
    assert "Angemeldet seit: 01.01.2026" in email.text
    assert "Angemeldet seit: 20.01.2026" in email.text


def test_follow_up_for_one_patient_is_not_numbered(renderer: Renderer) -> None:
    email = renderer.render("follow_up", context([patient(gender="male")]))

    for part in both(email):
        assert "Nr. " not in part
        assert "vor einiger Zeit haben wir Sie gefragt, ob Sie dem folgenden Patienten" in part
    assert email.subject == "Erinnerung: unsere Anfrage zu einem Psychotherapieplatz"


def test_follow_up_shows_the_date_of_the_first_request(renderer: Renderer) -> None:
    ctx = context([patient(1), patient(2)], original_sent_at="2026-01-25T23:30:00+00:00")
    email = renderer.render("follow_up", ctx)

    assert email.subject == "Erinnerung: unsere Anfrage vom 26.01.2026 zu Psychotherapieplätzen"
    for part in both(email):
        assert "am 26.01.2026 haben wir Sie gefragt, ob Sie den folgenden 2 Personen" in part


# --- salutation, wording, dates ------------------------------------------------------------


@pytest.mark.parametrize(
    ("salutation", "title", "expected"),
    [
        ("Frau", "Dr.", "Sehr geehrte Frau Dr. Müller,"),
        ("Frau", None, "Sehr geehrte Frau Müller,"),
        ("Herr", "Prof. Dr.", "Sehr geehrter Herr Prof. Dr. Müller,"),
        ("Herr", None, "Sehr geehrter Herr Müller,"),
        ("frau ", None, "Sehr geehrte Frau Müller,"),
        (None, None, "Guten Tag Sabine Müller,"),
        (None, "Dr.", "Guten Tag Dr. Sabine Müller,"),
        ("Divers", None, "Guten Tag Sabine Müller,"),
        ("", "Dr.", "Guten Tag Dr. Sabine Müller,"),
    ],
)
@pytest.mark.parametrize("template", TEMPLATES)
def test_salutation(
    renderer: Renderer, template: str, salutation: str | None, title: str | None, expected: str
) -> None:
    ctx = context(patients_for(template))
    ctx["therapist"] = therapist(salutation=salutation, title=title)
    email = renderer.render(template, ctx)

    for part in both(email):
        assert expected in part


@pytest.mark.parametrize(
    ("gender", "initial", "confirmation"),
    [
        ("female", "der folgenden Patientin", "der folgenden Patientin"),
        ("weiblich", "der folgenden Patientin", "der folgenden Patientin"),
        ("male", "dem folgenden Patienten", "dem folgenden Patienten"),
        ("m", "dem folgenden Patienten", "dem folgenden Patienten"),
        ("diverse", "der folgenden Person", "der folgenden Person"),
        (None, "der folgenden Person", "der folgenden Person"),
    ],
)
def test_wording_follows_the_patients_gender_and_is_neutral_otherwise(
    renderer: Renderer, gender: str | None, initial: str, confirmation: str
) -> None:
    first = renderer.render("initial_contact", context([patient(gender=gender)]))
    confirmed = renderer.render("confirmation", context([patient(gender=gender)]))

    for part in both(first):
        assert f"ob Sie {initial} einen Platz anbieten können" in part
    for part in both(confirmed):
        assert f"dass Sie {confirmation} einen Psychotherapieplatz anbieten" in part


def test_dates_are_german_in_the_renderers_time_zone() -> None:
    ctx = context([patient(registered_at="2026-01-04T23:30:00+00:00")])

    assert "Angemeldet seit: 05.01.2026" in Renderer(BERLIN).render("initial_contact", ctx).text
    new_york = Renderer(ZoneInfo("America/New_York")).render("initial_contact", ctx).text
    assert "Angemeldet seit: 04.01.2026" in new_york


# --- per-therapist overrides ---------------------------------------------------------------


def test_an_override_takes_precedence_for_its_therapist_only(tmp_path: Path) -> None:
    write(
        tmp_path,
        "therapists/7/initial_contact.html",
        (
            '{% extends "base_email.html" %}{% block content %}'
            "<p>Liebe Kollegin, eine Anfrage für Sie.</p>{% endblock %}"
        ),
    )
    renderer = Renderer(BERLIN, tmp_path)
    ctx = context([patient()])

    custom = renderer.render("initial_contact", ctx, therapist_id=7)
    standard = renderer.render("initial_contact", ctx, therapist_id=8)

    assert custom.fallback_reason is None
    assert "Liebe Kollegin, eine Anfrage für Sie." in custom.html
    assert "Sehr geehrte Frau Dr. Müller," in custom.html  # the shared layout still applies
    assert custom.text == standard.text  # only the HTML part was overridden
    assert custom.subject == standard.subject
    assert "Liebe Kollegin" not in standard.html
    assert standard == renderer.render("initial_contact", ctx)


def test_an_override_may_replace_any_part(tmp_path: Path) -> None:
    write(tmp_path, "therapists/7/confirmation.subject.txt", "Danke für Ihre Zusage")
    write(tmp_path, "therapists/7/confirmation.txt", "Kurz und knapp: danke, {{ sender.name }}.")
    email = Renderer(BERLIN, tmp_path).render("confirmation", context([patient()]), therapist_id=7)

    assert email.subject == "Danke für Ihre Zusage"
    assert email.text == "Kurz und knapp: danke, Therapieplatz-Vermittlung.\n"
    assert "<title>Danke für Ihre Zusage</title>" in email.html  # standard HTML, new subject


def test_the_template_dir_overrides_standard_templates(tmp_path: Path) -> None:
    write(tmp_path, "confirmation.subject.txt", "Ihre Zusage ist angekommen")
    email = Renderer(BERLIN, tmp_path).render("confirmation", context([patient()]))

    assert email.subject == "Ihre Zusage ist angekommen"


BROKEN_OVERRIDES = {
    "syntax error": ("{% if %}", "TemplateSyntaxError"),
    "unclosed block": ("{% for p in patients %}{{ p.first_name }}", "TemplateSyntaxError"),
    "undefined variable": ("{{ no_such_variable }}", "UndefinedError"),
    "undefined attribute": ("{{ patients[0].nickname.upper() }}", "UndefinedError"),
    "runtime error": ("{{ 1 // 0 }}", "ZeroDivisionError"),
    "missing include": ('{% include "_nowhere.html" %}', "TemplateNotFound"),
    "sandbox escape": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "SecurityError"),
    "empty": ("   ", "empty"),
}


@pytest.mark.parametrize("case", BROKEN_OVERRIDES)
def test_a_broken_override_falls_back_to_the_standard_template(tmp_path: Path, case: str) -> None:
    source, error = BROKEN_OVERRIDES[case]
    write(tmp_path, "therapists/7/initial_contact.html", source)
    renderer = Renderer(BERLIN, tmp_path)
    ctx = context([patient()])

    email = renderer.render("initial_contact", ctx, therapist_id=7)

    standard = renderer.render("initial_contact", ctx)
    assert email == RenderedEmail(standard.subject, standard.html, standard.text, fallback_reason=email.fallback_reason)
    assert email.fallback_reason is not None
    assert "therapist 7" in email.fallback_reason
    assert "initial_contact" in email.fallback_reason
    assert error in email.fallback_reason
    assert "\n" not in email.fallback_reason
    for value in ("Anna", "Schneider", "depressive", "Verhaltenstherapie", "TK"):
        assert value not in email.fallback_reason


def test_a_broken_part_discards_the_whole_override(tmp_path: Path) -> None:
    """Mixing a custom text part with the standard HTML could tell the therapist two
    different things, so one broken part means no override at all."""
    write(tmp_path, "therapists/7/initial_contact.txt", "Eigener Text, {{ sender.name }}")
    write(tmp_path, "therapists/7/initial_contact.html", "{{ 1 // 0 }}")
    renderer = Renderer(BERLIN, tmp_path)
    email = renderer.render("initial_contact", context([patient()]), therapist_id=7)

    assert email.fallback_reason is not None
    assert "Eigener Text" not in email.text


def test_a_fallback_reason_never_quotes_patient_data(tmp_path: Path) -> None:
    # Undefined-attribute messages name the missing key, which here is patient data.
    write(tmp_path, "therapists/7/initial_contact.html", "{{ therapist[patients[0].last_name] }}")
    email = Renderer(BERLIN, tmp_path).render(
        "initial_contact", context([patient(last_name="Geheimname")]), therapist_id=7
    )

    assert email.fallback_reason is not None
    assert "UndefinedError" in email.fallback_reason
    assert "therapists/7/initial_contact.html line 1" in email.fallback_reason
    assert "geheimname" not in email.fallback_reason.lower()


def test_a_broken_standard_template_raises_render_error(tmp_path: Path) -> None:
    write(tmp_path, "follow_up.html", ('{% extends "base_email.html" %}{% block content %}{{ oops }}{% endblock %}'))
    renderer = Renderer(BERLIN, tmp_path)

    with pytest.raises(RenderError) as raised:
        renderer.render("follow_up", context([patient(last_name="Geheimname")]), therapist_id=7)

    message = str(raised.value)
    assert "'follow_up'" in message and "follow_up.html line 1" in message
    assert "UndefinedError" in message and "oops" in message
    assert "Geheimname" not in message


def test_bad_data_in_a_standard_template_is_reported_without_the_data(renderer: Renderer) -> None:
    with pytest.raises(RenderError) as raised:
        renderer.render("initial_contact", context([patient(registered_at="Geheimname")]))

    assert "not an ISO 8601 date" in str(raised.value)
    assert "Geheimname" not in str(raised.value)


@pytest.mark.parametrize("name", ["no_such_template", "../etc/passwd", "therapists/7/initial_contact", "_macros", ""])
def test_unknown_or_unsafe_template_names_raise_render_error(renderer: Renderer, name: str) -> None:
    with pytest.raises(RenderError):
        renderer.render(name, context([patient()]))


@pytest.mark.parametrize("patients", [[], 7, ["not a patient"]])
def test_a_malformed_context_raises_render_error(renderer: Renderer, patients: Any) -> None:
    with pytest.raises(RenderError, match="initial_contact"):
        renderer.render("initial_contact", {**context([]), "patients": patients})


def test_a_template_without_patients_raises_render_error(renderer: Renderer) -> None:
    with pytest.raises(RenderError, match="initial_contact"):
        renderer.render("initial_contact", context([]))


# --- header safety ---------------------------------------------------------------------------


def test_line_breaks_in_a_subject_template_become_one_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "therapists/7/initial_contact.subject.txt",
        "Anfrage\r\nBcc: everyone@example.org\n\n{{ therapist.last_name }}\u2028X",
    )
    email = Renderer(BERLIN, tmp_path).render("initial_contact", context([patient()]), therapist_id=7)

    assert email.subject == "Anfrage Bcc: everyone@example.org Müller X"
    assert email.fallback_reason is None


def test_line_breaks_in_data_cannot_reach_the_subject(tmp_path: Path) -> None:
    write(tmp_path, "initial_contact.subject.txt", "Anfrage für {{ therapist.last_name }}")
    email = Renderer(BERLIN, tmp_path).render(
        "initial_contact",
        {**context([patient()]), "therapist": therapist(last_name="M\r\nBcc: x@y")},
    )

    assert email.subject == "Anfrage für M Bcc: x@y"


@pytest.mark.parametrize("raw", ["a\rb", "a\nb", "a\r\nb", "a\x00b", "a\x0bb", "a\x85b", "a\u2028b", "a\u2029b"])
def test_one_line_removes_every_kind_of_line_break(raw: str) -> None:
    assert one_line(raw) == "a b"


def test_one_line_bounds_the_length() -> None:
    assert len(one_line("x" * 1000)) == 200


# --- preview ---------------------------------------------------------------------------------


def test_preview_writes_every_case_and_an_index(tmp_path: Path) -> None:
    written = run_preview(tmp_path / "preview")

    names = {path.name for path in written}
    cases = preview_cases()
    assert {c.template for c in cases} == set(TEMPLATES)
    assert len(cases) >= 5
    for case in cases:
        assert {f"{case.name}.html", f"{case.name}.txt", f"{case.name}.subject.txt"} <= names
    assert "index.html" in names
    assert all(path.is_file() and path.stat().st_size > 0 for path in written)
    index = (tmp_path / "preview" / "index.html").read_text(encoding="utf-8")
    for case in cases:
        assert f'href="{case.name}.html"' in index and f'href="{case.name}.txt"' in index
    five = (tmp_path / "preview" / "five_patients.txt").read_text(encoding="utf-8")
    assert "der folgenden 5 Personen" in five and "Nr. 5 von 5" in five
    neutral = (tmp_path / "preview" / "neutral_salutation.txt").read_text(encoding="utf-8")
    assert neutral.startswith("Guten Tag ")
