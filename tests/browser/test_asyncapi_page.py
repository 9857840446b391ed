"""docs/asyncapi.html, the browsable reference of the contract, in a real headless
Chromium: it renders every topic and message of docs/asyncapi.yaml, throws nothing,
and fetches nothing but itself (its scripts, styles and the document are inline)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from tests.browser.cdp import Chromium

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "asyncapi.html"
DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("width", (1280, 375))
def test_the_contract_page_renders_offline(chromium: Chromium, screenshot_dir: Path, width: int) -> None:
    document = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    with chromium.page(width) as page:
        load = page.load(PAGE.as_uri(), settle=1.0)
        exceptions = chromium.events(page.session, "Runtime.exceptionThrown")
        page.evaluate("window.scrollTo(0, 0)")
        text = page.evaluate("document.body.innerText")
        title = page.evaluate("document.title")
        shot = page.call("Page.captureScreenshot", {"format": "png"})  # the first screen only: the page is long

    assert load.requests == [PAGE.as_uri()], "the page fetched something besides itself"
    assert exceptions == []
    assert "error" not in load.console
    assert title.startswith(document["info"]["title"])
    for topic in document["channels"]:
        assert topic in text, topic
    for name in document["components"]["messages"]:
        assert name in text, name
    for server in document["servers"].values():
        assert server["description"].split(".")[0] in text
    picture = base64.b64decode(shot["data"])
    assert picture.startswith(PNG)
    (screenshot_dir / f"asyncapi-{width}.png").write_bytes(picture)
