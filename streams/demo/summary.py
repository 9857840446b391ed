"""The demo's verdicts on what it observed."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime

from streams.demo.observed import Observed
from streams.demo.scenario import INTERVAL

# Therapists who must not get a follow-up call, and why.
NO_CALL = (
    (10, "the only request was accepted"),
    (12, "answered by email"),
    (6, "no phone hours, so a follow-up email"),
)


@dataclass(frozen=True)
class Check:
    """One verdict of the summary: what it checks, what holds when it passes, and
    what went wrong when it does not."""

    name: str
    holds: str
    problems: tuple[str, ...]
    failure: str = "FAILED"

    @property
    def passed(self) -> bool:
        return not self.problems

    def line(self) -> str:
        if self.passed:
            return f"{self.name}: ok, {self.holds}"
        return f"{self.name}: {self.failure}: {'; '.join(self.problems)}"


def summary_checks(observed: Observed, names: dict[int, str], captured: int) -> list[Check]:
    """The demo's verdicts on what it observed (``captured``: the .eml files written)."""
    too_close = []
    for therapist_id, name in sorted(names.items()):
        sent = observed.sent.get(therapist_id, [])
        limited = [datetime.fromisoformat(s) for _, e, s in sent if observed.kinds.get(e) != "confirmation"]
        for earlier, later in itertools.pairwise(limited):
            if (later - earlier).total_seconds() < INTERVAL:
                too_close.append(f"{name}: two contact emails {later - earlier} apart")
    wrong_calls = [
        f"{names[therapist_id]} got a call although {reason}"
        for therapist_id, reason in NO_CALL
        if therapist_id in observed.calls
    ]
    total = sum(len(v) for v in observed.sent.values())
    return [
        Check(
            f"weekly rule (here {INTERVAL}s)",
            f"every pair of contact emails to one therapist is at least {INTERVAL}s apart",
            tuple(too_close),
            failure="VIOLATED",
        ),
        Check(
            "follow-up calls",
            "no call for an accepted request, an email answer or a therapist without phone hours",
            tuple(wrong_calls),
        ),
        Check(
            "email capture",
            f"all {total} emails sent were captured as .eml files",
            (f"{total} emails reported sent but {captured} captured",) if captured != total else (),
        ),
    ]
