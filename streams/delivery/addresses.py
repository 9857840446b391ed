"""Email addresses as SMTP carries them (issue 12): the domain in its IDNA form.

The input validation (``EmailStr``) accepts internationalised addresses and keeps
them in their Unicode form: ``praxis@müller.de`` (``praxis@xn--mller-kva.de`` is
normalised to it too). That form is what is stored and shown. On the wire the
domain goes as IDNA 2008 A-labels after UTS 46 mapping (``xn--mller-kva.de``),
which every SMTP server understands. A non-ASCII local part (``müller@praxis.de``)
has no ASCII form: only a server offering SMTPUTF8 (RFC 6531) takes it.
"""

from __future__ import annotations

import idna


class AddressError(ValueError):
    """An address that cannot be sent as it is; trying again cannot help.

    ``recipient``: it is the recipient's address (set by who knows which one it is).
    The message never contains the address itself.
    """

    def __init__(self, message: str, *, recipient: bool = False) -> None:
        super().__init__(message)
        self.recipient = recipient


def ascii_domain(domain: str) -> str:
    """``domain`` as SMTP carries it: unchanged when ASCII, else its IDNA A-labels
    (``müller.de`` -> ``xn--mller-kva.de``). Raises ``AddressError`` when it has none."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except UnicodeError as exc:  # idna.IDNAError is one
        raise AddressError("the domain has no IDNA (xn--) form") from exc


def smtp_address(address: str) -> str:
    """``local@domain`` with the domain as SMTP carries it; the local part as it is.

    Only a non-ASCII local part can leave the result non-ASCII (see ``needs_smtputf8``).
    """
    local, at, domain = address.rpartition("@")
    if not (at and local and domain):
        raise AddressError("not an address of the form local-part@domain")
    return f"{local}@{ascii_domain(domain)}"


def needs_smtputf8(address: str) -> bool:
    """Whether an address (as ``smtp_address`` gives it) can only be sent with SMTPUTF8."""
    return not address.isascii()
