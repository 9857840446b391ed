"""Bearer tokens of the API (COMM_API_TOKEN, COMM_API_TOKENS_FILE).

A request is let in when its ``Authorization: Bearer <token>`` matches one of the
configured tokens. The presented token is compared with every configured one, each
time in constant time (``hmac.compare_digest`` on SHA-256 digests, so neither the
position of a difference nor a token's length shows in the time taken). A refusal
says nothing about why: no token, a malformed header and a wrong token all get the
same 401.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr

SCHEME = "bearer"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class Tokens:
    """The tokens the API accepts (only their digests are kept)."""

    def __init__(self, tokens: Sequence[SecretStr]) -> None:
        self._digests = tuple(_digest(token.get_secret_value()) for token in tokens)

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries an accepted token."""
        presented = bearer_token(authorization)
        if presented is None:
            return False
        digest = _digest(presented)
        accepted = False
        for known in self._digests:  # every one, whichever matches
            accepted |= hmac.compare_digest(digest, known)
        return accepted


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Bearer <token>`` (the scheme in any case, RFC 9110 §11.1), or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != SCHEME or not token or " " in token:
        return None
    return token
