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

The rules of reaching the therapist (delivery failures, bounces, suppression, the
contact preference, calls instead of email) are in domain.therapist_reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from domain import batching, bounces, contact_limit
from domain.bounces import SoftBounces
from domain.decisions import (
    CONFIRMATION,
    CONTACT_REQUEST,
    FOLLOW_UP,
    MANUAL,
    Decision,
    DropRequest,
    KeepRequestDetails,
    ManualEmailContent,
    RejectCommand,
    SendEmail,
    SendManualEmail,
    SettleEmailedRequest,
    SyncDirectory,
)
from domain.placement import ACCEPTED, CLOSING_STATUSES, PlacementRequest
from domain.therapist import TherapistProfile

# Defined with the rules of reaching the therapist; named here as they always were.
from domain.therapist_reach import ADDRESS_CHANGED as ADDRESS_CHANGED
from domain.therapist_reach import CALLED as CALLED
from domain.therapist_reach import CONTACT_BLOCKED as CONTACT_BLOCKED
from domain.therapist_reach import EMAIL as EMAIL
from domain.therapist_reach import EMAILED as EMAILED
from domain.therapist_reach import LIFT_EMAIL_SUPPRESSION as LIFT_EMAIL_SUPPRESSION
from domain.therapist_reach import LIFTED_BY_STAFF as LIFTED_BY_STAFF
from domain.therapist_reach import PHONE_ONLY as PHONE_ONLY
from domain.therapist_reach import THERAPIST_DELETED as THERAPIST_DELETED
from domain.therapist_reach import UNDELIVERABLE as UNDELIVERABLE
from domain.therapist_reach import InFlightEmail as InFlightEmail
from domain.therapist_reach import Reach
from domain.therapist_reach import Suppression as Suppression
from domain.therapist_reach import Undeliverable as Undeliverable
from domain.therapist_reach import same_address as same_address

# What happened to a request that is no longer pending (and EMAILED, CALLED).
DROPPED = "dropped"
CONFIRMED = "confirmed"
CLOSED = "closed"  # closed by the matching service after it was emailed
REFUSED = "refused"  # dropped because the therapist could not be contacted; may come again

CREATE_EMAIL = "communication.create_email"


@dataclass
class TherapistState(Reach):
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
    contact_channel: str = EMAIL
    # Soft-bounced emails in a row to one address (domain.bounces).
    soft_bounces: SoftBounces | None = None

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
            contact_channel=self.contact_channel,
            soft_bounces=self.soft_bounces,
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
            # again, idempotently, in case they never reached the database.
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
        """A sent email's requests are still open and no call could be booked (no
        phone hours, or no free slot): a follow-up email, which counts toward (and
        waits for) the weekly limit. Not for a therapist who is not emailed
        (``phone_reason``): with phone hours the requests wait for a call at the next
        batch run; without, they stay with the email and nothing goes."""
        if self._replayed(email_key, now) or self.profile is None or self._refusal_reason() is not None:
            return []
        if not requests:
            return []
        if self.phone_reason is not None:
            if self.profile.availability:
                self._take_back(requests)
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
        if self.phone_reason is not None or not self.may_contact(run_at, interval):
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

    def may_contact(self, now: datetime, interval: timedelta) -> bool:
        """No limited email in flight and none sent within the window."""
        if any(email.limited for email in self.in_flight.values()):
            return False
        return contact_limit.may_contact(self.contact_sent_at, now, interval)

    # -- delivery feedback (failures and bounces: domain.therapist_reach) -------

    def email_sent(self, email_key: str, limited: bool, sent_at: datetime, interval: timedelta) -> None:
        self.in_flight.pop(email_key, None)
        self.soft_bounces = bounces.sent(self.soft_bounces, sent_at)
        if limited and sent_at not in self.contact_sent_at:
            self.contact_sent_at = list(
                contact_limit.sliding_window([*self.contact_sent_at, sent_at], sent_at, interval)
            )

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

    def _drop_all_pending(self, reason: str, now: datetime) -> list[Decision]:
        drops: list[Decision] = [
            DropRequest(r.placement_request_id, r.patient_id, reason)
            for r in batching.batch_requests(self.pending.values())
        ]
        for request_id in self.pending:
            self.settled[request_id] = (REFUSED, now)
        self.pending.clear()
        return drops
