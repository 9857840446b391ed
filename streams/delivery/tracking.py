"""Opt-in engagement tracking (COMM_TRACK_OPENS, COMM_TRACK_CLICKS): the signed
tokens, and the HTML part of an email as it goes out with them.

Applied when the message is built for sending (``streams.delivery.mime``), never
to what is stored: the database keeps the body as written, and the redirect looks
its target up there (``Tracking.link``), so a token can only ever lead to a link
that was in its email, whatever else it says.

- Opens: a 1x1 transparent GIF, ``<COMM_PUBLIC_BASE_URL>/t/o/<token>.gif``, just
  before ``</body>`` (or at the end).
- Clicks: each http(s) link of the HTML part goes through
  ``<COMM_PUBLIC_BASE_URL>/t/c/<token>``. A link's position counts the http(s) links
  (``<a href>``, first ``href`` of each) from 1 in the order of the HTML body;
  ``mailto:``, ``tel:`` and ``#`` links are neither counted nor changed, and neither
  is the one-click unsubscribe link (COMM_UNSUBSCRIBE_URL), which must work
  without us in between (RFC 8058) and is counted but never given a token.
- The plain-text part is left alone: no pixel can be in it, and its links stay
  as they are (a plain-text reader's clicks are not counted).

A token is the email id (and the link's position) with an HMAC-SHA256 over them
under COMM_TRACKING_SECRET, URL-safe base64: ``<email_id>.<mac>`` and
``<email_id>.<position>.<mac>``. Nothing else is in a URL: no address, no name.

The HTML is read with the standard library's ``html.parser`` (the parser behind
the text part, ``streams.email.html_text``) and only the start tags of the links
are written anew: everything else, comments (Outlook's conditional ones too) and
entities included, goes out byte for byte as it was written.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser
from urllib.parse import urlsplit

from streams.settings_mail import MailSettings

OPEN_PATH = "/t/o/"
CLICK_PATH = "/t/c/"
PIXEL_SUFFIX = ".gif"
# A 1x1 transparent GIF (43 bytes).
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
PIXEL_STYLE = "display:block;width:1px;height:1px;border:0;margin:0;padding:0;"

_ID = r"[1-9][0-9]{0,17}"
_MAC = r"[A-Za-z0-9_-]{43}"  # 32 bytes, base64url without padding
_OPEN_TOKEN = re.compile(rf"({_ID})\.({_MAC})")
_CLICK_TOKEN = re.compile(rf"({_ID})\.([1-9][0-9]{{0,5}})\.({_MAC})")
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))
_TRACKED_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class Tokens:
    """Signs and checks tracking tokens; a token that does not check out is None."""

    secret: bytes

    def open_token(self, email_id: int) -> str:
        return f"{email_id}.{self._mac(f'open:{email_id}')}"

    def click_token(self, email_id: int, position: int) -> str:
        return f"{email_id}.{position}.{self._mac(f'click:{email_id}:{position}')}"

    def opened(self, token: str) -> int | None:
        """The email id of an open token."""
        found = _OPEN_TOKEN.fullmatch(token)
        if found is None or not self._valid(f"open:{found[1]}", found[2]):
            return None
        return int(found[1])

    def clicked(self, token: str) -> tuple[int, int] | None:
        """The email id and link position of a click token."""
        found = _CLICK_TOKEN.fullmatch(token)
        if found is None or not self._valid(f"click:{found[1]}:{found[2]}", found[3]):
            return None
        return int(found[1]), int(found[2])

    def _mac(self, message: str) -> str:
        digest = hmac.new(self.secret, message.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def _valid(self, message: str, mac: str) -> bool:
        return hmac.compare_digest(self._mac(message), mac)


@dataclass(frozen=True)
class Link:
    position: int  # from 1, among the http(s) links of the HTML body
    url: str
    tracked: bool  # False for the one-click unsubscribe link


@dataclass(frozen=True)
class Tracking:
    """What the settings say about tracking, for delivery and for the web server."""

    base_url: str
    tokens: Tokens
    opens: bool
    clicks: bool
    # COMM_UNSUBSCRIBE_URL around its {token}: links that match are left alone.
    unsubscribe: tuple[str, str] | None = None

    @classmethod
    def from_settings(cls, settings: MailSettings) -> Tracking | None:
        """None unless a public URL and a secret are set. With both set and tracking
        off, emails go out untouched, but the links of those sent while it was on
        still lead where they did (``streams.api.tracking``)."""
        if settings.public_base_url is None or settings.tracking_secret is None:
            return None
        unsubscribe = None
        if settings.unsubscribe_url is not None:
            before, _, after = settings.unsubscribe_url.partition("{token}")
            unsubscribe = (before, after)
        return cls(
            base_url=settings.public_base_url.rstrip("/"),
            tokens=Tokens(settings.tracking_secret.get_secret_value().encode("utf-8")),
            opens=settings.track_opens,
            clicks=settings.track_clicks,
            unsubscribe=unsubscribe,
        )

    @property
    def on(self) -> bool:
        return self.opens or self.clicks

    def for_email(self, email_id: int) -> EmailTracking | None:
        """How the email ``email_id`` goes out; None when it goes out untouched."""
        return EmailTracking(self, email_id) if self.on else None

    def pixel_url(self, email_id: int) -> str:
        return f"{self.base_url}{OPEN_PATH}{self.tokens.open_token(email_id)}{PIXEL_SUFFIX}"

    def click_url(self, email_id: int, position: int) -> str:
        return f"{self.base_url}{CLICK_PATH}{self.tokens.click_token(email_id, position)}"

    def links(self, body_html: str) -> list[Link]:
        return [link for link, _ in self._anchors(_Scan(body_html))]

    def link(self, body_html: str, position: int) -> str | None:
        """The target of the link at ``position`` of a stored body, if it is tracked."""
        links = self.links(body_html)
        if not 1 <= position <= len(links) or not links[position - 1].tracked:
            return None
        return links[position - 1].url

    def html(self, email_id: int, body_html: str) -> str:
        """The HTML part as it is sent: links through the redirect, the image added."""
        scan = _Scan(body_html)
        edits: list[tuple[int, int, str]] = []  # (start, end, replacement), in order
        if self.clicks:
            for link, anchor in self._anchors(scan):
                if link.tracked:
                    edits.append((anchor.start, anchor.end, anchor.with_href(self.click_url(email_id, link.position))))
        if self.opens:
            at = len(body_html) if scan.body_end is None else scan.body_end
            image = f'<img src="{escape(self.pixel_url(email_id))}" width="1" height="1" alt="" style="{PIXEL_STYLE}">'
            edits.append((at, at, image))
        parts, done = [], 0
        for start, end, replacement in edits:
            parts += [body_html[done:start], replacement]
            done = end
        parts.append(body_html[done:])
        return "".join(parts)

    def _anchors(self, scan: _Scan) -> list[tuple[Link, _Anchor]]:
        found: list[tuple[Link, _Anchor]] = []
        for anchor in scan.anchors:
            url = _link_target(anchor.href)
            if url is not None:
                found.append((Link(len(found) + 1, url, not self._is_unsubscribe(url)), anchor))
        return found

    def _is_unsubscribe(self, url: str) -> bool:
        if self.unsubscribe is None:
            return False
        before, after = self.unsubscribe
        return len(url) > len(before) + len(after) and url.startswith(before) and url.endswith(after)


@dataclass(frozen=True)
class EmailTracking:
    """The tracking of one email, as ``streams.delivery.mime.build_message`` applies it."""

    tracking: Tracking
    email_id: int

    def html(self, body_html: str) -> str:
        return self.tracking.html(self.email_id, body_html)


def _link_target(href: str | None) -> str | None:
    """An http(s) link as a browser reads it (controls and spaces around it, tabs
    and newlines in it dropped); None for any other link."""
    if href is None:
        return None
    url = re.sub(r"[\t\n\r]", "", href.strip(_C0_AND_SPACE))
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an invalid IPv6 host
        return None
    return url if parts.scheme.lower() in _TRACKED_SCHEMES and parts.netloc else None


@dataclass(frozen=True)
class _Anchor:
    """An ``<a>`` start tag: where it is in the source, and its attributes."""

    start: int
    end: int
    attrs: tuple[tuple[str, str | None], ...]
    self_closing: bool

    @property
    def href(self) -> str | None:
        return next((value for name, value in self.attrs if name == "href"), None)

    def with_href(self, url: str) -> str:
        """The tag written anew with ``url`` as its only ``href``."""
        parts = ["<a"]
        replaced = False
        for name, value in self.attrs:
            if name == "href":
                if replaced:
                    continue  # a browser reads the first; so does the redirect
                value, replaced = url, True
            parts.append(f" {name}" if value is None else f' {name}="{escape(value)}"')
        return "".join(parts) + ("/>" if self.self_closing else ">")


class _Scan(HTMLParser):
    """The ``<a>`` start tags of a document and where its ``</body>`` is."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        # getpos() counts lines and columns; these turn them into offsets.
        self._line_starts = [0, *(match.end() for match in re.finditer("\n", markup))]
        self.anchors: list[_Anchor] = []
        self.body_end: int | None = None
        self.feed(markup)
        self.close()

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def _anchor(self, attrs: list[tuple[str, str | None]], self_closing: bool) -> None:
        start = self._offset()
        raw = self.get_starttag_text() or ""
        self.anchors.append(_Anchor(start, start + len(raw), tuple(attrs), self_closing))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._anchor(attrs, self_closing=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._anchor(attrs, self_closing=True)

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._offset()
