"""Everything the service keeps about one therapist between events.

One aggregate per therapist, so that each event changes it in one step: the
directory entry, the requests waiting for the next batch, the emails decided but
not yet confirmed sent, the send history the weekly rule is computed from, and
what is needed to recognise replays. The stream edge stores it in a changelogged
table keyed by therapist; a crash between two writes cannot leave half an event
applied.

Every handler is idempotent: an event seen before (same ``event_id``) changes
nothing, and a replayed effect (a request already known, an email already
recorded) is recognised by its natural key as well, because after a crash the
table may already contain the effect of an event that is delivered again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from domain import batching, contact_limit
from domain.decisions import (
    CONFIRMATION,
    CONTACT_REQUEST,
    FOLLOW_UP,
    MANUAL,
    BookCall,
    Decision,
    DropRequest,
    KeepRequestDetails,
    LiftSuppression,
    ManualEmailContent,
    RejectCommand,
    SendEmail,
    SendManualEmail,
    SettleEmailedRequest,
    SuppressAddress,
    SyncDirectory,
)
from domain.placement import ACCEPTED, CLOSING_STATUSES, PlacementRequest
from domain.therapist import TherapistProfile

# What happened to a request that is no longer pending.
EMAILED = "emailed"
DROPPED = "dropped"
CONFIRMED = "confirmed"
CLOSED = "closed"  # closed by the matching service after it was emailed
REFUSED = "refused"  # dropped because the therapist could not be contacted; may come again
CALLED = "called"  # handed to a phone call because the therapist's address is suppressed

CREATE_EMAIL = "communication.create_email"
LIFT_EMAIL_SUPPRESSION = "communication.lift_email_suppression"

# Reasons given with ``placement_dropped``.
THERAPIST_DELETED = "therapist_deleted"
CONTACT_BLOCKED = "contact_blocked"

# Why a suppression ended (``email_suppression_lifted``), and why a call is booked.
ADDRESS_CHANGED = "address_changed"
LIFTED_BY_STAFF = "lifted_by_staff"
UNDELIVERABLE = "undeliverable"


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


@dataclass
class TherapistState:
    therapist_id: int
    profile: TherapistProfile | None = None
    # occurred_at of the last directory event applied; older ones are stale.
    profile_as_of: datetime | None = None
    deleted: bool = False
    pending: dict[int, PlacementRequest] = field(default_factory=dict)
    in_flight: dict[str, InFlightEmail] = field(default_factory=dict)
    # Send times of contact-limited emails still inside the window (sliding).
    contact_sent_at: list[datetime] = field(default_factory=list)
    # request id -> (EMAILED | DROPPED | CONFIRMED, when): recognises replays.
    settled: dict[int, tuple[str, datetime]] = field(default_factory=dict)
    # event_id -> when first seen.
    seen_events: dict[str, datetime] = field(default_factory=dict)
    # Acceptances that arrived before the therapist did, or while the address is
    # suppressed; confirmed once the therapist (or a reachable address) arrives.
    awaiting_confirmation: dict[int, PlacementRequest] = field(default_factory=dict)
    suppression: Suppression | None = None

    def copy(self) -> TherapistState:
        """An independent copy to apply an event to, so the stored value only
        changes when the edge writes the result back."""
        return TherapistState(
            therapist_id=self.therapist_id,
            profile=self.profile,
            profile_as_of=self.profile_as_of,
            deleted=self.deleted,
            pending=dict(self.pending),
            in_flight=dict(self.in_flight),
            contact_sent_at=list(self.contact_sent_at),
            settled=dict(self.settled),
            seen_events=dict(self.seen_events),
            awaiting_confirmation=dict(self.awaiting_confirmation),
            suppression=self.suppression,
        )

    def memory_size(self) -> int:
        """How many replay records are kept (pruned when it grows)."""
        return len(self.seen_events) + len(self.settled)

    # -- directory ---------------------------------------------------------

    def therapist_upserted(
        self,
        event_id: str,
        occurred_at: datetime,
        profile: TherapistProfile,
        now: datetime,
        keep_availability: bool = False,
    ) -> list[Decision]:
        """``keep_availability``: the event's availability was refused (invalid), the
        rest of it applies and the previous availability stays."""
        if self._replayed(event_id, now) or self._stale(occurred_at):
            return []
        if keep_availability:
            previous = self.profile.availability if self.profile is not None else {}
            profile = replace(profile, availability=previous)
        self.profile = profile
        self.profile_as_of = self._as_of(occurred_at, now)
        self.deleted = False
        decisions: list[Decision] = [SyncDirectory(profile, deleted=False)]
        if self.suppression is not None and not same_address(profile.email, self.suppression.address):
            decisions.append(self._lift(ADDRESS_CHANGED, event_id))
        decisions.extend(self._release_confirmations(now))
        if profile.contact_blocked:
            decisions.extend(self._drop_all_pending(CONTACT_BLOCKED, now))
        return decisions

    def therapist_deleted(self, event_id: str, occurred_at: datetime, now: datetime) -> list[Decision]:
        if self._replayed(event_id, now) or self._stale(occurred_at):
            return []
        self.deleted = True
        self.profile_as_of = self._as_of(occurred_at, now)
        return [SyncDirectory(None, deleted=True), *self._drop_all_pending(THERAPIST_DELETED, now)]

    # -- placement requests --------------------------------------------------

    def match_created(self, event_id: str, request: PlacementRequest, now: datetime) -> list[Decision]:
        request_id = request.placement_request_id
        if request_id in self.pending:
            # A replay (or the same request proposed again): its details are kept
            # again, idempotently. The edge does not wait for the broker to take them
            # before it writes the table, so a crash in between is repaired here.
            self._replayed(event_id, now)
            return [KeepRequestDetails(request)] if request.patient else []
        if self._replayed(event_id, now):
            return []
        earlier = self.settled.get(request_id, (None,))[0]
        if earlier not in (None, REFUSED):
            return []
        # New, or proposed again after the therapist could not be contacted.
        self.settled.pop(request_id, None)
        refusal = self._refusal_reason()
        if refusal is not None:
            self.settled[request_id] = (REFUSED, now)
            return [DropRequest(request_id, request.patient_id, refusal)]
        # The table keeps ids and times only; the patient's details are kept downstream.
        self.pending[request_id] = replace(request, patient={})
        return [KeepRequestDetails(request)] if request.patient else []

    def match_status_changed(
        self, event_id: str, request_id: int, patient_id: int, new_status: str, now: datetime
    ) -> list[Decision]:
        if self._replayed(event_id, now):
            return []
        settled = self.settled.get(request_id, (None, now))[0]
        if new_status in CLOSING_STATUSES:
            if request_id in self.pending:
                del self.pending[request_id]
                self.settled[request_id] = (DROPPED, now)
                return [DropRequest(request_id, patient_id, new_status)]
            if settled in (EMAILED, CONFIRMED, CLOSED, CALLED):
                if settled in (EMAILED, CALLED):
                    self.settled[request_id] = (CLOSED, now)
                return [SettleEmailedRequest(request_id, patient_id, new_status)]
            if settled is None:
                # Closed before it arrived: remember, so a late match.created is ignored.
                self.settled[request_id] = (DROPPED, now)
            return []
        if new_status == ACCEPTED:
            return self._accepted(event_id, request_id, patient_id, settled, now)
        if request_id in self.pending:
            request = self.pending[request_id]
            self.pending[request_id] = PlacementRequest(
                request.placement_request_id,
                request.patient_id,
                request.registered_at,
                request.patient,
                new_status,
            )
            return []
        if settled in (EMAILED, CONFIRMED, CLOSED, CALLED):
            return [SettleEmailedRequest(request_id, patient_id, new_status)]
        return []

    def _accepted(
        self, event_id: str, request_id: int, patient_id: int, settled: str | None, now: datetime
    ) -> list[Decision]:
        if settled == CONFIRMED or self.deleted:
            return []
        decisions: list[Decision] = []
        request = self.pending.pop(request_id, None)
        if request is not None:
            decisions.append(DropRequest(request_id, patient_id, ACCEPTED))
        elif settled in (EMAILED, CALLED):
            decisions.append(SettleEmailedRequest(request_id, patient_id, ACCEPTED))
        self.settled[request_id] = (CONFIRMED, now)
        # Without patient details here, downstream fills them in (from the details
        # it keeps for waiting requests, or from the email the request went out in).
        confirmed = request or PlacementRequest(request_id, patient_id, now)
        if self.profile is None or self.suppression is not None:
            self.awaiting_confirmation[request_id] = confirmed
        else:
            decisions.append(self._confirmation(confirmed, now))
        return decisions

    def _release_confirmations(self, now: datetime) -> list[Decision]:
        """Confirmations held back (therapist unknown, address suppressed) go out now."""
        if self.profile is None or self.suppression is not None:
            return []
        released: list[Decision] = [self._confirmation(r, now) for r in self.awaiting_confirmation.values()]
        self.awaiting_confirmation.clear()
        return released

    def _confirmation(self, request: PlacementRequest, now: datetime) -> SendEmail:
        assert self.profile is not None
        key = batching.derived_key(CONFIRMATION, self.therapist_id, request.placement_request_id)
        return SendEmail(key, CONFIRMATION, CONFIRMATION, self.profile, (request,), now)

    # -- commands ----------------------------------------------------------------

    def manual_email(self, command_id: str, content: ManualEmailContent, now: datetime) -> list[Decision]:
        """``communication.create_email``: an email a person wrote or chose.

        One that is queued and respects the contact limit counts as this therapist's
        email of the week: it holds the window like a contact email (and waits for
        it downstream); one that does not respect it goes at once and counts not.
        """
        if self._replayed(command_id, now):
            return []
        refusal = self._command_refusal(bool(content.recipient_email))
        if refusal is not None:
            return [RejectCommand(command_id, CREATE_EMAIL, refusal)]
        request_ids = content.placement_request_ids
        waiting = tuple(self.pending[r] for r in request_ids if r in self.pending)
        key = batching.derived_key(MANUAL, command_id)
        queue = content.queue
        limited = queue and content.respect_contact_limit
        if limited:
            self.in_flight[key] = InFlightEmail(key, MANUAL, request_ids, now, limited=True)
        return [SendManualEmail(key, command_id, self.profile, content, waiting, queue, limited, now)]

    def _command_refusal(self, has_recipient: bool) -> str | None:
        if self.suppression is not None and not has_recipient:
            return (
                f"email to therapist {self.therapist_id} is suppressed: their address could not be reached "
                "(a permanent recipient failure); send therapist.updated with a new address, "
                "communication.lift_email_suppression, or give recipient_email"
            )
        if self.deleted:
            return f"therapist {self.therapist_id} was deleted: no further contact"
        if self.profile is not None and self.profile.contact_blocked:
            return f"therapist {self.therapist_id} is blocked for contact (contact_blocked)"
        if self.profile is None and not has_recipient:
            return f"therapist {self.therapist_id} is not known here yet; give recipient_email to write anyway"
        return None

    def follow_up_email(
        self,
        email_key: str,
        requests: tuple[PlacementRequest, ...],
        original_sent_at: datetime | None,
        now: datetime,
    ) -> list[Decision]:
        """A sent email's requests are still open and there is no phone availability:
        a follow-up email, which counts toward (and waits for) the weekly limit."""
        if self._replayed(email_key, now) or self.profile is None or self._refusal_reason() is not None:
            return []
        if not requests or self.suppression is not None:
            # Suppressed: only a therapist without phone hours gets a follow-up email,
            # and their address cannot be reached; the requests stay with the email.
            return []
        self.in_flight[email_key] = InFlightEmail(
            email_key, FOLLOW_UP, tuple(r.placement_request_id for r in requests), now, limited=True
        )
        context = {"original_sent_at": original_sent_at.isoformat()} if original_sent_at else {}
        return [SendEmail(email_key, FOLLOW_UP, FOLLOW_UP, self.profile, requests, now, context)]

    # -- batch runs ------------------------------------------------------------

    def plan_contact_email(self, run_at: datetime, interval: timedelta) -> SendEmail | None:
        """At a batch run: one email with every waiting request, if the limit allows."""
        if not self.pending or self.profile is None or self._refusal_reason() is not None:
            return None
        if self.suppression is not None or not self.may_contact(run_at, interval):
            return None
        requests = batching.batch_requests(self.pending.values())
        key = batching.contact_email_key(self.therapist_id, run_at)
        decision = SendEmail(
            key,
            CONTACT_REQUEST,
            batching.contact_template(len(requests)),
            self.profile,
            requests,
            run_at,
        )
        for request in requests:
            self.settled[request.placement_request_id] = (EMAILED, run_at)
        self.pending.clear()
        self.in_flight[key] = InFlightEmail(
            key, CONTACT_REQUEST, tuple(r.placement_request_id for r in requests), run_at
        )
        return decision

    def plan_phone_call(self, call_key: str, now: datetime) -> BookCall | None:
        """The address is suppressed and the therapist has phone hours: the waiting
        requests go to a phone call instead of waiting for an email that cannot
        arrive. ``call_key`` is stable for the decision, so a replay books nothing new."""
        if self.suppression is None or not self.pending or self.profile is None:
            return None
        if not self.profile.availability or self._refusal_reason() is not None:
            return None
        requests = batching.batch_requests(self.pending.values())
        for request in requests:
            self.settled[request.placement_request_id] = (CALLED, now)
        self.pending.clear()
        return BookCall(call_key, requests, UNDELIVERABLE, now)

    def may_contact(self, now: datetime, interval: timedelta) -> bool:
        """No limited email in flight and none sent within the window."""
        if any(email.limited for email in self.in_flight.values()):
            return False
        return contact_limit.may_contact(self.contact_sent_at, now, interval)

    # -- delivery feedback -------------------------------------------------------

    def email_sent(self, email_key: str, limited: bool, sent_at: datetime, interval: timedelta) -> None:
        self.in_flight.pop(email_key, None)
        if limited and sent_at not in self.contact_sent_at:
            self.contact_sent_at = list(
                contact_limit.sliding_window([*self.contact_sent_at, sent_at], sent_at, interval)
            )

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
        if self._refusal_reason() is not None:
            return []
        for request in returned:
            request_id = request.placement_request_id
            if self.settled.get(request_id, (None,))[0] == EMAILED:
                del self.settled[request_id]
                self.pending[request_id] = replace(request, patient={})
        if undeliverable is None or self.profile is None or self.suppression is not None:
            return []
        if not same_address(self.profile.email, undeliverable.address):
            return []  # the address changed meanwhile: the next email goes to the new one
        if now is None:
            raise ValueError("now is needed to record a suppression")  # the domain reads no clock
        when = now
        self.suppression = Suppression(undeliverable.address, undeliverable.reason, undeliverable.email_id, when)
        decisions: list[Decision] = [
            SuppressAddress(undeliverable.address, undeliverable.reason, undeliverable.email_id, email_key)
        ]
        call = self.plan_phone_call(batching.derived_key("undeliverable_call", email_key), when)
        if call is not None:
            decisions.append(call)
        return decisions

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
        return [self._lift(LIFTED_BY_STAFF, command_id, comment), *self._release_confirmations(now)]

    def _lift(self, reason: str, causation_id: str, comment: str | None = None) -> LiftSuppression:
        assert self.suppression is not None
        address = self.suppression.address
        self.suppression = None
        return LiftSuppression(address, reason, causation_id, comment)

    # -- housekeeping ------------------------------------------------------------

    def forget_before(self, horizon: datetime, now: datetime, interval: timedelta) -> None:
        """Drop replay memory older than ``horizon`` and send times outside the window."""
        self.seen_events = {k: t for k, t in self.seen_events.items() if t >= horizon}
        self.settled = {k: v for k, v in self.settled.items() if v[1] >= horizon}
        self.contact_sent_at = list(contact_limit.sliding_window(self.contact_sent_at, now, interval))

    def _replayed(self, event_id: str, now: datetime) -> bool:
        if event_id in self.seen_events:
            return True
        self.seen_events[event_id] = now
        return False

    @staticmethod
    def _as_of(occurred_at: datetime, now: datetime) -> datetime:
        """What a directory event's time is remembered as: never later than the
        service's clock, so that an event from a producer whose clock runs ahead
        cannot make the correct ones after it look stale (the order Kafka keeps per
        therapist decides; the time only recognises old replays)."""
        return min(occurred_at.astimezone(UTC), now.astimezone(UTC))

    def _stale(self, occurred_at: datetime) -> bool:
        return self.profile_as_of is not None and occurred_at.astimezone(UTC) < self.profile_as_of.astimezone(UTC)

    def _refusal_reason(self) -> str | None:
        if self.deleted:
            return THERAPIST_DELETED
        if self.profile is not None and self.profile.contact_blocked:
            return CONTACT_BLOCKED
        return None

    def _drop_all_pending(self, reason: str, now: datetime) -> list[Decision]:
        drops: list[Decision] = [
            DropRequest(r.placement_request_id, r.patient_id, reason)
            for r in batching.batch_requests(self.pending.values())
        ]
        for request_id in self.pending:
            self.settled[request_id] = (REFUSED, now)
        self.pending.clear()
        return drops
