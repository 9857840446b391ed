"""The demo's closing verdicts: each check on its own line, and only the check that
failed says so (a booked call it should not have booked is not a weekly-rule
violation). The exit code is 1 when any check fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.demo.observed import Observed
from streams.demo.run import Demo
from streams.demo.scenario import INTERVAL
from streams.demo.summary import summary_checks

NAMES = {1: "Eva Müller", 6: "Alex Kaya", 10: "Stefan Richter", 12: "Paul Neumann"}
T0 = "2026-11-23T09:00:00+00:00"
T_LATER = "2026-11-23T09:00:25+00:00"  # more than INTERVAL (20s) later
T_TOO_SOON = "2026-11-23T09:00:05+00:00"


def observed(*, eva: list[str], calls: dict[int, tuple[str, list[int]]] | None = None) -> Observed:
    seen = Observed()
    for email_id, sent_at in enumerate(eva, start=1):
        seen.sent[1].append((float(email_id), email_id, sent_at))
        seen.kinds[email_id] = "contact_request"
        seen.templates[email_id] = "erstkontakt"
    seen.calls.update(calls or {1: ("Mo 23.11. 10:00", [101])})
    return seen


def verdicts(seen: Observed, captured: int | None = None) -> dict[str, tuple[bool, str]]:
    total = sum(len(s) for s in seen.sent.values())
    return {
        check.name: (check.passed, check.line())
        for check in summary_checks(seen, NAMES, total if captured is None else captured)
    }


def test_all_checks_pass():
    result = verdicts(observed(eva=[T0, T_LATER]))
    assert set(result) == {f"weekly rule (here {INTERVAL}s)", "follow-up calls", "email capture"}
    assert all(passed for passed, _ in result.values())
    assert not any("VIOLATED" in line or "FAILED" in line for _, line in result.values())


@pytest.mark.parametrize(
    ("seen", "captured", "failing", "fragment"),
    [
        (observed(eva=[T0, T_TOO_SOON]), None, f"weekly rule (here {INTERVAL}s)", "Eva Müller: two contact emails"),
        (
            observed(eva=[T0, T_LATER], calls={12: ("Mo 23.11. 10:00", [121])}),
            None,
            "follow-up calls",
            "Paul Neumann got a call although answered by email",
        ),
        (observed(eva=[T0, T_LATER]), 1, "email capture", "2 emails reported sent but 1 captured"),
    ],
)
def test_only_the_failed_check_reports_failure(seen, captured, failing, fragment):
    result = verdicts(seen, captured)
    passed, line = result.pop(failing)
    assert not passed
    assert fragment in line and ("VIOLATED" in line or "FAILED" in line)
    for other_passed, other_line in result.values():
        assert other_passed
        assert "VIOLATED" not in other_line and "FAILED" not in other_line


def write_eml(output: Path, count: int) -> None:
    (output / "emails").mkdir(parents=True)
    for n in range(count):
        (output / "emails" / f"{n}.eml").write_text("")


def demo_with(output: Path, seen: Observed) -> Demo:
    demo = Demo(output)
    demo.names = NAMES
    demo.observed = seen
    return demo


def test_summary_of_a_wrong_call_names_the_calls_not_the_weekly_rule(tmp_path, capsys):
    write_eml(tmp_path, 2)
    seen = observed(eva=[T0, T_LATER], calls={12: ("Mo 23.11. 10:00", [121])})
    assert demo_with(tmp_path, seen)._summary() == 1
    out, err = capsys.readouterr()
    assert "weekly rule VIOLATED" not in out
    assert f"weekly rule (here {INTERVAL}s): ok" in out
    assert "follow-up calls: FAILED" in out and "Paul Neumann got a call although answered by email" in out
    assert "PROBLEM: Paul Neumann got a call although answered by email" in err


def test_summary_of_a_missing_eml_does_not_claim_every_check_passed(tmp_path, capsys):
    write_eml(tmp_path, 1)
    assert demo_with(tmp_path, observed(eva=[T0, T_LATER]))._summary() == 1
    out, _ = capsys.readouterr()
    assert "email capture: FAILED" in out and "2 emails reported sent but 1 captured" in out
    assert f"weekly rule (here {INTERVAL}s): ok" in out


def test_summary_of_a_good_run_exits_0(tmp_path, capsys):
    write_eml(tmp_path, 2)
    assert demo_with(tmp_path, observed(eva=[T0, T_LATER]))._summary() == 0
    out, err = capsys.readouterr()
    assert "VIOLATED" not in out and "FAILED" not in out and err == ""


def test_summary_of_a_weekly_rule_violation(tmp_path, capsys):
    write_eml(tmp_path, 2)
    assert demo_with(tmp_path, observed(eva=[T0, T_TOO_SOON]))._summary() == 1
    out, _ = capsys.readouterr()
    assert f"weekly rule (here {INTERVAL}s): VIOLATED" in out
    assert "follow-up calls: ok" in out and "email capture: ok" in out
