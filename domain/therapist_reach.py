"""How email reaches a therapist, or does not, and what is done instead: emails in
flight and delivery failures, bounces that suppress an address, soft bounces
counted in a row, lifting a suppression, the therapist's contact preference (phone
only), and the phone calls that take the place of email.

A part of the therapist aggregate (domain.therapist_state.TherapistState, which
mixes ``Reach`` in), kept in a module of its own so that each stays readable. It
reads and changes only the aggregate's fields declared below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from domain import batching, bounces
from domain.bounces import Bounce, SoftBounces
from domain.decisions import (
    AlertStaff,
    BookCall,
    Decision,
    LiftSuppression,
    RejectCommand,
    ReportBounce,
    ReportContactPreference,
    SuppressAddress,
)
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile

# What happened to a request that is no longer pending (the others: therapist_state).
EMAILED = "emailed"
CALLED = "called"  # handed to a phone call: the address is suppressed, or phone only

# Reasons given with ``placement_dropped``.
THERAPIST_DELETED = "therapist_deleted"
CONTACT_BLOCKED = "contact_blocked"

LIFT_EMAIL_SUPPRESSION = "communication.lift_email_suppression"

# Why a suppression ended (``email_suppression_lifted``).
ADDRESS_CHANGED = "address_changed"
LIFTED_BY_STAFF = "lifted_by_staff"

# Why a call is booked instead of an email (``phone_call_scheduled.reason``).
UNDELIVERABLE = "undeliverable"
PHONE_ONLY = "phone_only"

# How the therapist is contacted about waiting requests (``contact_preference_changed``):
# EMAIL, or PHONE_ONLY: no contact or follow-up emails; confirmations and manual emails still go.
EMAIL = "email"


def same_address(a: str, b: str) -> bool:
    # The domain part is case-insensitive; local parts are in practice too.
    return a.strip().casefold() == b.strip().casefold()


@dataclass(frozen=True)
class Undeliverable:
    """Delivery's report that an email failed for good because its recipient's
    address cannot be reached (domain.recipient_failure)."""

    address: str
    reason: str
    email_id: int | None


@dataclass(frozen=True)
class Suppression:
    """No email goes to ``address`` while this holds."""

    address: str
    reason: str
    email_id: int | None
    since: datetime


@dataclass
class InFlightEmail:
    """An email decided here whose delivery has not been confirmed yet."""

    email_key: str
    kind: str
    placement_request_ids: tuple[int, ...]
    decided_at: datetime
    # Counts toward the weekly contact limit (contact requests, follow-ups and manual
    # emails that respect the limit); while it is in flight no other such email goes.
    limited: bool = True


class Reach:
    """Mixed into TherapistState: the rules of reaching the therapist."""

    # The aggregate's fields these rules use (TherapistState declares them all).
    therapist_id: int
    profile: TherapistProfile | None
    deleted: bool
    pending: dict[int, PlacementRequest]
    in_flight: dict[str, InFlightEmail]
    settled: dict[int, tuple[str, datetime]]
    suppression: Suppression | None
    contact_channel: str
    soft_bounces: SoftBounces | None

    def _replayed(self, event_id: str, now: datetime) -> bool:
        raise NotImplementedError  # the aggregate's replay memory

    def _release_confirmations(self, now: datetime) -> list[Decision]:
        raise NotImplementedError  # the aggregate's confirmations held back

    @property
    def phone_reason(self) -> str | None:
        """Why the waiting requests go to a phone call rather than an email, if they do:
        the therapist asked for phone only, or their address cannot be reached."""
        if self.contact_channel == PHONE_ONLY:
            return PHONE_ONLY
        return UNDELIVERABLE if self.suppression is not None else None

    def plan_phone_call(self, call_key: str, now: datetime) -> BookCall | None:
        """Email is not the way (``phone_reason``) and the therapist has phone hours:
        the waiting requests go to a phone call instead of waiting for an email.
        ``call_key`` is stable for the decision, so a replay books nothing new."""
        reason = self.phone_reason
        if reason is None or not self.pending or self.profile is None:
            return None
        if not self.profile.availability or self._refusal_reason() is not None:
            return None
        requests = batching.batch_requests(self.pending.values())
        for request in requests:
            self.settled[request.placement_request_id] = (CALLED, now)
        self.pending.clear()
        return BookCall(call_key, requests, reason, now)

    def email_failed(
        self,
        email_key: str,
        returned: tuple[PlacementRequest, ...] = (),
        undeliverable: Undeliverable | None = None,
        now: datetime | None = None,
    ) -> list[Decision]:
        """Failed for good: it no longer holds the window (it was never delivered),
        and the requests it carried (``returned``) wait for the next email, unless
        they were closed or confirmed meanwhile or the therapist is out of reach.

        ``undeliverable``: the address itself cannot be reached. If it is still the
        therapist's address, email to it is suppressed (once: the report of a second
        email to the same address changes nothing), and with phone hours the waiting
        requests go to a call at once."""
        self.in_flight.pop(email_key, None)
        if undeliverable is None:
            if self._refusal_reason() is None:
                self._take_back(returned)
            return []
        u = undeliverable
        return self._unreachable(returned, u.address, u.reason, u.email_id, email_key, now)

    def _take_back(self, returned: tuple[PlacementRequest, ...]) -> None:
        """Requests of an email that never reached the therapist wait again, unless
        they were closed, confirmed or called about meanwhile."""
        for request in returned:
            request_id = request.placement_request_id
            if self.settled.get(request_id, (None,))[0] == EMAILED:
                del self.settled[request_id]
                self.pending[request_id] = replace(request, patient={})

    def _unreachable(
        self,
        returned: tuple[PlacementRequest, ...],
        address: str,
        reason: str,
        email_id: int | None,
        decision_key: str,
        now: datetime | None,
    ) -> list[Decision]:
        """``address`` cannot be reached: the email's requests wait again and, if it
        is still the therapist's address, email to it is suppressed (once), and with
        phone hours the waiting requests go to a call at once."""
        if self._refusal_reason() is not None:
            return []
        self._take_back(returned)
        if self.profile is None or self.suppression is not None:
            return []
        if not same_address(self.profile.email, address):
            return []  # the address changed meanwhile: the next email goes to the new one
        if now is None:
            raise ValueError("now is needed to record a suppression")  # the domain reads no clock
        self.suppression = Suppression(address, reason, email_id, now)
        decisions: list[Decision] = [SuppressAddress(address, reason, email_id, decision_key)]
        call = self.plan_phone_call(batching.derived_key("undeliverable_call", decision_key), now)
        if call is not None:
            decisions.append(call)
        return decisions

    def bounce_recorded(
        self,
        command_id: str,
        bounce: Bounce,
        returned: tuple[PlacementRequest, ...],
        soft_limit: int,
        now: datetime,
    ) -> list[Decision]:
        """``communication.record_bounce`` for a sent email (reported once).

        A bounce of the therapist's current address that stops email to it (a hard
        bounce, a complaint, the soft-bounce limit reached) is handled as a permanent
        recipient failure: ``returned``, the email's requests, wait again or go to a
        call, and the address is suppressed. A bounce of an address the therapist no
        longer has is only recorded."""
        if self._replayed(command_id, now):
            return []
        if self.profile is None or not same_address(self.profile.email, bounce.address):
            return [ReportBounce(command_id, bounce.email_id, bounce.type, 0, suppressed=False)]
        row = self.soft_bounces
        if row is not None and not same_address(row.address, bounce.address):
            row = None
        if bounce.type == bounces.SOFT:
            row = self.soft_bounces = bounces.counted(row, bounce)
        count = 0 if row is None else row.count
        if not bounces.stops_email(bounce.type, count, soft_limit):
            return [ReportBounce(command_id, bounce.email_id, bounce.type, count, suppressed=False)]
        reason = bounces.suppression_reason(bounce, count)
        decisions = self._unreachable(returned, bounce.address, reason, bounce.email_id, command_id, now)
        suppressed = any(isinstance(d, SuppressAddress) for d in decisions)
        if suppressed:
            decisions.append(self._suppressed_alert(reason, bounce.email_id, command_id))
        return [ReportBounce(command_id, bounce.email_id, bounce.type, count, suppressed), *decisions]

    def _suppressed_alert(self, reason: str, email_id: int, key: str) -> AlertStaff:
        if self.profile is not None and self.profile.availability:
            outlook = "the waiting requests go to a phone call"
        else:
            outlook = (
                "the therapist has no phone hours, so the waiting requests wait until a therapist.updated "
                "brings a new address or staff send communication.lift_email_suppression"
            )
        message = f"email to therapist {self.therapist_id}'s address is suppressed: {reason}; {outlook}"
        return AlertStaff("email_undeliverable", "error", message, batching.derived_key("bounce_alert", key), email_id)

    def set_contact_preference(
        self,
        event_id: str,
        channel: str,
        source: str,
        comment: str | None,
        address: str | None,
        now: datetime,
    ) -> list[Decision]:
        """Staff (``communication.set_contact_preference``) or the therapist's one-click
        opt-out choose the channel. ``address``: the one the opt-out link was made
        for; once it is no longer the therapist's, the link changes nothing. Only an
        actual change is reported; phone only sends what waits to a call at once (or,
        without phone hours, staff are told that it waits)."""
        if self._replayed(event_id, now) or channel == self.contact_channel:
            return []
        if address is not None and (self.profile is None or not same_address(self.profile.email, address)):
            return []
        self.contact_channel = channel
        decisions: list[Decision] = [ReportContactPreference(channel, source, comment, event_id)]
        if channel != PHONE_ONLY or self._refusal_reason() is not None:
            return decisions
        if self.profile is None or not self.profile.availability:
            message = (
                f"therapist {self.therapist_id} is to be contacted by phone only but has no phone hours: "
                "their requests wait until a therapist.updated brings phone hours or staff set the "
                "contact preference back to email"
            )
            key = batching.derived_key("phone_only_alert", event_id)
            return [*decisions, AlertStaff("phone_only_without_hours", "warning", message, key)]
        call = self.plan_phone_call(batching.derived_key("phone_only_call", event_id), now)
        return decisions if call is None else [*decisions, call]

    def call_not_booked(self, requests: tuple[PlacementRequest, ...]) -> None:
        """No slot was free for the call: the requests wait for the next batch run."""
        for request in requests:
            request_id = request.placement_request_id
            if self.settled.get(request_id, (None,))[0] == CALLED:
                del self.settled[request_id]
                self.pending[request_id] = replace(request, patient={})

    def lift_suppression(self, command_id: str, comment: str | None, now: datetime) -> list[Decision]:
        """``communication.lift_email_suppression``: staff say the address works again."""
        if self._replayed(command_id, now):
            return []
        if self.suppression is None:
            return [
                RejectCommand(
                    command_id, LIFT_EMAIL_SUPPRESSION, f"email to therapist {self.therapist_id} is not suppressed"
                )
            ]
        # The address works again: soft bounces before this count no more.
        self.soft_bounces = None
        return [self._lift(LIFTED_BY_STAFF, command_id, comment), *self._release_confirmations(now)]

    def _lift(self, reason: str, causation_id: str, comment: str | None = None) -> LiftSuppression:
        assert self.suppression is not None
        address = self.suppression.address
        self.suppression = None
        return LiftSuppression(address, reason, causation_id, comment)

    def _refusal_reason(self) -> str | None:
        if self.deleted:
            return THERAPIST_DELETED
        if self.profile is not None and self.profile.contact_blocked:
            return CONTACT_BLOCKED
        return None
