"""What the therapist agent publishes for its decisions: output events (each its own
record, as the contract has them) and send commands for the sender agent, packed per
partition into bundles (streams.messages.bundles). ``flush`` sends the packed
commands and waits until the broker has acknowledged everything, so the caller can
then write the state that the decisions came from."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from domain import batching
from domain.decisions import (
    CONFIRMATION,
    AlertStaff,
    BookCall,
    Decision,
    DropRequest,
    ForgetRequestDetails,
    KeepRequestDetails,
    LiftSuppression,
    RejectCommand,
    ReportBounce,
    ReportContactPreference,
    SendEmail,
    SendManualEmail,
    SettleEmailedRequest,
    SuppressAddress,
    SyncDirectory,
)
from domain.placement import ACCEPTED
from streams.kafka.topics import Topics
from streams.messages import send_commands
from streams.messages.bundles import Entry, pack, partition_of
from streams.messages.codec import encode
from streams.messages.output_envelope import OutputPayload, encode_event
from streams.messages.outputs import (
    Alert,
    BounceRecorded,
    BounceType,
    CommandRejected,
    ContactChannel,
    ContactPreferenceChanged,
    DropReason,
    EmailSuppressed,
    EmailSuppressionLifted,
    LiftReason,
    PlacementDropped,
    PreferenceSource,
    Severity,
)


def address_hash(address: str) -> str:
    """Names an address in events without spelling it out."""
    return hashlib.sha256(address.strip().casefold().encode("utf-8")).hexdigest()


class Outbound:
    """The records of one unit of the therapist agent's work (an inbox record, or a
    batch run): use once, ``add`` then ``flush``."""

    def __init__(self, topics: Topics, partitions: int, clock: Callable[[], datetime]) -> None:
        self.topics = topics
        self.partitions = partitions
        self.clock = clock
        self._commands: list[Entry[None]] = []
        self._pending: list[Any] = []  # the events' acknowledgements

    def command(self, command: send_commands.SendCommand) -> None:
        therapist_id = command.therapist_id
        key = str(therapist_id).encode()
        self._commands.append(Entry(partition_of(therapist_id, self.partitions), key, encode(command), None))

    async def flush(self) -> None:
        """Send the commands (a record per partition, or a few if they are large) and
        wait for every record of this unit to be acknowledged."""
        for record in pack(self._commands):
            self._pending.append(
                await self.topics.send_commands.send(key=record.key, value=record.value, partition=record.partition)
            )
        self._commands.clear()
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)

    async def add(self, therapist_id: int, decisions: Sequence[Decision], causation: str | None) -> None:
        for decision in decisions:
            match decision:
                case SendEmail():
                    limited = decision.kind != CONFIRMATION
                    self.command(send_commands.SendEmail.decided(decision, causation, limited))
                case DropRequest():
                    await self._dropped(therapist_id, decision, causation)
                    if decision.reason != ACCEPTED:  # an accepted one's details serve its confirmation
                        self.command(send_commands.ForgetRequestDetails(therapist_id, (decision.placement_request_id,)))
                case KeepRequestDetails(request=request):
                    self.command(send_commands.RequestDetails(therapist_id, request))
                case BookCall():
                    self.command(send_commands.BookCall.decided(therapist_id, decision))
                case SuppressAddress():
                    suppressed = EmailSuppressed(
                        therapist_id=therapist_id,
                        address_hash=address_hash(decision.address),
                        reason=decision.reason,
                        email_id=decision.email_id,
                    )
                    await self._event(suppressed, batching.derived_key("email_suppressed", decision.email_key), None)
                case LiftSuppression():
                    lifted = EmailSuppressionLifted(
                        therapist_id=therapist_id,
                        address_hash=address_hash(decision.address),
                        reason=cast(LiftReason, decision.reason),
                        comment=decision.comment or None,
                    )
                    key = batching.derived_key("email_suppression_lifted", decision.causation_id)
                    await self._event(lifted, key, decision.causation_id)
                case ReportBounce():
                    recorded = BounceRecorded(
                        therapist_id=therapist_id,
                        email_id=decision.email_id,
                        type=cast(BounceType, decision.type),
                        soft_bounce_count=decision.soft_bounce_count,
                        suppressed=decision.suppressed,
                    )
                    key = batching.derived_key("bounce_recorded", decision.command_id)
                    await self._event(recorded, key, decision.command_id)
                case ReportContactPreference():
                    changed = ContactPreferenceChanged(
                        therapist_id=therapist_id,
                        channel=cast(ContactChannel, decision.channel),
                        source=cast(PreferenceSource, decision.source),
                        comment=decision.comment or None,
                    )
                    key = batching.derived_key("contact_preference_changed", decision.causation_id)
                    await self._event(changed, key, causation)
                case AlertStaff():
                    alert = Alert(
                        therapist_id=therapist_id,
                        severity=cast(Severity, decision.severity),
                        code=decision.code,
                        email_id=decision.email_id,
                        message=decision.message,
                    )
                    await self._event(alert, batching.derived_key("alert", decision.key), causation)
                case SendManualEmail():
                    self.command(send_commands.SendEmail.manual(therapist_id, decision))
                case SyncDirectory(profile=profile, deleted=deleted):
                    self.command(send_commands.DirectoryUpdate(therapist_id, profile, deleted))
                case RejectCommand():
                    await self._rejected(therapist_id, decision)
                case SettleEmailedRequest(placement_request_id=request_id, status=status):
                    self.command(send_commands.SettleRequest(therapist_id, request_id, status))
                case ForgetRequestDetails(placement_request_ids=request_ids):
                    self.command(send_commands.ForgetRequestDetails(therapist_id, request_ids))

    async def _event(self, payload: OutputPayload, event_id: str, causation: str | None) -> None:
        value = encode_event(payload, event_id=event_id, occurred_at=self.clock(), causation_id=causation)
        self._pending.append(await self.topics.events.send(key=str(payload.therapist_id).encode(), value=value))

    async def _rejected(self, therapist_id: int, rejection: RejectCommand) -> None:
        payload = CommandRejected(
            therapist_id=therapist_id,
            command_id=rejection.command_id,
            command_type=rejection.command_type,
            reason=rejection.reason,
        )
        key = batching.derived_key("command_rejected", rejection.command_id)
        await self._event(payload, key, rejection.command_id)

    async def _dropped(self, therapist_id: int, drop: DropRequest, causation: str | None) -> None:
        payload = PlacementDropped(
            therapist_id=therapist_id,
            placement_request_id=drop.placement_request_id,
            patient_id=drop.patient_id,
            reason=cast(DropReason, drop.reason),
        )
        key = batching.derived_key("placement_dropped", causation, drop.placement_request_id)
        await self._event(payload, key, causation)
