"""HTML written by staff (manual emails): sanitised against an allow-list, and
turned into the plain-text part when none is given.

Sanitising is done by nh3 (the binding of the Rust crate ammonia), which parses
the markup as a browser would and keeps only what :data:`ALLOWED_TAGS` and
:data:`ALLOWED_ATTRIBUTES` name. URLs in ``href`` and ``src`` must use one of
:data:`URL_SCHEMES`; relative URLs (protocol-relative ``//host`` ones included)
mean nothing in an email and are removed, except same-document ``#fragment``
links. The one ``data:`` URL kept is an image pasted by a rich-text editor:
``<img src="data:image/(png|jpeg|gif|webp);base64,…">``.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import nh3

ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "a",
        "abbr",
        "b",
        "bdi",
        "bdo",
        "blockquote",
        "br",
        "caption",
        "center",
        "cite",
        "code",
        "col",
        "colgroup",
        "dd",
        "del",
        "dfn",
        "div",
        "dl",
        "dt",
        "em",
        "figcaption",
        "figure",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "ins",
        "kbd",
        "li",
        "mark",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "samp",
        "small",
        "span",
        "strike",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "tt",
        "u",
        "ul",
        "var",
        "wbr",
    }
)
_ALIGN = frozenset({"align"})
_CELL = frozenset({"align", "valign", "colspan", "rowspan", "width"})
# Attributes per tag; "*" applies to every allowed tag. ``rel`` on links is not
# taken from the input: the sanitiser sets it (see LINK_REL).
ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "*": frozenset({"title", "lang", "dir"}),
    "a": frozenset({"href"}),
    "img": frozenset({"src", "alt", "width", "height"}),
    "table": frozenset({"align", "border", "cellpadding", "cellspacing", "summary", "width"}),
    "td": _CELL,
    "th": _CELL | {"scope", "abbr"},
    "tr": frozenset({"align", "valign"}),
    "thead": frozenset({"align", "valign"}),
    "tbody": frozenset({"align", "valign"}),
    "tfoot": frozenset({"align", "valign"}),
    "col": frozenset({"align", "valign", "span", "width"}),
    "colgroup": frozenset({"align", "valign", "span", "width"}),
    "ol": frozenset({"start", "type", "reversed"}),
    "ul": frozenset({"type"}),
    "li": frozenset({"value"}),
    **{tag: _ALIGN for tag in ("p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "caption")},
}
URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto", "tel"})
LINK_REL = "noopener noreferrer"
# Dropped together with everything inside them (all other unknown tags are
# dropped, their text kept).
DROPPED_WITH_CONTENT: frozenset[str] = frozenset(
    {
        "applet",
        "audio",
        "button",
        "datalist",
        "embed",
        "frame",
        "frameset",
        "head",
        "iframe",
        "math",
        "noembed",
        "noframes",
        "noscript",
        "object",
        "script",
        "select",
        "style",
        "svg",
        "template",
        "textarea",
        "title",
        "video",
        "xmp",
    }
)
DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[a-z0-9+/]*={0,2}", re.IGNORECASE)

_URL_ATTRIBUTES = frozenset({"href", "src"})
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*):", re.IGNORECASE)
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))


def _safe_url(element: str, url: str) -> str | None:
    """``url`` as a browser would read it, if it may stay on ``element``."""
    # The URL standard strips C0 controls and spaces around a URL and drops tabs
    # and newlines anywhere in it: "java\tscript:" is "javascript:".
    url = re.sub(r"[\t\n\r]", "", url.strip(_C0_AND_SPACE))
    scheme = _SCHEME.match(url)
    if scheme is None:  # relative: no base in an email, and //host would load
        return url if element == "a" and url.startswith("#") else None
    name = scheme.group(1).lower()
    if name == "data":
        compact = re.sub(r"\s", "", url)
        return compact if element == "img" and DATA_IMAGE.fullmatch(compact) else None
    return url if name in URL_SCHEMES else None


def _attribute_filter(element: str, attribute: str, value: str) -> str | None:
    # Runs after ammonia's own checks (allow-list, then scheme), for the
    # attributes that passed them; a second, stricter look at every URL.
    if attribute in _URL_ATTRIBUTES:
        return _safe_url(element, value)
    return value


_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags=set(DROPPED_WITH_CONTENT),
    attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
    attribute_filter=_attribute_filter,
    strip_comments=True,
    link_rel=LINK_REL,
    # "data" only so that ammonia lets data: images reach _attribute_filter,
    # which removes every other data: URL.
    url_schemes=set(URL_SCHEMES | {"data"}),
)


def clean_html(markup: str) -> str:
    """The markup with only allow-listed tags, attributes and URLs left."""
    return _CLEANER.clean(markup)


# ---------------------------------------------------------------------------
# Plain text

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
