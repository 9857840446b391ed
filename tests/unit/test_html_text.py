"""Staff-written HTML: sanitised against an allow-list, and turned into the
plain-text part."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from streams.email.html_text import html_to_text
from streams.email.sanitiser import ALLOWED_ATTRIBUTES, ALLOWED_TAGS, LINK_REL, clean_html
from tests.xss_corpus import LEAK, NAMES, payloads, url_is_allowed

CORPUS = payloads()
PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def elements(markup: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = _Elements()
    parser.feed(markup)
    parser.close()
    return parser.found


def assert_only_allowed(cleaned: str) -> None:
    lowered = cleaned.lower()
    assert "<script" not in lowered
    assert "javascript:" not in lowered and "vbscript:" not in lowered
    assert not re.search(r"\son[a-z]+\s*=", lowered), "an event handler attribute"
    for tag, attrs in elements(cleaned):
        assert tag in ALLOWED_TAGS, tag
        allowed = ALLOWED_ATTRIBUTES.get(tag, frozenset()) | ALLOWED_ATTRIBUTES["*"]
        for name, value in attrs:
            if tag == "a" and name == "rel":
                assert value == LINK_REL
                continue
            assert name in allowed, (tag, name)
            if name in ("href", "src"):
                assert url_is_allowed(tag, name, value or ""), (tag, name, value)


def test_the_corpus_is_big_enough_and_its_names_unique() -> None:
    assert len(CORPUS) >= 30
    assert len(set(NAMES)) == len(NAMES)


@pytest.mark.parametrize(("name", "payload"), CORPUS, ids=NAMES)
def test_corpus_payload_is_defused(name: str, payload: str) -> None:
    cleaned = clean_html(payload)

    assert_only_allowed(cleaned)
    assert LEAK.split("://")[1] not in cleaned, "a remote load survived"
    assert "__xss" not in cleaned
    assert clean_html(cleaned) == cleaned, "sanitising again changes the output (mutation)"


def test_scripts_handlers_and_unsafe_links_are_removed() -> None:
    cleaned = clean_html(
        '<p onclick="x()">Hallo<script>alert(1)</script></p><iframe src="https://x"></iframe>'
        '<a href="javascript:steal()">a</a><a href="https://ok.example/">b</a><a href="mailto:x@y">c</a>'
    )
    assert "script" not in cleaned and "onclick" not in cleaned and "iframe" not in cleaned
    assert "javascript" not in cleaned
    # Links now carry rel="noopener noreferrer" (this assertion used to expect none).
    assert '<a href="https://ok.example/" rel="noopener noreferrer">b</a>' in cleaned
    assert 'href="mailto:x@y"' in cleaned


def test_text_is_escaped_again_after_parsing() -> None:
    assert clean_html("<p>1 &lt; 2 &amp; 3</p>") == "<p>1 &lt; 2 &amp; 3</p>"


def test_email_formatting_survives() -> None:
    markup = (
        '<h1>Titel</h1><h2 align="center">Unter</h2><h3>Drei</h3>'
        '<p lang="de" title="t">Sehr <b>geehrte</b> <strong>Frau</strong> <i>Dr.</i> <em>Müller</em>, '
        "<u>bitte</u> <s>nicht</s> <small>klein</small> <sub>1</sub><sup>2</sup> <code>x</code><br>"
        '<span>Zeile</span></p><div dir="ltr">Block</div>'
        '<ul><li>eins</li></ul><ol start="3"><li value="3">drei</li></ol>'
        "<blockquote>zitiert</blockquote><pre>  fest</pre><hr>"
        '<table border="1" cellpadding="4" cellspacing="0" width="100%"><caption>Termine</caption>'
        '<thead><tr><th scope="col">Tag</th><th>Zeit</th></tr></thead>'
        '<tbody><tr><td colspan="2" align="left" valign="top">Montag</td></tr></tbody></table>'
        '<p><a href="https://praxis.example/termine?x=1&amp;y=2">Termine</a> '
        '<a href="mailto:praxis@example.org">Mail</a> <a href="tel:+49301234">Anruf</a> '
        '<a href="#oben">oben</a></p>'
        '<img src="https://praxis.example/logo.png" alt="Logo" width="120" height="40">'
    )
    cleaned = clean_html(markup)

    assert cleaned == re.sub(r'(<a href="[^"]*")>', r'\1 rel="noopener noreferrer">', markup)
    assert_only_allowed(cleaned)


def test_links_get_rel_noopener_noreferrer_whatever_they_brought() -> None:
    cleaned = clean_html('<a href="https://x.example/" rel="opener" target="_blank">x</a>')
    assert cleaned == '<a href="https://x.example/" rel="noopener noreferrer">x</a>'


@pytest.mark.parametrize("mime", ["png", "jpeg", "gif", "webp", "PNG"])
def test_pasted_base64_images_stay(mime: str) -> None:
    src = PNG.replace("image/png", f"image/{mime}")
    assert clean_html(f'<img src="{src}" alt="Bild">') == f'<img src="{src}" alt="Bild">'


def test_line_breaks_inside_a_pasted_image_are_dropped() -> None:
    body = PNG.split(",", 1)[1]
    wrapped = "\n".join(body[i : i + 20] for i in range(0, len(body), 20))
    assert clean_html(f'<img src="data:image/png;base64,{wrapped}">') == f'<img src="{PNG}">'


@pytest.mark.parametrize(
    "markup",
    [
        '<img src="data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=">',  # SVG: not on the list
        '<img src="data:image/png,rawbytes">',  # not base64
        '<img src="data:image/png;base64,AAA$">',  # not base64 either
        '<img src="data:text/html;base64,PHA+">',
        '<img src="data:image/pngx;base64,AAAA">',
        '<a href="data:image/png;base64,AAAA">x</a>',  # only on img src
        '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    ],
)
def test_every_other_data_url_is_removed(markup: str) -> None:
    cleaned = clean_html(markup)
    assert "data:" not in cleaned
    assert_only_allowed(cleaned)


@pytest.mark.parametrize(
    ("markup", "kept"),
    [
        ('<img src="//cdn.example/x.png">', False),  # protocol-relative: removed
        ('<img src="/x.png">', False),
        ('<a href="termine.html">x</a>', False),
        ('<a href="\\\\evil.example/x">x</a>', False),
        ('<a href="#abschnitt">x</a>', True),  # same-document fragment: kept
        ('<img src="#x">', False),
        ('<a href="HTTPS://X.EXAMPLE/">x</a>', True),
        ('<a href="ftp://x.example/">x</a>', False),
        ('<a href="file:///etc/passwd">x</a>', False),
    ],
)
def test_relative_and_other_urls(markup: str, kept: bool) -> None:
    cleaned = clean_html(markup)
    assert ("href=" in cleaned or "src=" in cleaned) is kept, cleaned
    assert_only_allowed(cleaned)


def test_forms_and_their_controls_are_removed_with_their_labels() -> None:
    cleaned = clean_html(
        '<form action="https://x.example/"><p>Passwort:</p><input type="password" name="p">'
        "<select><option>a</option></select><textarea>t</textarea><button>Anmelden</button></form>"
    )
    assert cleaned == "<p>Passwort:</p>"


# -- plain text


def test_plain_text_keeps_paragraphs_lists_and_breaks() -> None:
    text = html_to_text(
        "<p>Sehr geehrte Frau M&uuml;ller,</p><p>erste<br>zweite Zeile</p><ul><li>eins</li><li>zwei</li></ul>"
    )
    assert text == "Sehr geehrte Frau Müller,\n\nerste\nzweite Zeile\n\n- eins\n- zwei\n"


def test_plain_text_leaves_out_scripts_and_styles() -> None:
    assert html_to_text("<style>p{}</style><p>Text</p><script>x</script>") == "Text\n"


def test_plain_text_keeps_link_targets() -> None:
    text = html_to_text(
        clean_html(
            '<p>Bitte melden Sie sich im <a href="https://portal.example/login?a=1&amp;b=2">Portal</a> an, '
            'siehe <a href="https://portal.example/hilfe/">https://portal.example/hilfe/</a> oder '
            '<a href="https://portal.example">portal.example</a>, schreiben Sie an '
            '<a href="mailto:team@example.org">team@example.org</a> oder '
            '<a href="mailto:team@example.org">das Team</a>, rufen Sie <a href="tel:+49301234">uns</a> an. '
            '<a href="#oben">Nach oben</a> <a href="https://portal.example/x"><img src="https://portal.example/i.png"></a></p>'
        )
    )
    assert text == (
        "Bitte melden Sie sich im Portal (https://portal.example/login?a=1&b=2) an, "
        "siehe https://portal.example/hilfe/ oder portal.example, schreiben Sie an "
        "team@example.org oder das Team (team@example.org), rufen Sie uns (+49301234) an. "
        "Nach oben https://portal.example/x\n"
    )


def test_plain_text_lays_out_a_table_one_row_per_line() -> None:
    text = html_to_text(
        clean_html(
            "<p>Ihre Termine:</p>"
            "<table><thead><tr><th>Tag</th><th>Zeit</th><th>Ort</th></tr></thead>"
            "<tbody><tr><td>Montag</td><td>10:00</td><td>Praxis<br>Raum 2</td></tr>"
            "<tr><td>Dienstag</td><td></td><td>online</td></tr></tbody></table>"
            "<p>Mit freundlichen Grüßen</p>"
        )
    )
    assert text == (
        "Ihre Termine:\n\n"
        "Tag | Zeit | Ort\n"
        "Montag | 10:00 | Praxis / Raum 2\n"
        "Dienstag |  | online\n\n"
        "Mit freundlichen Grüßen\n"
    )


def test_plain_text_of_a_layout_table_is_its_paragraphs() -> None:
    text = html_to_text(
        '<table role="presentation"><tr><td><p>Sehr geehrte Frau Müller,</p><p>danke.</p></td></tr>'
        "<tr><td>Max Muster<br>Musterstr. 1</td></tr></table>"
    )
    assert text == "Sehr geehrte Frau Müller,\n\ndanke.\n\nMax Muster\nMusterstr. 1\n"


def test_plain_text_numbers_ordered_lists_nests_and_quotes() -> None:
    text = html_to_text(
        '<ol start="2"><li>zwei<ul><li>a</li><li>b</li></ul></li><li>drei</li></ol>'
        "<blockquote><p>Zitat</p><p>weiter</p></blockquote><pre>  eingerückt\n    mehr</pre><hr><p>Ende</p>"
    )
    assert text == (
        "2. zwei\n  - a\n  - b\n3. drei\n\n> Zitat\n>\n> weiter\n\n  eingerückt\n    mehr\n\n" + "-" * 20 + "\n\nEnde\n"
    )


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        ("<td><a href='https://a.example/'>x</td></tr><p>danach", "x danach (https://a.example/)\n"),
        ("<a href='https://a.example/'><table><tr><td>x</a></td></tr></table>", "x (https://a.example/)\n"),
        ("</table></td></a></blockquote><blockquote><table><tr><th>x", "> x\n"),
        ("<ol start=x><li>a</ol></ol></li>", "1. a\n"),
    ],
)
def test_plain_text_copes_with_broken_markup(markup: str, expected: str) -> None:
    assert html_to_text(markup) == expected


@pytest.mark.parametrize(("name", "payload"), CORPUS, ids=NAMES)
def test_plain_text_of_the_corpus_carries_no_markup(name: str, payload: str) -> None:
    text = html_to_text(clean_html(payload))
    assert "<" not in text and "__xss" not in text
