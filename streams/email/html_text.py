"""The plain-text part of an email written in HTML: links keep their targets,
tables go one row per line, lists, quotes and ``pre`` keep their shape."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from streams.email.sanitiser import DROPPED_WITH_CONTENT

_SKIPPED_IN_TEXT = DROPPED_WITH_CONTENT | {"option"}

_BLOCK = frozenset(
    {
        "address",
        "article",
        "aside",
        "caption",
        "center",
        "dd",
        "details",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "main",
        "nav",
        "ol",
        "p",
        "section",
        "summary",
        "table",
        "ul",
    }
)


_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)


# Stands for one space of indentation until the very end, so that stripping the
# lines of stray whitespace leaves list and preformatted indentation alone.
_INDENT = "\0"


def _trailing_newlines(parts: list[str]) -> int:
    """How many newlines end the text made of ``parts`` (2 is as many as
    matter), looking back only over its trailing whitespace."""
    count = 0
    for part in reversed(parts):
        for char in reversed(part):
            if not char.isspace() or count == 2:
                return count
            count += char == "\n"
    return 2  # the start of a buffer needs no break


def _tidy(text: str) -> str:
    """Lines stripped, at most one empty line in a row, no empty lines around."""
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def _same_target(label: str, href: str) -> bool:
    def bare(url: str) -> str:
        return re.sub(r"^(?:https?://|mailto:|tel:)", "", url.strip(), flags=re.IGNORECASE).rstrip("/").casefold()

    return bare(label) == bare(href)


class _Frame:
    """A part of the text written on its own and laid out when it ends: the
    whole text, a link, a table (its rows), a table cell or a quote."""

    def __init__(self, kind: str, href: str | None = None) -> None:
        self.kind = kind
        self.parts: list[str] = []
        self.href = href
        self.row: list[str] | None = None  # a table's current row

    def joined(self) -> str:
        return "".join(self.parts)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.frames = [_Frame("root")]
        self.lists: list[list[int | None]] = []  # per open list: [next number], None if unnumbered
        self.pre = 0
        self.skipping = 0

    # -- writing

    def write(self, text: str) -> None:
        self.frames[-1].parts.append(text)

    def breaks(self, count: int) -> None:
        """At least ``count`` newlines at the end of the current text."""
        missing = count - _trailing_newlines(self.frames[-1].parts)
        if missing > 0:
            self.write("\n" * missing)

    # -- parsing

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_IN_TEXT:
            if tag not in _VOID:
                self.skipping += 1
            return
        if self.skipping:
            return
        if tag == "br":
            self.write("\n")
        elif tag == "hr":
            self.breaks(2)
            self.write("-" * 20)
            self.breaks(2)
        elif tag == "a":
            self.end("a")  # links do not nest
            self.frames.append(_Frame("a", dict(attrs).get("href")))
        elif tag == "li":
            self.start_item()
        elif tag in ("ul", "ol"):
            self.breaks(1 if self.lists else 2)
            start = (dict(attrs).get("start") or "").strip()
            self.lists.append([None if tag == "ul" else int(start) if start.isdigit() else 1])
        elif tag == "table":
            self.breaks(2)
            self.frames.append(_Frame("table"))
        elif tag == "tr":
            self.end("cell")
            self.end_row()
        elif tag in ("td", "th") and self.table() is not None:
            self.end("cell")
            self.frames.append(_Frame("cell"))
        elif tag == "blockquote":
            self.breaks(2)
            self.frames.append(_Frame("quote"))
        elif tag == "pre":
            self.breaks(2)
            self.pre += 1
        elif tag in _BLOCK:
            self.breaks(2)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_IN_TEXT:
            if tag not in _VOID:
                self.skipping = max(0, self.skipping - 1)
            return
        if self.skipping:
            return
        if tag == "a":
            self.end("a")
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()
            self.breaks(1 if self.lists else 2)
        elif tag == "li":
            self.breaks(1)
        elif tag == "table":
            self.end("table")
        elif tag == "tr":
            self.end("cell")
            self.end_row()
        elif tag in ("td", "th"):
            self.end("cell")
        elif tag == "blockquote":
            self.end("quote")
        elif tag == "pre" and self.pre:
            self.pre -= 1
            self.breaks(2)
        elif tag in _BLOCK:
            self.breaks(2)

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        data = data.replace(_INDENT, "")
        if self.pre:
            self.write(re.sub(r"(?m)^[ \t]+", lambda m: _INDENT * len(m.group().expandtabs(4)), data))
        elif self.frames[-1].kind != "table" or data.strip():  # not the whitespace between cells
            self.write(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        while len(self.frames) > 1:
            self.finish(self.frames.pop())
        return self.frames[0].joined()

    # -- structures

    def table(self) -> _Frame | None:
        return next((frame for frame in reversed(self.frames) if frame.kind == "table"), None)

    def end(self, kind: str) -> None:
        """End the innermost open ``kind`` and whatever is open inside it; only
        ``table`` reaches out of the innermost table."""
        for depth in range(len(self.frames) - 1, 0, -1):
            found = self.frames[depth].kind
            if found == kind:
                while len(self.frames) > depth:
                    self.finish(self.frames.pop())
                return
            if found == "table":
                return

    def finish(self, frame: _Frame) -> None:
        if frame.kind == "a":
            self.write(_link(re.sub(r"\s+", " ", frame.joined()).strip(), frame.href))
        elif frame.kind == "cell":
            table = self.table()
            if table is not None:
                table.row = [*(table.row or []), _tidy(frame.joined())]
        elif frame.kind == "table":
            self.frames.append(frame)
            self.end_row()
            self.frames.pop()
            self.breaks(2)
            self.write(frame.joined())
            self.breaks(2)
        elif frame.kind == "quote":
            text = _tidy(frame.joined())
            if text:
                self.breaks(2)
                self.write("\n".join(f"> {line}" if line else ">" for line in text.split("\n")))
                self.breaks(2)

    def start_item(self) -> None:
        self.breaks(1)
        marker = "- "
        if self.lists:
            number = self.lists[-1][0]
            if number is not None:
                marker = f"{number}. "
                self.lists[-1][0] = number + 1
        self.write(_INDENT * 2 * max(0, len(self.lists) - 1) + marker)

    def end_row(self) -> None:
        """One line per row, cells divided by " | " (a line break inside a cell
        becomes " / "). A row of a layout table, whose cells hold paragraphs or
        which has a single cell of several lines, is written as that text."""
        table = self.frames[-1]
        if table.kind != "table":
            return
        row, table.row = table.row, None
        filled = [cell for cell in row or () if cell]
        if not filled:
            return
        if any("\n\n" in cell for cell in filled) or (len(filled) == 1 and "\n" in filled[0]):
            for cell in filled:
                self.breaks(2)
                self.write(cell)
                self.breaks(2)
        else:
            self.breaks(1)
            self.write(" | ".join(cell.replace("\n", " / ") for cell in row or ()).strip())
            self.breaks(1)


def _link(label: str, href: str | None) -> str:
    """The link's text, followed by its target unless that says the same."""
    href = (href or "").strip()
    if not re.match(r"(?:https?|mailto|tel):", href, re.IGNORECASE):
        return label  # fragments and anything the sanitiser would have removed
    target = re.sub(r"^(?:mailto|tel):", "", href, flags=re.IGNORECASE)
    if not label:
        return target
    if _same_target(label, href):
        return label
    return f"{label} ({target})"


def html_to_text(markup: str) -> str:
    """A readable plain-text version of the markup: paragraphs, lists, link
    targets after their text, one line per table row."""
    converter = _Text()
    converter.feed(markup)
    converter.close()
    text = _tidy(converter.text()).replace(_INDENT, " ")
    return text + "\n"
