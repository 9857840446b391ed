"""The one-click opt-out page (streams/api/unsubscribe.py) in a real headless
Chromium, at a phone's and a desktop's width, in each of its states: screenshots
are taken, nothing overflows sideways, no script runs, nothing is fetched, and the
confirm page's one control is a button that posts the form."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.api.unsubscribe import STATUS, PageRenderer
from tests.browser.cdp import Chromium
from tests.browser.test_preview_pages import PNG, open_page

WIDTHS = (375, 800)
BUTTON = """(() => [...document.querySelectorAll('button, input, a, form')].map(e =>
  [e.tagName, e.getAttribute('type'), e.getAttribute('method'), e.getAttribute('action'),
   e.getBoundingClientRect().width]))()"""


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("page", sorted(STATUS))
def test_the_page_in_headless_chromium(
    chromium: Chromium, tmp_path: Path, screenshot_dir: Path, page: str, width: int
) -> None:
    path = tmp_path / f"{page}.html"
    path.write_bytes(PageRenderer("Therapieplatz-Vermittlung", "vermittlung@therapieplatz.example")(page))
    shot = screenshot_dir / f"unsubscribe_{page}-{width}.png"

    facts = open_page(chromium, path, width, shot)

    assert facts["requests"] == [path.as_uri()], "the page fetched something besides itself"
    assert facts["compiled_scripts"] == [] and facts["scripts"] == 0 and facts["handlers"] == []
    assert facts["scrollWidth"] <= width, "horizontal overflow"
    assert facts["widest"] <= width + 0.5, "an element sticks out to the right"
    assert facts["smallestFont"] >= 12
    assert all(link.startswith("mailto:") for link in facts["links"]), facts["links"]
    assert facts["text"].lstrip().startswith("Therapieplatz-Vermittlung")
    assert shot.read_bytes().startswith(PNG)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_confirm_button_posts_to_the_same_address_and_is_easy_to_hit(
    chromium: Chromium, tmp_path: Path, width: int
) -> None:
    path = tmp_path / "confirm.html"
    path.write_bytes(PageRenderer("Therapieplatz-Vermittlung", "v@example.org")("confirm"))

    with chromium.page(width) as page:
        page.load(path.as_uri())
        controls = page.evaluate(BUTTON)

    kinds = [(tag, kind, method, action) for tag, kind, method, action, _ in controls]
    assert kinds == [("FORM", None, "post", None), ("INPUT", "hidden", None, None), ("BUTTON", "submit", None, None)]
    button_width = controls[2][4]
    assert button_width >= min(width - 80, 480)  # about the width of the card: a thumb finds it
