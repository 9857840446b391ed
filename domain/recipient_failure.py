"""Which permanent SMTP failures mean "this address cannot be reached" (issue 12).

Such a failure suppresses email to the address: mailing it again would bounce again
and harm the sender's reputation. A permanent failure of the message itself (too
large, content refused: 552, 554 5.6.x/5.7.x) fails that one email and suppresses
nothing. The enhanced status code (RFC 3463) decides where the server gives one; a
bare reply code only at the RCPT stage, where 550/551/553 are about the mailbox.
"""

from __future__ import annotations

import re

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# X.1.7 and X.1.8 are about the sender's address, not the recipient's.
_SENDER_ADDRESS_DETAILS = frozenset({7, 8})
_RCPT_MAILBOX_CODES = frozenset({550, 551, 553})


def enhanced_status(text: str) -> tuple[int, int, int] | None:
    """The first RFC 3463 status code (``5.1.1``) in a server reply, if any."""
    match = _ENHANCED.search(text)
    if match is None:
        return None
    klass, subject, detail = (int(part) for part in match.groups())
    return klass, subject, detail


def concerns_recipient(code: int | None, text: str, *, at_rcpt: bool) -> bool:
    """A permanent failure that says the recipient's mailbox cannot be reached:
    addressing status 5.1.x (but not the sender's 5.1.7/5.1.8), disabled mailbox
    5.2.1, or at RCPT without an enhanced code a 550, 551 or 553 reply."""
    if code is not None and not 500 <= code < 600:
        return False
    status = enhanced_status(text)
    if status is not None:
        klass, subject, detail = status
        if klass != 5:
            return False
        return (subject == 1 and detail not in _SENDER_ADDRESS_DETAILS) or (subject, detail) == (2, 1)
    return at_rcpt and code in _RCPT_MAILBOX_CODES
