"""Staff-written HTML: cleaned, and turned into the plain-text part."""

from streams.html_text import clean_html, html_to_text


def test_scripts_handlers_and_unsafe_links_are_removed():
    cleaned = clean_html(
        '<p onclick="x()">Hallo<script>alert(1)</script></p><iframe src="https://x"></iframe>'
        '<a href="javascript:steal()">a</a><a href="https://ok.example/">b</a><a href="mailto:x@y">c</a>'
    )
    assert "script" not in cleaned and "onclick" not in cleaned and "iframe" not in cleaned
    assert "javascript" not in cleaned
    assert '<a href="https://ok.example/">b</a>' in cleaned and 'href="mailto:x@y"' in cleaned


def test_text_is_escaped_again_after_parsing():
    assert clean_html("<p>1 &lt; 2 &amp; 3</p>") == "<p>1 &lt; 2 &amp; 3</p>"


def test_plain_text_keeps_paragraphs_lists_and_breaks():
    text = html_to_text(
        "<p>Sehr geehrte Frau M&uuml;ller,</p><p>erste<br>zweite Zeile</p><ul><li>eins</li><li>zwei</li></ul>"
    )
    assert text == "Sehr geehrte Frau Müller,\n\nerste\nzweite Zeile\n\n- eins\n- zwei\n"


def test_plain_text_leaves_out_scripts_and_styles():
    assert html_to_text("<style>p{}</style><p>Text</p><script>x</script>") == "Text\n"
