"""One-click opt-out (RFC 8058): the token in a contact email's opt-out link, the
link itself, and the ``List-Unsubscribe`` headers that carry it.

A token is ``<therapist_id>.<mac>``: the MAC is HMAC-SHA256 (COMM_UNSUBSCRIBE_SECRET)
over the therapist id and the address the email went to, trimmed and case-folded,
in unpadded base64url. Without the secret nobody can make one, and a token stops
working when the therapist's address changes: the web page checks it against the
address in the directory now. The id is in the clear so the page knows whose
address to check; the address is not in the URL (it is personal data, and a URL
ends up in proxy logs and browser histories).

Only contact and follow-up emails carry the link: confirmations of an accepted
patient still go by email after an opt-out, and manual emails are written by staff.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field, replace
from urllib.parse import quote

from domain.decisions import CONTACT_REQUEST, FOLLOW_UP
from streams.delivery.mime import OutgoingEmail
from streams.settings_mail import MailSettings

OPT_OUT_KINDS = frozenset({CONTACT_REQUEST, FOLLOW_UP})
ONE_CLICK = "List-Unsubscribe=One-Click"

# Keeps these MACs apart from any other the same secret might ever sign.
_PURPOSE = b"commsvc one-click opt-out v1\n"
_MAC_CHARS = 43  # 32 bytes in unpadded base64url
_TOKEN = re.compile(rf"([1-9][0-9]{{0,17}})\.([A-Za-z0-9_-]{{{_MAC_CHARS}}})")


def normalised(address: str) -> str:
    """The address as the MAC covers it: ``Eva@Praxis.example `` is ``eva@praxis.example``."""
    return address.strip().casefold()


def _mac(secret: bytes, therapist_id: int, address: str) -> bytes:
    message = _PURPOSE + f"{therapist_id}\n{normalised(address)}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def make_token(secret: bytes, therapist_id: int, address: str) -> str:
    mac = base64.urlsafe_b64encode(_mac(secret, therapist_id, address)).rstrip(b"=").decode("ascii")
    return f"{therapist_id}.{mac}"


def therapist_of(token: str) -> int | None:
    """The therapist a well-formed token names (not yet verified), or None."""
    matched = _TOKEN.fullmatch(token)
    return int(matched.group(1)) if matched else None


def token_matches(secret: bytes, token: str, address: str) -> bool:
    """``token`` was made for its therapist and ``address`` (compared in constant time)."""
    therapist_id = therapist_of(token)
    if therapist_id is None:
        return False
    return hmac.compare_digest(token.encode("ascii"), make_token(secret, therapist_id, address).encode("ascii"))


@dataclass(frozen=True)
class OptOut:
    """The opt-out links of one configuration (COMM_UNSUBSCRIBE_*)."""

    url: str  # with a {token} placeholder
    secret: bytes = field(repr=False)
    mailto: str | None = None

    @classmethod
    def from_settings(cls, settings: MailSettings) -> OptOut | None:
        """None when COMM_UNSUBSCRIBE_URL is not set (the settings then refuse a mailto)."""
        if settings.unsubscribe_url is None or settings.unsubscribe_secret is None:
            return None
        secret = settings.unsubscribe_secret.get_secret_value().encode()
        mailto = None if settings.unsubscribe_mailto is None else str(settings.unsubscribe_mailto)
        return cls(settings.unsubscribe_url, secret, mailto)

    def token(self, therapist_id: int, address: str) -> str:
        return make_token(self.secret, therapist_id, address)

    def link(self, therapist_id: int, address: str) -> str:
        return self.url.replace("{token}", self.token(therapist_id, address))

    def verify(self, token: str, address: str) -> bool:
        return token_matches(self.secret, token, address)

    def headers(self, therapist_id: int, kind: str, address: str) -> tuple[tuple[str, str], ...]:
        """The RFC 8058 headers of an email of ``kind`` to ``address``; none for a
        kind without the opt-out link."""
        if kind not in OPT_OUT_KINDS or not address.strip():
            return ()
        token = self.token(therapist_id, address)
        targets = [f"<{self.url.replace('{token}', token)}>"]
        if self.mailto is not None:
            subject = quote(f"unsubscribe {token}", safe="")
            # RFC 6068: a non-ASCII address is percent-encoded (a header stays ASCII).
            targets.append(f"<mailto:{quote(self.mailto, safe='@')}?subject={subject}>")
        return (("List-Unsubscribe", ", ".join(targets)), ("List-Unsubscribe-Post", ONE_CLICK))


def opt_out_headers(opt_out: OptOut | None, therapist_id: int, kind: str, address: str) -> tuple[tuple[str, str], ...]:
    """What delivery adds to an email's headers (nothing when the opt-out is off)."""
    return () if opt_out is None else opt_out.headers(therapist_id, kind, address)


def with_opt_out(outgoing: OutgoingEmail, opt_out: OptOut | None, therapist_id: int, kind: str) -> OutgoingEmail:
    """``outgoing`` with the opt-out headers, as delivery sends it (computed at each
    send from the therapist and the address the email goes to)."""
    headers = opt_out_headers(opt_out, therapist_id, kind, outgoing.recipient_email)
    return replace(outgoing, headers=(*outgoing.headers, *headers)) if headers else outgoing
