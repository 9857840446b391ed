from __future__ import annotations

import re

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
