"""Batch runs a slice at a time (streams.agents.batch_runs): the inbox messages that
arrive during a run go in between its slices, so an acceptance's confirmation
overtakes the run's contact emails; the run keeps its order, sends one
continuation tick at a time, and a restart in the middle sends nobody a second
email."""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.therapist_state import TherapistState
from streams.agents.therapist import TherapistAgent
from streams.agents.ticks import bookmark_key, partition_of
from streams.messages import inbox, send_commands
from streams.messages.codec import encode
from streams.settings import Settings
from tests.fakes import FakeClock, Record, RecordStream, recording_topics, sent
from tests.unit.test_therapist_agent import MONDAY, PARTITIONS, match, therapist_on, upserted

INBOX = "svc-therapist-inbox"
SLICE = 2
SETTINGS = Settings.from_environ(
    {"COMM_PARTITIONS": str(PARTITIONS), "COMM_BATCH_SCHEDULE": "0 9 * * *", "COMM_BATCH_RUN_SLICE": str(SLICE)}
)
RUN = MONDAY.replace(hour=9, minute=1)
# Five therapists of partition 1; the later in this list, the longer they waited.
THERAPISTS = [therapist_on(1)]
for _ in range(4):
    THERAPISTS.append(therapist_on(1, after=THERAPISTS[-1]))
PARTITION = partition_of(THERAPISTS[0], PARTITIONS)
LONGEST_WAITING_FIRST = list(reversed(THERAPISTS))


def ready_agent(table: dict[object, object] | None = None) -> TherapistAgent:
    """Every therapist known with one request waiting, the partition's bookmark set."""
    clock = FakeClock(MONDAY)
    agent = TherapistAgent(SETTINGS, recording_topics(), {} if table is None else table, clock)  # type: ignore[arg-type]
    return agent


async def setup(agent: TherapistAgent) -> None:
    await agent.handle(inbox.Tick(MONDAY), PARTITION)  # the first tick sets the bookmark
    for n, therapist_id in enumerate(THERAPISTS):
        await agent.handle(upserted(therapist_id, event_id=f"t-{therapist_id}"), PARTITION)
        await agent.handle(match(100 + n, therapist_id, days_waiting=10 + n), PARTITION)
    agent.clock.now = RUN  # type: ignore[attr-defined]


def tick(at: object, offset: int) -> Record:
    return Record(encode(inbox.Tick(at)), None, INBOX, PARTITION, offset)  # type: ignore[arg-type]


def continuations(agent: TherapistAgent) -> list[Record]:
    """The continuation ticks the agent sent its inbox, as records to feed back."""
    return [Record(s.value, s.key, INBOX, s.partition or 0, 100 + n) for n, s in enumerate(sent(agent.topics.inbox))]


def contact_emails(agent: TherapistAgent) -> list[int]:
    """The therapists emailed, in the order the commands went out."""
    return [
        c.therapist_id
        for s in sent(agent.topics.send_commands)
        for c in send_commands.unpack(s.value)
        if isinstance(c, send_commands.SendEmail) and c.email_kind == "contact_request"
    ]


def last_run(agent: TherapistAgent) -> datetime:
    bookmark = agent.table[bookmark_key(PARTITION)]
    return datetime.fromisoformat(bookmark["last_run"])  # type: ignore[index]


def kinds(agent: TherapistAgent) -> list[str]:
    return [
        c.email_kind
        for s in sent(agent.topics.send_commands)
        for c in send_commands.unpack(s.value)
        if isinstance(c, send_commands.SendEmail)
    ]


async def test_a_run_goes_a_slice_at_a_tick_longest_waiting_first() -> None:
    agent = ready_agent()
    await setup(agent)
    await agent(RecordStream([tick(RUN, 1)]))  # type: ignore[arg-type]
    assert contact_emails(agent) == LONGEST_WAITING_FIRST[:SLICE]
    [first] = continuations(agent)
    assert first.partition == PARTITION

    await agent(RecordStream([first]))  # type: ignore[arg-type]
    assert contact_emails(agent) == LONGEST_WAITING_FIRST[: 2 * SLICE]
    second = continuations(agent)[1]
    await agent(RecordStream([second]))  # type: ignore[arg-type]
    assert contact_emails(agent) == LONGEST_WAITING_FIRST
    assert len(continuations(agent)) == 2  # the run is done: no third continuation
    assert last_run(agent) == MONDAY.replace(hour=9, minute=0)
    for therapist_id in THERAPISTS:
        state = agent.table[therapist_id]
        assert isinstance(state, TherapistState) and not state.pending


async def test_the_bookmark_moves_only_when_the_run_is_done() -> None:
    agent = ready_agent()
    await setup(agent)
    before = agent.table[bookmark_key(PARTITION)]
    await agent(RecordStream([tick(RUN, 1)]))  # type: ignore[arg-type]
    assert agent.table[bookmark_key(PARTITION)] == before


async def test_an_acceptance_during_a_run_is_confirmed_before_the_runs_next_slice() -> None:
    agent = ready_agent()
    await setup(agent)
    accepted = THERAPISTS[0]  # waited least: its contact email would come last
    await agent(RecordStream([tick(RUN, 1)]))  # type: ignore[arg-type]
    acceptance = inbox.MatchStatusChanged("s-1", accepted, 100, 1100, "accepted")
    await agent(RecordStream([Record(encode(acceptance), None, INBOX, PARTITION, 2), *continuations(agent)]))  # type: ignore[arg-type]
    assert kinds(agent)[: SLICE + 1] == ["contact_request"] * SLICE + ["confirmation"]


async def test_a_periodic_tick_helps_the_run_along_without_a_second_continuation() -> None:
    agent = ready_agent()
    await setup(agent)
    await agent(RecordStream([tick(RUN, 1)]))  # type: ignore[arg-type]
    await agent(RecordStream([tick(RUN + timedelta(seconds=1), 2)]))  # type: ignore[arg-type]
    assert contact_emails(agent) == LONGEST_WAITING_FIRST[: 2 * SLICE]
    assert len(continuations(agent)) == 1  # the first is still in flight
    await agent(RecordStream(continuations(agent)))  # type: ignore[arg-type]
    assert contact_emails(agent) == LONGEST_WAITING_FIRST


async def test_an_acceptance_taken_after_a_runs_tick_in_one_batch_is_confirmed_before_its_slice() -> None:
    agent = ready_agent()
    await setup(agent)
    await agent(RecordStream([tick(RUN, 1)]))  # type: ignore[arg-type]
    acceptance = inbox.MatchStatusChanged("s-1", THERAPISTS[0], 100, 1100, "accepted")
    # The continuation tick comes first in the batch; the acceptance after it goes first.
    await agent(RecordStream([*continuations(agent), Record(encode(acceptance), None, INBOX, PARTITION, 2)]))  # type: ignore[arg-type]
    assert kinds(agent) == ["contact_request"] * SLICE + ["confirmation"] + ["contact_request"] * SLICE


async def test_ticks_of_a_partition_taken_together_make_one_slice_and_keep_one_continuation() -> None:
    agent = ready_agent()
    await setup(agent)
    await agent(RecordStream([tick(RUN, 1)]))  # type: ignore[arg-type]
    await agent(RecordStream([*continuations(agent), tick(RUN + timedelta(seconds=1), 3)]))  # type: ignore[arg-type]
    assert contact_emails(agent) == LONGEST_WAITING_FIRST[: 2 * SLICE]
    assert len(continuations(agent)) == 2  # the one taken was answered by the next
    await agent(RecordStream(continuations(agent)[-1:]))  # type: ignore[arg-type]
    assert contact_emails(agent) == LONGEST_WAITING_FIRST
    assert len(continuations(agent)) == 2  # the run is done


async def test_the_runs_of_two_partitions_take_turns_one_slice_a_batch() -> None:
    agent = ready_agent()
    await setup(agent)
    other = partition_of(therapist_on(2), PARTITIONS)
    await agent.handle(inbox.Tick(MONDAY), other)
    theirs = [therapist_on(2)]
    theirs.append(therapist_on(2, after=theirs[-1]))
    for n, therapist_id in enumerate(theirs):
        await agent.handle(upserted(therapist_id, event_id=f"t-{therapist_id}"), other)
        await agent.handle(match(200 + n, therapist_id, days_waiting=10 + n), other)
    batch = [tick(RUN, 1), Record(encode(inbox.Tick(RUN)), None, INBOX, other, 1)]

    def emailed() -> tuple[int, int]:
        mine = set(contact_emails(agent))
        return len(mine & set(THERAPISTS)), len(mine & set(theirs))

    await agent(RecordStream(batch))  # type: ignore[arg-type]
    first = emailed()
    assert sorted(first) == [0, SLICE]  # one partition's slice, not both
    # Each partition has a tick on its way back: the one sliced and the one passed on.
    assert sorted({record.partition for record in continuations(agent)}) == sorted({PARTITION, other})
    await agent(RecordStream(continuations(agent)))  # type: ignore[arg-type]
    assert emailed() == (SLICE, SLICE)  # now the other partition's turn


async def test_after_a_restart_in_the_middle_the_run_starts_again_and_emails_nobody_twice() -> None:
    table: dict[object, object] = {}
    before = ready_agent(table)
    await setup(before)
    await before(RecordStream([tick(RUN, 1)]))  # type: ignore[arg-type]
    emailed_before = contact_emails(before)
    after = ready_agent(table)  # a new worker: the run in hand is gone, the table is kept
    after.clock.now = RUN  # type: ignore[attr-defined]
    await after(RecordStream(continuations(before)))  # type: ignore[arg-type]
    for offset in range(200, 210):  # its own continuation ticks, until the run is done
        if len(continuations(after)) < offset - 199:
            break
        await after(RecordStream([Record(continuations(after)[-1].value, None, INBOX, PARTITION, offset)]))  # type: ignore[arg-type]
    assert sorted(emailed_before + contact_emails(after)) == sorted(THERAPISTS)


async def test_a_later_run_due_takes_over_the_run_in_hand() -> None:
    agent = ready_agent()
    await setup(agent)
    await agent(RecordStream([tick(RUN, 1)]))  # type: ignore[arg-type]
    tuesday = RUN + timedelta(days=1)
    agent.clock.now = tuesday  # type: ignore[attr-defined]
    await agent.handle(inbox.Tick(tuesday), PARTITION)  # the whole of Tuesday's run
    keys = [
        c.email_key
        for s in sent(agent.topics.send_commands)
        for c in send_commands.unpack(s.value)
        if isinstance(c, send_commands.SendEmail)
    ]
    assert len(keys) == len(THERAPISTS) and len(set(keys)) == len(THERAPISTS)
    assert last_run(agent) == tuesday.replace(minute=0)
