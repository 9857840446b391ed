"""Every payload of tests/xss_corpus.py, sanitised, in a real headless Chromium:
no script runs, not on load and not when each link, button or control is clicked,
nothing is fetched from anywhere, and the DOM the browser builds holds only what
the allow-list allows.

The pages come from a server on 127.0.0.1 that also stands in for the attacker's
host: every remote URL of the corpus points at its ``/leak/`` path, so a load
that got through shows up in its log as well as in Chromium's ``Network`` events.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.email.sanitiser import ALLOWED_ATTRIBUTES, ALLOWED_TAGS, LINK_REL, clean_html
from tests.browser.cdp import Chromium, Page
from tests.xss_corpus import NAMES, payloads, url_is_allowed

SETTLE = 0.3  # seconds for a refresh, a ping or a lazy load to happen
HARNESS = "//# sourceURL=__sanitiser_test__"  # marks the test's own scripts
CLICKABLE = "a, area, button, input, select, textarea, summary, label, [href], [onclick]"
PAGE = (
    '<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
    "<title>Sanitiser</title></head><body>{}</body></html>"
)
XHTML = "http://www.w3.org/1999/xhtml"
NAV_PAGE = '<!DOCTYPE html><html><head><link rel="icon" href="data:,"><title>nav</title></head><body>nav</body></html>'

DOM = """(() => {
  const elements = [...document.body.querySelectorAll('*')];
  return {
    marker: window.__xss === undefined ? null : String(window.__xss),
    body: [...document.body.attributes].map(a => a.name),
    elements: elements.map(e => ({
      tag: e.localName,
      ns: e.namespaceURI,
      attrs: [...e.attributes].map(a => [a.name, a.value]),
    })),
    clickable: document.body.querySelectorAll(CLICKABLE).length,
  };
})()
""".replace("CLICKABLE", json.dumps(CLICKABLE))

# Scrolls clickable number i into view and says where to click it; null for a
# mailto: or tel: link, which would only hand over to another program.
TARGET = """(i => {
  const e = document.body.querySelectorAll(CLICKABLE)[i];
  if (!e) return null;
  const href = e.href && typeof e.href === 'object' ? e.href.animVal : (e.href || '');
  if (/^(mailto|tel):/i.test(href)) return null;
  e.scrollIntoView({block: 'center'});
  const r = e.getBoundingClientRect();
  if (r.width < 1 || r.height < 1) {  // nothing to aim at: a synthetic click
    e.dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true, view: window}));
    return {clicked: true};
  }
  return {x: r.left + r.width / 2, y: r.top + r.height / 2};
})(INDEX)
""".replace("CLICKABLE", json.dumps(CLICKABLE))


class Server:
    """Serves the test pages and logs every request, whatever its path."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.log: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                server.log.append(self.path)
                body = server.pages.get(self.path.split("?")[0])
                if body is None and self.path.startswith("/nav/"):
                    body = NAV_PAGE
                status = 200 if body is not None else 404
                data = (body or "not here").encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


@dataclass
class Seen:
    """Everything a payload's page did, over its load and all the clicks."""

    requests: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)
    clicks: int = 0


def harness(page: Page, expression: str) -> Any:
    """Evaluate the test's own script, after dismissing any dialog a payload opened."""
    for event in page.browser.events(page.session, "Page.javascriptDialogOpening"):
        if not event.get("handled"):
            event["handled"] = True
            page.call("Page.handleJavaScriptDialog", {"accept": False})
    return page.evaluate(f"{expression}\n{HARNESS}")


def record(page: Page, seen: Seen) -> None:
    for event in page.browser.events(page.session):
        params = event["params"]
        if event["method"] == "Network.requestWillBeSent":
            seen.requests.append(params["request"]["url"])
        elif event["method"] == "Debugger.scriptParsed" and params.get("url") != "__sanitiser_test__":
            seen.scripts.append(params.get("url") or "(inline)")
        elif event["method"] == "Page.javascriptDialogOpening":
            seen.dialogs.append(params.get("message", ""))


def click(page: Page, index: int) -> bool:
    target = harness(page, TARGET.replace("INDEX", str(index)))
    if target is None:
        return False
    if "x" in target:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            page.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": target["x"], "y": target["y"], "button": "left", "clickCount": 1},
            )
    return True


def visit(
    chromium: Chromium, url: str, seen: Seen, click_index: int | None = None, settle: float = SETTLE
) -> dict[str, Any]:
    with chromium.page(800) as page:
        page.load(url, settle=settle)
        facts: dict[str, Any] = harness(page, DOM)
        if click_index is not None and click(page, click_index):
            seen.clicks += 1
            time.sleep(settle)
            after = harness(page, "window.__xss === undefined ? null : String(window.__xss)")
            if after is not None:
                seen.markers.append(after)
        if facts["marker"] is not None:
            seen.markers.append(facts["marker"])
        record(page, seen)
    return facts


def allow_list_breaches(facts: dict[str, Any]) -> list[str]:
    breaches = [f"<body {name}>" for name in facts["body"]]
    for element in facts["elements"]:
        tag = element["tag"]
        if element["ns"] != XHTML:
            breaches.append(f"<{tag}> in {element['ns']}")
            continue
        if tag not in ALLOWED_TAGS:
            breaches.append(f"<{tag}>")
            continue
        allowed = ALLOWED_ATTRIBUTES.get(tag, frozenset()) | ALLOWED_ATTRIBUTES["*"]
        for name, value in element["attrs"]:
            if tag == "a" and name == "rel" and value == LINK_REL:
                continue
            if name not in allowed or (name in ("href", "src") and not url_is_allowed(tag, name, value)):
                breaches.append(f"<{tag} {name}={value!r}>")
    return breaches


def leaks(seen: Seen, server: Server, page_path: str) -> list[str]:
    """Requests other than for the page itself or for a link target the
    sanitiser rightly kept and the test clicked (those are under ``/nav/``)."""
    page_url, nav = server.base + page_path, server.base + "/nav/"
    from_chromium = {url for url in seen.requests if url != page_url and not url.startswith(("data:", nav))}
    from_server = {server.base + path for path in server.log if path != page_path and not path.startswith("/nav/")}
    return sorted(from_chromium | from_server)


def exercise(
    chromium: Chromium, server: Server, name: str, markup: str, settle: float = SETTLE
) -> dict[str, list[str]]:
    """Serve ``markup`` as a page, load it, click each clickable thing in turn
    (on a fresh load each) and say what went wrong, by kind."""
    path = f"/page/{name}"
    server.pages[path] = PAGE.format(markup)
    server.log.clear()
    seen = Seen()
    facts = visit(chromium, server.base + path, seen, settle=settle)
    for index in range(facts["clickable"]):
        visit(chromium, server.base + path, seen, click_index=index, settle=settle)
    problems = {
        "scripts ran": seen.scripts,
        "window.__xss was set": seen.markers,
        "dialogs opened": seen.dialogs,
        "requests left the page": leaks(seen, server, path),
        "not on the allow-list": allow_list_breaches(facts),
        "clicked": [str(seen.clicks)] if seen.clicks else [],
    }
    return {what: found for what, found in problems.items() if found}


@pytest.mark.parametrize("name", NAMES)
def test_sanitised_payload_in_headless_chromium(chromium: Chromium, server: Server, name: str) -> None:
    payload = dict(payloads(leak=f"{server.base}/leak/{name}", nav=f"{server.base}/nav/{name}"))[name]

    problems = exercise(chromium, server, name, clean_html(payload))

    problems.pop("clicked", None)
    assert problems == {}, payload


def test_the_checks_see_scripts_requests_and_breaches(chromium: Chromium, server: Server) -> None:
    """The same checks on payloads left as they are: they must fire, or the
    test above proves nothing."""
    leak = f"{server.base}/leak/raw"
    corpus = dict(payloads(leak=leak, nav=f"{server.base}/nav/raw"))
    found = {
        name: exercise(chromium, server, f"raw-{name}", corpus[name], settle=1.0)
        for name in (
            "img-onerror",
            "a-javascript",
            "svg-animate-href",
            "style-attribute-url",
            "a-ping",
            "form-password",
        )
    }

    assert found["img-onerror"]["scripts ran"] and found["img-onerror"]["window.__xss was set"] == ["1"]
    assert found["a-javascript"]["clicked"] == ["1"] and found["a-javascript"]["window.__xss was set"] == ["1"]
    assert found["svg-animate-href"]["window.__xss was set"] == ["1"]
    assert found["style-attribute-url"]["requests left the page"] == [f"{leak}/style-url.png"]
    assert found["a-ping"]["requests left the page"] == [f"{leak}/ping"]
    assert f"{leak}/form?p=geheim" in found["form-password"]["requests left the page"]
    assert "<input>" in found["form-password"]["not on the allow-list"]
