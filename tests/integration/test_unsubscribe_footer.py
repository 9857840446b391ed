"""The one-click opt-out line in the footer of contact and follow-up emails: rendered
by the real templates, and put in (or left out) when emails are stored."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from domain.decisions import ManualEmailContent
from streams.email.context import Identity, opt_out_context
from streams.email.rendering import Renderer
from streams.email.unsubscribe import OptOut, make_token
from streams.persistence.db import Database
from streams.persistence.models import Email
from tests.integration.test_persistence import CHANNELS, IDENTITY, NOW, command
from tests.integration.test_rendering import BERLIN, context, patients_for, visible_text, words

SECRET = b"k" * 32
URL = "https://vermittlung.example.org/unsubscribe/{token}"
OPT_OUT = OptOut(URL, SECRET)
LINE = "Keine Anfragen mehr per E-Mail?"
LINK = "https://vermittlung.example.org/unsubscribe/7.DasIstEinBeispielFuerEinenTokenMitDreiundvierzig"
CONTACT_TEMPLATES = ("initial_contact", "batch_request", "follow_up")


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(BERLIN)


@pytest.mark.parametrize("template", CONTACT_TEMPLATES)
def test_the_footer_links_to_the_opt_out_in_both_parts(renderer: Renderer, template: str) -> None:
    email = renderer.render(template, context(patients_for(template), unsubscribe_url=LINK))

    assert f'<a href="{LINK}"' in email.html
    assert "Hier abmelden</a> \u2013 wir rufen Sie dann in Ihren Sprechzeiten an." in email.html
    footer = email.text.split("\n-- \n")[1]  # below the signature delimiter
    assert f"{LINE} Hier abmelden \u2013 wir rufen Sie dann in Ihren Sprechzeiten an: {LINK}\n" in footer
    # The same words in both parts (the text part spells the link out).
    assert words(visible_text(email.html)) == words(email.text.replace(LINK, ""))


@pytest.mark.parametrize("template", (*CONTACT_TEMPLATES, "confirmation"))
def test_without_a_link_there_is_no_line(renderer: Renderer, template: str) -> None:
    email = renderer.render(template, context(patients_for(template)))

    assert LINE not in email.html and LINE not in email.text
    assert "unsubscribe" not in email.html


def test_the_link_is_escaped_like_any_value(renderer: Renderer) -> None:
    email = renderer.render(
        "initial_contact", context(patients_for("initial_contact"), unsubscribe_url='x" onclick="y')
    )

    assert 'href="x&#34; onclick=&#34;y"' in email.html


def test_only_contact_and_follow_up_emails_get_the_link() -> None:
    identity = Identity("v@example.org", "V", OPT_OUT)
    link = URL.replace("{token}", make_token(SECRET, 7, "t7@praxis.example"))

    assert opt_out_context(identity, "contact_request", 7, "t7@praxis.example") == {"unsubscribe_url": link}
    assert opt_out_context(identity, "follow_up", 7, "T7@Praxis.example") == {"unsubscribe_url": link}
    assert opt_out_context(identity, "confirmation", 7, "t7@praxis.example") == {}
    assert opt_out_context(identity, "manual", 7, "t7@praxis.example") == {}
    assert opt_out_context(identity, "contact_request", 7, None) == {}
    assert opt_out_context(IDENTITY, "contact_request", 7, "t7@praxis.example") == {}  # off


def stored(database: Database, commands: list[Any], identity: Identity) -> dict[str, Email]:
    from streams.persistence import email_creation

    renderer = Renderer(BERLIN)
    database.transaction(email_creation.store_send_commands, commands, renderer.render, identity, CHANNELS, NOW)

    def emails(session: Any) -> dict[str, Email]:
        found = {e.email_key: e for e in session.scalars(select(Email))}
        session.expunge_all()
        return found

    return database.transaction(emails)


def test_stored_emails_carry_the_link_only_where_it_belongs(database: Database) -> None:
    identity = replace(IDENTITY, opt_out=OPT_OUT)
    link = URL.replace("{token}", make_token(SECRET, 7, "t7@praxis.example"))
    manual = replace(
        command("manual", kind="manual", template=None),
        requests=(),
        content=ManualEmailContent(template="initial_contact", placement_request_ids=(1,)),
        command_id="c-1",
        queue=True,
    )
    first = [
        command("contact", requests=((1, "2026-01-01T10:00:00+00:00"),), template="initial_contact"),
        command("follow", kind="follow_up", requests=((2, None), (3, None)), template="follow_up"),
        command("confirm", kind="confirmation", requests=((4, None),), template="confirmation", limited=False),
    ]
    stored(database, first, identity)
    emails = stored(database, [manual], identity)  # from the contact template, about request 1

    for key in ("contact", "follow"):
        assert link in emails[key].body_html and link in emails[key].body_text, key
    for key in ("confirm", "manual"):
        assert LINE not in emails[key].body_text and "unsubscribe" not in emails[key].body_html, key
    assert "@" not in link.split("/unsubscribe/")[1]  # no address in the link


def test_without_the_setting_stored_emails_have_no_line(database: Database) -> None:
    emails = stored(database, [command("contact", template="initial_contact")], IDENTITY)

    assert LINE not in emails["contact"].body_text and LINE not in emails["contact"].body_html
