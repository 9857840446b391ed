"""Bundles of internal messages (streams.messages.bundles): packed per partition in
order, split below the size limit, a group of one sent as the single message it is,
and read back as the messages they hold."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.placement import PlacementRequest
from streams.messages import inbox, send_commands
from streams.messages.bundles import Bundle, Entry, pack, partition_of
from streams.messages.codec import UnknownMessage, encode, loads

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def match(request_id: int, therapist_id: int) -> inbox.MatchCreated:
    request = PlacementRequest(request_id, request_id + 1000, NOW, {"first_name": f"Pat{request_id}"})
    return inbox.MatchCreated(f"m-{request_id}", therapist_id, request)


def entry(message: inbox.MatchCreated, partitions: int = 4) -> Entry[int]:
    therapist = message.therapist_id
    return Entry(
        partition_of(therapist, partitions),
        str(therapist).encode(),
        encode(message),
        message.request.placement_request_id,
    )


def therapist_on(partition: int, partitions: int = 4, after: int = 0) -> int:
    return next(t for t in range(after + 1, 10_000) if partition_of(t, partitions) == partition)


def test_messages_of_one_partition_go_in_one_record_in_their_order() -> None:
    a, b = therapist_on(0), therapist_on(1)
    c = therapist_on(0, after=a)
    messages = [match(1, a), match(2, b), match(3, c), match(4, a)]
    records = pack([entry(m) for m in messages])

    assert [(r.partition, r.key, r.items) for r in records] == [(0, None, (1, 3, 4)), (1, b"%d" % b, (2,))]
    bundle = inbox.decode_record(records[0].value)
    assert isinstance(bundle, Bundle)
    assert bundle.messages == (messages[0], messages[2], messages[3])
    # A group of one is the single message, keyed by its therapist, as ever.
    assert records[1].value == encode(messages[1])
    assert inbox.decode_record(records[1].value) == messages[1]


def test_a_bundle_is_split_before_it_grows_past_the_limit_and_a_large_message_goes_alone() -> None:
    a = therapist_on(2)
    entries = [entry(match(n, a)) for n in range(1, 6)]
    one = len(entries[0].value) + 1
    records = pack(entries, max_bytes=2 * one)
    assert [r.items for r in records] == [(1, 2), (3, 4), (5,)]
    assert all(len(r.value) <= 2 * one + 40 for r in records)  # the envelope's few bytes beside them

    assert [r.items for r in pack(entries[:2], max_bytes=one // 2)] == [(1,), (2,)]


def test_a_bundle_reads_as_the_send_commands_it_holds() -> None:
    request = PlacementRequest(1, 1001, NOW, {"first_name": "Pat"})
    commands = [send_commands.RequestDetails(7, request), send_commands.SettleRequest(7, 1, "accepted")]
    [record] = pack([Entry(0, b"7", encode(c), None) for c in commands])
    assert send_commands.unpack(record.value) == tuple(commands)
    assert send_commands.unpack(encode(commands[0])) == (commands[0],)
    assert loads(record.value)["kind"] == "bundle"


def test_a_bundle_with_a_message_of_no_known_kind_is_not_read() -> None:
    with pytest.raises(UnknownMessage, match="unknown inbox message kind 'nonsense'"):
        inbox.decode_record(b'{"kind":"bundle","messages":[{"kind":"nonsense"}]}')
    with pytest.raises(UnknownMessage):
        send_commands.unpack(b'{"kind":"bundle","messages":[{"kind":"bundle","messages":[]}]}')
