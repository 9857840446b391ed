"""The preview emails in a real headless Chromium, at a phone's and a desktop
mail client's width: screenshots are taken, nothing overflows sideways, no script
runs and nothing is fetched from anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streams.email.preview import UNSUBSCRIBE_URL, preview_cases
from streams.email.rendering import Renderer
from tests.browser.cdp import Chromium

PAGES = [case.name for case in preview_cases()] + ["index"]
WIDTHS = (375, 800)
PNG = b"\x89PNG\r\n\x1a\n"

# Evaluated only after the page's own activity was recorded (see Page.load).
PROBE = """(() => {
  const all = [...document.body.querySelectorAll('*')];
  const hasText = e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  return {
    innerWidth: window.innerWidth,
    scrollWidth: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
    widest: Math.max(0, ...all.map(e => e.getBoundingClientRect().right)),
    smallestFont: Math.min(
      ...all.filter(hasText).map(e => parseFloat(getComputedStyle(e).fontSize))),
    scripts: document.scripts.length,
    handlers: [...document.querySelectorAll('*')].flatMap(e => [...e.attributes]
      .filter(a => a.name.startsWith('on')).map(a => e.tagName + ' ' + a.name)),
    links: [...document.querySelectorAll('[href],[src]')].map(
      e => e.getAttribute('href') || e.getAttribute('src')),
    text: document.body.innerText,
  };
})()"""


def open_page(chromium: Chromium, path: Path, width: int, shot: Path | None) -> dict[str, Any]:
    with chromium.page(width) as page:
        load = page.load(path.as_uri())
        facts: dict[str, Any] = page.evaluate(PROBE)
        if shot is not None:
            page.screenshot(shot)
    facts["requests"] = load.requests
    facts["compiled_scripts"] = load.scripts
    return facts


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", PAGES)
def test_preview_page_in_headless_chromium(
    chromium: Chromium, preview_dir: Path, screenshot_dir: Path, name: str, width: int
) -> None:
    page = preview_dir / f"{name}.html"
    shot = screenshot_dir / f"{name}-{width}.png"

    facts = open_page(chromium, page, width, shot)

    assert facts["requests"] == [page.as_uri()], "the page fetched something besides itself"
    assert facts["compiled_scripts"] == [], "a script was compiled while the page loaded"
    assert facts["scripts"] == 0
    assert facts["handlers"] == []
    assert facts["innerWidth"] == width
    assert facts["scrollWidth"] <= width, "horizontal overflow"
    assert facts["widest"] <= width + 0.5, "an element sticks out to the right"
    assert facts["smallestFont"] >= 12
    for link in facts["links"]:
        # mailto:, the one-click opt-out link of contact emails, the index's own pages
        assert link.startswith("mailto:") or link == UNSUBSCRIBE_URL or (name == "index" and "/" not in link), link
    if name != "index":
        assert facts["text"].lstrip().startswith("Therapieplatz-Vermittlung")
        assert "Sehr geehrte" in facts["text"] or "Guten Tag" in facts["text"]
        assert "Mit freundlichen Grüßen" in facts["text"]
    assert shot.read_bytes().startswith(PNG)


def test_the_checks_see_scripts_requests_and_overflow(chromium: Chromium, tmp_path: Path) -> None:
    """The same checks on a page that breaks every rule: they must fire, or the
    test above proves nothing."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body>"
        "<script>document.title = 'ran';</script>"
        '<img src="http://example.invalid/pixel.png" alt="">'
        '<table style="width:1000px"><tr><td>wide</td></tr></table>'
        "</body></html>",
        encoding="utf-8",
    )

    facts = open_page(chromium, bad, 375, None)

    assert facts["compiled_scripts"], "an inline script went unnoticed"
    assert any(url.startswith("http://example.invalid/") for url in facts["requests"])
    assert facts["scrollWidth"] > 375
    assert facts["scripts"] == 1


@pytest.mark.parametrize("width", WIDTHS)
def test_long_words_and_twenty_patients_do_not_overflow(chromium: Chromium, tmp_path: Path, width: int) -> None:
    """Names, addresses and notes without a single break opportunity still wrap."""
    long_word = "Psychotherapeutenkammerversorgungsstrukturweiterentwicklungsgesetz" * 2
    patient = {
        "first_name": "Maximiliane-Josephine-Alexandra",
        "last_name": long_word,
        "gender": None,
        "age": 30,
        "insurance": long_word,
        "diagnosis": long_word,
        "availability": long_word,
        "notes": long_word,
        "registered_at": "2026-01-05T10:00:00+01:00",
        "placement_request_id": 1,
    }
    context = {
        "therapist": {
            "title": "Prof. Dr. med. Dipl.-Psych.",
            "salutation": "Frau",
            "first_name": "A",
            "last_name": long_word,
            "email": None,
            "phone": None,
        },
        "patients": [patient] * 20,
        "sender": {"name": long_word, "email": f"{long_word}@example.org"},
    }
    page = tmp_path / "stress.html"
    page.write_text(Renderer(ZoneInfo("Europe/Berlin")).render("batch_request", context).html, encoding="utf-8")

    facts = open_page(chromium, page, width, None)

    assert facts["scrollWidth"] <= width, "horizontal overflow"
    assert facts["widest"] <= width + 0.5
    assert facts["text"].count("Nr. ") >= 20
