"""Settings of deliverability (issue 17) and data protection (issue 18), kept apart
from the rest of ``streams.settings`` and mixed into ``Settings``: what reaches a
therapist's mailbox, how fast, when, with which opt-out and tracking, and how long
patient data is kept.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    EmailStr,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from domain.durations import parse_duration
from domain.rate_limit import Rate, parse_rate
from domain.send_window import SendWindow, parse_send_window

# A signing secret nobody guesses: long enough for HMAC-SHA256 to be the weak point.
MIN_SECRET_LENGTH = 32


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
# Zero would make no sense (a zero-length slot, lease or interval, a busy loop).
Positive = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_positive)]


def _rate(value: Any) -> Any:
    return parse_rate(value) if isinstance(value, str) else value


def _window(value: Any) -> Any:
    return parse_send_window(value) if isinstance(value, str) else value


def _public_url(value: str, placeholder: bool) -> str:
    parsed = urlsplit(value.replace("{token}", "TOKEN"))
    try:
        valid = parsed.scheme in ("http", "https") and bool(parsed.hostname) and parsed.port != 0
    except ValueError:
        valid = False
    if not valid or "@" in parsed.netloc:
        raise ValueError("not an http(s) URL with a host, as recipients reach it")
    if placeholder and value.count("{token}") != 1:
        raise ValueError("needs exactly one {token} placeholder, e.g. https://example.org/unsubscribe/{token}")
    return value


class MailSettings(BaseModel):
    """Deliverability and data-protection settings (see docs/deliverability.md and
    docs/data-protection.md)."""

    # The provider's send rate for the service as a whole (all workers and delivery
    # processes share it through the database); unset: no limit.
    smtp_rate_limit: Annotated[Rate | None, BeforeValidator(_rate)] = Field(None, alias="COMM_SMTP_RATE_LIMIT")
    # When contact and follow-up emails may go, in each therapist's time zone; unset: always.
    send_window: Annotated[SendWindow | None, BeforeValidator(_window)] = Field(None, alias="COMM_SEND_WINDOW")
    send_window_confirmations: bool = Field(False, alias="COMM_SEND_WINDOW_CONFIRMATIONS")
    # Soft bounces in a row that suppress an address.
    soft_bounce_limit: int = Field(3, alias="COMM_SOFT_BOUNCE_LIMIT", ge=1)
    # One-click opt-out (RFC 8058): where the link leads, with a {token} placeholder.
    unsubscribe_url: str | None = Field(None, alias="COMM_UNSUBSCRIBE_URL")
    unsubscribe_mailto: EmailStr | None = Field(None, alias="COMM_UNSUBSCRIBE_MAILTO")
    unsubscribe_secret: SecretStr | None = Field(None, alias="COMM_UNSUBSCRIBE_SECRET")
    # Opt-in engagement tracking, served by the worker's web server under the public URL.
    track_opens: bool = Field(False, alias="COMM_TRACK_OPENS")
    track_clicks: bool = Field(False, alias="COMM_TRACK_CLICKS")
    public_base_url: str | None = Field(None, alias="COMM_PUBLIC_BASE_URL")
    tracking_secret: SecretStr | None = Field(None, alias="COMM_TRACKING_SECRET")
    # Data protection: email bodies, batch-entry details and call notes older than
    # this are redacted; the DLQ topic keeps records this long (when the service creates it).
    content_retention: Positive = Field(timedelta(days=180), alias="COMM_CONTENT_RETENTION")
    dlq_retention: Positive = Field(timedelta(days=30), alias="COMM_DLQ_RETENTION")

    @field_validator("unsubscribe_url")
    @classmethod
    def _unsubscribe_url(cls, value: str | None) -> str | None:
        return None if value is None else _public_url(value, placeholder=True)

    @field_validator("public_base_url")
    @classmethod
    def _public_base_url(cls, value: str | None) -> str | None:
        return None if value is None else _public_url(value, placeholder=False).rstrip("/")

    @model_validator(mode="after")
    def _mail(self) -> MailSettings:
        problems = []
        if self.unsubscribe_url is not None:
            problems.extend(
                _secret_problems("COMM_UNSUBSCRIBE_SECRET", self.unsubscribe_secret, "COMM_UNSUBSCRIBE_URL")
            )
        elif self.unsubscribe_mailto is not None:
            problems.append("COMM_UNSUBSCRIBE_MAILTO: needs COMM_UNSUBSCRIBE_URL (the one-click link is required)")
        if self.track_opens or self.track_clicks:
            if self.public_base_url is None:
                problems.append("COMM_PUBLIC_BASE_URL: required with COMM_TRACK_OPENS or COMM_TRACK_CLICKS")
            problems.extend(
                _secret_problems("COMM_TRACKING_SECRET", self.tracking_secret, "COMM_TRACK_OPENS or COMM_TRACK_CLICKS")
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def tracking(self) -> bool:
        return self.track_opens or self.track_clicks


def _secret_problems(name: str, secret: SecretStr | None, needed_by: str) -> list[str]:
    if secret is None:
        return [f"{name}: required with {needed_by} (or {name}_FILE)"]
    if len(secret.get_secret_value()) < MIN_SECRET_LENGTH:
        return [f"{name}: must be at least {MIN_SECRET_LENGTH} characters long"]
    return []
