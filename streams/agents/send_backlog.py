"""The sender agent's backlog: the send commands taken from the topic and not yet
stored, handed out in groups to store, urgent therapists first.

The agent keeps taking records while it stores (streams.agents.sender), so a
confirmation that arrives while a batch run's contact emails are being stored
goes into the next group, not behind all of them. A therapist's commands keep
their order (an email may need the request details sent before it); only the order
between therapists changes. Records are released for acknowledgement in the order
they were taken, each once every one of its commands is stored: a gap in the acks
would let the consumer commit past a record not yet stored.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.messages.send_commands import SendCommand


@dataclass(eq=False)
class Taken:
    """One record taken: its commands (None: it could not be read), and how many of
    them are still to be stored."""

    event: Any
    commands: Sequence[SendCommand] | None
    left: int = field(init=False)
    size: int = field(init=False)  # of the record's value

    def __post_init__(self) -> None:
        self.size = len(getattr(self.event, "value", None) or b"")
        # An unreadable record has one thing left: its dead letter.
        self.left = 1 if self.commands is None else len(self.commands)


@dataclass(frozen=True)
class Group:
    """What to store next, in one transaction: commands, each with its record; or one
    record that cannot be read (``unreadable``), to be dead-lettered."""

    commands: list[tuple[Taken, SendCommand]]
    unreadable: Taken | None = None

    def records(self) -> list[Taken]:
        """The records the group's commands come from, each once, in order."""
        if self.unreadable is not None:
            return [self.unreadable]
        return list(dict.fromkeys(taken for taken, _ in self.commands))


class Backlog:
    """Records taken and not yet acknowledged: at most ``limit`` of them, and at most
    about ``max_bytes`` of their values (a bundle may be up to 256 KiB)."""

    def __init__(
        self, limit: int, group_size: int, is_urgent: Callable[[SendCommand], bool], max_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.bytes = 0
        self.group_size = group_size
        self.is_urgent = is_urgent
        self._taken: deque[Taken] = deque()  # in the order taken, until acknowledged
        self._pending: list[tuple[Taken, SendCommand]] = []  # commands not handed out, in order
        self._unreadable: deque[Taken] = deque()
        self._urgent: Counter[int] = Counter()  # therapist -> urgent commands pending
        self._changed = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._taken)

    def add(self, event: Any, commands: Sequence[SendCommand] | None) -> None:
        taken = Taken(event, commands)
        self._taken.append(taken)
        self.bytes += taken.size
        if commands is None:
            self._unreadable.append(taken)
        else:
            for command in commands:
                self._pending.append((taken, command))
                if self.is_urgent(command):
                    self._urgent[command.therapist_id] += 1
        self._changed.set()

    def close(self) -> None:
        """Nothing more will be added: ``next_group`` returns None once all is handed out."""
        self._closed = True
        self._changed.set()

    def full(self) -> bool:
        return len(self._taken) >= self.limit or self.bytes >= self.max_bytes

    async def room(self) -> None:
        """Wait until fewer than ``limit`` records, and fewer than ``max_bytes``, are held."""
        while self.full():
            await self._wait()

    async def next_group(self) -> Group | None:
        """The next group to store (waiting for one), or None once closed and empty.
        A group may be empty: a record without commands, free to acknowledge."""
        while True:
            if self._unreadable:
                return Group([], self._unreadable.popleft())
            if self._pending:
                return Group(self._take_group())
            if self._taken and self._taken[0].left == 0:
                return Group([])
            if self._closed:
                return None
            await self._wait()

    def stored(self, group: Group) -> list[Any]:
        """Mark ``group`` stored; the events now free to acknowledge, in order taken."""
        if group.unreadable is not None:
            group.unreadable.left = 0
        for taken, _ in group.commands:
            taken.left -= 1
        return self._release()

    def settled(self, records: list[Taken]) -> list[Any]:
        """Mark every command of ``records`` done, stored or dead-lettered one by one
        (after their group failed); the events now free to acknowledge."""
        settled = set(records)
        kept = []
        for taken, command in self._pending:
            if taken in settled:
                self._forget_urgent(command)
            else:
                kept.append((taken, command))
        self._pending = kept
        for taken in records:
            taken.left = 0
        return self._release()

    def _take_group(self) -> list[tuple[Taken, SendCommand]]:
        if self._urgent:
            wanted = self._urgent.keys()
            group = [entry for entry in self._pending if entry[1].therapist_id in wanted][: self.group_size]
            chosen = {id(entry) for entry in group}
            self._pending = [entry for entry in self._pending if id(entry) not in chosen]
        else:
            group, self._pending = self._pending[: self.group_size], self._pending[self.group_size :]
        for _, command in group:
            self._forget_urgent(command)
        return group

    def _forget_urgent(self, command: SendCommand) -> None:
        if self.is_urgent(command):
            self._urgent[command.therapist_id] -= 1
            if self._urgent[command.therapist_id] <= 0:
                del self._urgent[command.therapist_id]

    def _release(self) -> list[Any]:
        released = []
        while self._taken and self._taken[0].left == 0:
            taken = self._taken.popleft()
            self.bytes -= taken.size
            released.append(taken.event)
        if released:
            self._changed.set()
        return released

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()
