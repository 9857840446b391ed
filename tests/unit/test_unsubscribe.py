"""One-click opt-out (RFC 8058): the tokens, the List-Unsubscribe headers and how the
MIME message carries them."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest

from streams.delivery.mime import OutgoingEmail, build_message
from streams.email.unsubscribe import (
    ONE_CLICK,
    OptOut,
    make_token,
    opt_out_headers,
    therapist_of,
    token_matches,
    with_opt_out,
)
from streams.settings import Settings

SECRET = b"s" * 32
ADDRESS = "eva.mueller@praxis.example"
URL = "https://vermittlung.example.org/unsubscribe/{token}"
OPT_OUT = OptOut(URL, SECRET)
SENT_AT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def outgoing(**changes: object) -> OutgoingEmail:
    values: dict[str, object] = {
        "message_id": "<k1@therapieplatz.example>",
        "sender_email": "vermittlung@therapieplatz.example",
        "sender_name": "Therapieplatz-Vermittlung",
        "recipient_email": ADDRESS,
        "recipient_name": "Dr. Eva Müller",
        "subject": "Anfrage zu einem Psychotherapieplatz",
        "body_text": "Text",
        "body_html": "<p>Text</p>",
        **changes,
    }
    return OutgoingEmail(**values)  # type: ignore[arg-type]


def parsed(message: OutgoingEmail) -> email.message.EmailMessage:
    raw = build_message(message, SENT_AT).data
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


# --- tokens


def test_a_token_carries_the_therapist_and_a_mac_but_not_the_address():
    token = make_token(SECRET, 7, ADDRESS)

    therapist, mac = token.split(".")
    assert therapist == "7" and len(mac) == 43
    assert "@" not in token and "eva" not in token.lower() and "praxis" not in token
    assert therapist_of(token) == 7
    assert token_matches(SECRET, token, ADDRESS)
    assert make_token(SECRET, 7, ADDRESS) == token  # the same link in every email to that address


def test_the_address_is_compared_trimmed_and_case_folded():
    token = make_token(SECRET, 7, " Eva.Mueller@PRAXIS.example ")

    assert token_matches(SECRET, token, ADDRESS)
    assert token == make_token(SECRET, 7, ADDRESS)


def test_a_token_names_its_own_therapist_and_holds_only_for_them():
    """Another therapist's token is checked against that therapist's address (the
    page reads it by the id in the token); moved to another id it fails."""
    theirs = make_token(SECRET, 8, "praxis.acht@praxis.example")

    assert therapist_of(theirs) == 8
    assert not token_matches(SECRET, theirs, ADDRESS)  # therapist 8's token, therapist 7's address
    assert not token_matches(SECRET, "7." + theirs.split(".")[1], "praxis.acht@praxis.example")


def test_a_token_made_for_an_old_address_fails_against_the_current_one():
    old = make_token(SECRET, 7, "eva.alt@praxis.example")

    assert token_matches(SECRET, old, "eva.alt@praxis.example")
    assert not token_matches(SECRET, old, ADDRESS)


def test_another_therapists_id_with_a_valid_mac_is_refused():
    """Swapping the id in front of a real MAC: the MAC covers the id."""
    mac = make_token(SECRET, 7, ADDRESS).split(".")[1]

    assert not token_matches(SECRET, f"8.{mac}", ADDRESS)


def test_forged_tokens_are_refused():
    real = make_token(SECRET, 7, ADDRESS)
    flipped = real[:-1] + ("A" if real[-1] != "A" else "B")

    assert not token_matches(SECRET, flipped, ADDRESS)
    assert not token_matches(b"t" * 32, real, ADDRESS)  # made with another secret
    assert not token_matches(SECRET, make_token(b"t" * 32, 7, ADDRESS), ADDRESS)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "7",
        "7.",
        ".abc",
        "0." + "A" * 43,
        "-7." + "A" * 43,
        "7." + "A" * 42,
        "7." + "A" * 44,
        "7.A+/" + "A" * 39,
        "1" * 19 + "." + "A" * 43,
        "7." + "A" * 43 + "\n",
        "\u0667." + "A" * 43,  # an Arabic-Indic seven
    ],
)
def test_malformed_tokens_name_no_therapist(token: str):
    assert therapist_of(token) is None
    assert not token_matches(SECRET, token, ADDRESS)


# --- headers


@pytest.mark.parametrize("kind", ["contact_request", "follow_up"])
def test_contact_and_follow_up_emails_get_both_headers(kind: str):
    headers = dict(OPT_OUT.headers(7, kind, ADDRESS))

    link = URL.replace("{token}", make_token(SECRET, 7, ADDRESS))
    assert headers == {"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert OPT_OUT.link(7, ADDRESS) == link


@pytest.mark.parametrize("kind", ["confirmation", "manual"])
def test_confirmations_and_manual_emails_get_none(kind: str):
    assert OPT_OUT.headers(7, kind, ADDRESS) == ()


def test_without_the_setting_no_email_gets_them():
    settings = Settings.from_environ({"COMM_STORE": "memory"})

    assert OptOut.from_settings(settings) is None
    assert opt_out_headers(None, 7, "contact_request", ADDRESS) == ()
    plain = outgoing()
    assert with_opt_out(plain, None, 7, "contact_request") is plain
    message = parsed(plain)
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None


def test_the_settings_make_the_links_and_the_secret_stays_out_of_repr():
    settings = Settings.from_environ(
        {
            "COMM_STORE": "memory",
            "COMM_UNSUBSCRIBE_URL": URL,
            "COMM_UNSUBSCRIBE_SECRET": SECRET.decode(),
            "COMM_UNSUBSCRIBE_MAILTO": "abmelden@vermittlung.example.org",
        }
    )
    opt_out = OptOut.from_settings(settings)

    assert opt_out == OptOut(URL, SECRET, "abmelden@vermittlung.example.org")
    assert SECRET.decode() not in repr(opt_out)


def test_with_a_mailto_the_header_offers_both_and_the_subject_carries_the_token():
    opt_out = OptOut(URL, SECRET, "abmelden@vermittlung.example.org")
    token = make_token(SECRET, 7, ADDRESS)

    [(name, value), post] = opt_out.headers(7, "contact_request", ADDRESS)

    assert name == "List-Unsubscribe" and post == ("List-Unsubscribe-Post", ONE_CLICK)
    https, mailto = value.split(", ")
    assert https == f"<{URL.replace('{token}', token)}>"
    assert mailto.startswith("<mailto:abmelden@vermittlung.example.org?subject=") and mailto.endswith(">")
    assert unquote(mailto[1:-1].split("subject=")[1]) == f"unsubscribe {token}"
    assert " " not in mailto


def test_the_message_carries_the_headers_unchanged_when_folded():
    """A long List-Unsubscribe is folded onto several lines; unfolded it is the same value."""
    opt_out = OptOut(URL, SECRET, "abmelden@vermittlung.example.org")
    expected = dict(opt_out.headers(7, "contact_request", ADDRESS))
    assert len(expected["List-Unsubscribe"]) > 78

    raw = build_message(with_opt_out(outgoing(), opt_out, 7, "contact_request"), SENT_AT).data
    message = email.message_from_bytes(raw, policy=email.policy.compat32)

    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    unfolded = " ".join(str(message["List-Unsubscribe"]).split())
    assert unfolded == expected["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.is_multipart() and message["Subject"] == "Anfrage zu einem Psychotherapieplatz"


def test_a_confirmation_is_built_without_them():
    message = parsed(with_opt_out(outgoing(), OPT_OUT, 7, "confirmation"))

    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None


def test_an_extra_header_value_cannot_inject_a_header():
    message = parsed(outgoing(headers=(("List-Unsubscribe", "<https://a.example/x>\r\nBcc: victim@example.org"),)))

    assert message["Bcc"] is None
    assert message["List-Unsubscribe"] == "<https://a.example/x> Bcc: victim@example.org"
