"""HTML written by staff (manual emails): cleaned of anything that runs or loads,
and turned into the plain-text part when none is given."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

# Elements dropped with everything inside them.
_DROPPED = frozenset({"script", "style", "iframe", "object", "embed", "frame", "frameset", "template", "noscript"})
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "wbr", "col", "area", "base", "source"})
_BLOCK = frozenset({"p", "div", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "blockquote", "section"})
_URL_ATTRIBUTES = frozenset({"href", "src", "action", "background", "formaction", "xlink:href"})
_SAFE_SCHEMES = ("http://", "https://", "mailto:", "tel:", "#")


class _Cleaner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.dropping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED:
            if tag not in _VOID:
                self.dropping += 1
            return
        if self.dropping:
            return
        kept = []
        for name, value in attrs:
            if name.startswith("on"):
                continue  # event handlers
            if name in _URL_ATTRIBUTES and value and not value.strip().lower().startswith(_SAFE_SCHEMES):
                continue  # javascript:, data: and the like
            kept.append(f' {name}="{html.escape(value or "", quote=True)}"' if value is not None else f" {name}")
        self.out.append(f"<{tag}{''.join(kept)}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED:
            self.dropping = max(0, self.dropping - 1)
            return
        if not self.dropping and tag not in _VOID:
            self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if not self.dropping:
            self.out.append(html.escape(data, quote=False))


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED:
            self.skipping += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in _BLOCK or tag == "td":
            self.out.append("\n\n" if tag in _BLOCK else " ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK:
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(re.sub(r"\s+", " ", data))


def clean_html(markup: str) -> str:
    """The markup without scripts, frames, event handlers or unsafe links."""
    cleaner = _Cleaner()
    cleaner.feed(markup)
    cleaner.close()
    return "".join(cleaner.out)


def html_to_text(markup: str) -> str:
    """A readable plain-text version of the markup."""
    converter = _Text()
    converter.feed(markup)
    converter.close()
    lines = [line.strip() for line in "".join(converter.out).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
