"""Opt-in tracking as delivery applies it (streams.delivery.tracking): signed tokens
that cannot be forged, links through the redirect (mailto:, tel:, anchors and the
one-click unsubscribe link left alone), the image before ``</body>``, the rest of
the HTML as it was written; and nothing at all while tracking is off."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from html.parser import HTMLParser
from typing import Any

import pytest

from streams.api.tracking import _redirect
from streams.delivery.mime import OutgoingEmail, build_message
from streams.delivery.tracking import PIXEL, Tokens, Tracking
from streams.settings import Settings

SECRET = "s" * 40
BASE = "https://mail.vermittlung.example"
UNSUBSCRIBE = BASE + "/unsubscribe/{token}"
TOKENS = Tokens(SECRET.encode())
SENT_AT = datetime(2026, 11, 23, 8, tzinfo=UTC)

BODY = """<!DOCTYPE html>
<html lang="de"><head><meta charset="utf-8"><title>Anfrage</title></head>
<body style="margin:0">
<!--[if mso]><table><tr><td><![endif]-->
<p>Sehr geehrte Frau Dr. M&uuml;ller,</p>
<p>Infos: <a href="https://praxis.example/info?a=1&amp;b=2" style="color:#2b6b65" rel="noopener noreferrer">hier</a>,
Termine <a href='http://termine.example/k%C3%BCche'>dort</a>.</p>
<p><a href="mailto:vermittlung@example.org">Schreiben</a> oder <a href="tel:+4930123">anrufen</a>,
<a href="#oben">nach oben</a>, <a name="anker">Anker</a>.</p>
<p><a href=" https://praxis.example/zwei
">zwei</a> <a href="https://praxis.example/zwei">noch einmal</a></p>
<p><a href="https://mail.vermittlung.example/unsubscribe/7.abcDEF">Abmelden</a></p>
<!--[if mso]></td></tr></table><![endif]-->
</body>
</html>
"""
LINKS = [
    "https://praxis.example/info?a=1&b=2",
    "http://termine.example/k%C3%BCche",
    "https://praxis.example/zwei",
    "https://praxis.example/zwei",
]


def tracking(*, opens: bool = True, clicks: bool = True, **more: str) -> Tracking:
    environ = {
        "COMM_TRACK_OPENS": str(opens).lower(),
        "COMM_TRACK_CLICKS": str(clicks).lower(),
        "COMM_PUBLIC_BASE_URL": BASE + "/",
        "COMM_TRACKING_SECRET": SECRET,
        "COMM_UNSUBSCRIBE_URL": UNSUBSCRIBE,
        "COMM_UNSUBSCRIBE_SECRET": "u" * 40,
        **more,
    }
    found = Tracking.from_settings(Settings.from_environ(environ))
    assert found is not None
    return found


class Shape(HTMLParser):
    """The document as a parser sees it: tags, attributes, text, comments."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[Any, ...]] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("start", tag, tuple(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag))

    def handle_data(self, data: str) -> None:
        self.events.append(("data", data))

    def handle_comment(self, data: str) -> None:
        self.events.append(("comment", data))

    def handle_decl(self, decl: str) -> None:
        self.events.append(("decl", decl))


def hrefs(markup: str) -> list[str]:
    return [dict(e[2]).get("href") or "" for e in Shape(markup).events if e[:2] == ("start", "a")]


def click_tokens(markup: str) -> list[str]:
    return [href.removeprefix(f"{BASE}/t/c/") for href in hrefs(markup) if href.startswith(f"{BASE}/t/c/")]


# --- tokens -------------------------------------------------------------------------


def test_tokens_carry_the_email_and_position_and_nothing_else():
    assert TOKENS.opened(TOKENS.open_token(42)) == 42
    assert TOKENS.clicked(TOKENS.click_token(42, 3)) == (42, 3)
    open_token, click_token = TOKENS.open_token(42), TOKENS.click_token(42, 3)
    assert re.fullmatch(r"42\.[A-Za-z0-9_-]{43}", open_token)
    assert re.fullmatch(r"42\.3\.[A-Za-z0-9_-]{43}", click_token)


@pytest.mark.parametrize(
    "forged",
    [
        lambda t: t.replace(t[-1], "A" if t[-1] != "A" else "B"),  # another MAC
        lambda t: "43" + t[2:],  # another email
        lambda t: "042" + t[2:],  # the same email, written otherwise
        lambda t: t + "=",
        lambda t: t[:-1],
        lambda t: "",
        lambda t: Tokens(b"another secret of enough length, 32+").open_token(42),
    ],
)
def test_a_forged_open_token_is_refused(forged):
    assert TOKENS.opened(forged(TOKENS.open_token(42))) is None


def test_a_forged_click_token_is_refused_and_the_kinds_do_not_mix():
    token = TOKENS.click_token(42, 3)
    assert TOKENS.clicked(token.replace("42.3.", "42.4.")) is None  # another position
    assert TOKENS.clicked(token.replace("42.3.", "42.03.")) is None
    assert TOKENS.clicked("42.3." + TOKENS.open_token(42).split(".")[1]) is None
    assert TOKENS.opened(token) is None and TOKENS.clicked(TOKENS.open_token(42)) is None


# --- the HTML part as sent ----------------------------------------------------------


def test_links_go_through_the_redirect_in_order_of_the_body_and_lead_back_to_themselves():
    sent = tracking().html(42, BODY)
    tokens = click_tokens(sent)
    assert [TOKENS.clicked(t) for t in tokens] == [(42, 1), (42, 2), (42, 3), (42, 4)]
    # The redirect reads each position's target from the stored body.
    assert [tracking().link(BODY, position) for position in (1, 2, 3, 4)] == LINKS
    assert tracking().link(BODY, 5) is None and tracking().link(BODY, 0) is None


def test_mailto_tel_anchors_and_the_unsubscribe_link_are_left_alone():
    sent_hrefs = hrefs(tracking().html(42, BODY))
    assert "mailto:vermittlung@example.org" in sent_hrefs
    assert "tel:+4930123" in sent_hrefs
    assert "#oben" in sent_hrefs
    assert "https://mail.vermittlung.example/unsubscribe/7.abcDEF" in sent_hrefs
    assert "" in sent_hrefs  # <a name> keeps having no href
    # The unsubscribe link is counted (position 5) but has no redirect.
    assert [link.tracked for link in tracking().links(BODY)] == [True, True, True, True, False]
    assert tracking().link(BODY, 5) is None


def test_the_document_stays_as_it_was_but_for_the_links_and_the_image():
    sent = tracking().html(42, BODY)
    before, after = Shape(BODY).events, Shape(sent).events
    image = [e for e in after if e[:2] == ("start", "img")]
    assert len(image) == 1
    assert dict(image[0][2])["src"] == f"{BASE}/t/o/{TOKENS.open_token(42)}.gif"
    assert after.index(image[0]) == after.index(("end", "body")) - 1  # just before </body>
    after.remove(image[0])
    assert len(before) == len(after)
    for was, now in zip(before, after, strict=True):
        if was[:2] == ("start", "a") and now != was:
            assert dict(now[2])["href"].startswith(f"{BASE}/t/c/")
            # every other attribute kept, in its order
            assert [a for a in was[2] if a[0] != "href"] == [a for a in now[2] if a[0] != "href"]
        else:
            assert was == now
    # Source text outside the rewritten tags is byte for byte the same.
    start_tags = re.compile(r"<a\s[^>]*>")
    assert start_tags.sub("", re.sub(r"<img [^>]*>", "", sent)) == start_tags.sub("", BODY)
    assert "M&uuml;ller" in sent and "<!--[if mso]><table><tr><td><![endif]-->" in sent
    assert '<a href="mailto:vermittlung@example.org">' in sent  # not even rewritten


def test_a_link_with_entities_and_quotes_is_written_escaped():
    markup = '<p><a title="&quot;Q&quot; &amp; A" href="https://x.example/?q=&quot;1&quot;&lt;">x</a></p>'
    sent = tracking(opens=False).html(9, markup)
    [event] = [e for e in Shape(sent).events if e[:2] == ("start", "a")]
    assert dict(event[2])["title"] == '"Q" & A'
    assert tracking().link(markup, 1) == 'https://x.example/?q="1"<'


def test_a_document_without_body_gets_the_image_at_its_end():
    sent = tracking().html(5, '<p>Hallo <a href="https://x.example/">x</a></p>')
    assert sent.startswith('<p>Hallo <a href="' + BASE + "/t/c/")
    assert sent.endswith(
        f'<img src="{BASE}/t/o/{TOKENS.open_token(5)}.gif" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0;">'
    )


def test_only_opens_or_only_clicks():
    opens_only = tracking(clicks=False).html(42, BODY)
    assert click_tokens(opens_only) == [] and "/t/o/" in opens_only
    assert opens_only.replace(re.search(r"<img [^>]*>", opens_only)[0], "") == BODY  # type: ignore[index]
    clicks_only = tracking(opens=False).html(42, BODY)
    assert len(click_tokens(clicks_only)) == 4 and "/t/o/" not in clicks_only and "<img" not in clicks_only


def test_without_a_public_url_or_a_secret_there_is_no_tracking_and_off_means_untouched():
    plain = Settings.from_environ({})
    assert not plain.tracking and Tracking.from_settings(plain) is None
    # Switched off again, secret and URL kept: the redirect still works, emails go untouched.
    off = tracking(opens=False, clicks=False)
    assert off.for_email(42) is None
    assert off.link(BODY, 1) == LINKS[0]


def message(email: OutgoingEmail, tracked: Any = None) -> Any:
    return message_from_bytes(build_message(email, SENT_AT, tracked).data, policy=policy.default)


def parts(parsed: Any) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in parsed.walk() if not part.is_multipart()}


OUTGOING = OutgoingEmail(
    message_id="<k@example.org>",
    sender_email="vermittlung@example.org",
    sender_name="Vermittlung",
    recipient_email="t7@praxis.example",
    recipient_name="Dr. Eva Müller",
    subject="Anfrage",
    body_text="Infos: https://praxis.example/info?a=1&b=2",
    body_html=BODY,
)


def test_the_message_as_sent_carries_tracking_in_its_html_part_only():
    sent = parts(message(OUTGOING, tracking().for_email(42)))
    assert sent["text/html"] == tracking().html(42, BODY)
    assert sent["text/plain"] == OUTGOING.body_text  # the text part as written
    assert OUTGOING.body_html == BODY


def test_without_tracking_the_message_is_what_it_always_was():
    assert parts(message(OUTGOING)) == {"text/plain": OUTGOING.body_text, "text/html": BODY}


def test_the_image_is_a_1x1_gif():
    assert PIXEL[:6] == b"GIF89a" and PIXEL[-1:] == b";"
    assert int.from_bytes(PIXEL[6:8], "little") == 1 and int.from_bytes(PIXEL[8:10], "little") == 1
    assert len(PIXEL) == 43


def test_a_redirect_to_a_link_with_other_than_ascii_goes_encoded_and_sends_no_referrer():
    plain = _redirect("https://praxis.example/info?a=1&b=2")
    assert (plain.status, plain.headers["Location"]) == (302, "https://praxis.example/info?a=1&b=2")
    assert plain.headers["Referrer-Policy"] == "no-referrer" and "no-store" in plain.headers["Cache-Control"]
    encoded = _redirect("https://bücher.example/straße?q=ü")
    assert encoded.headers["Location"] == "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%BC"
