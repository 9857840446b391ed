"""The email state machine: which status changes each command may make."""

import pytest

from domain.email_status import EmailStatus, response_refusal, update_refusal

S = EmailStatus


@pytest.mark.parametrize(
    ("current", "requested", "allowed"),
    [
        (S.DRAFT, None, True),  # edit a draft
        (S.DRAFT, "in_warteschlange", True),  # queue a draft
        (S.FAILED, None, True),  # fix a failed email
        (S.FAILED, "in_warteschlange", True),  # and send it again
        (S.DRAFT, "gesendet", False),  # a command cannot claim an email was sent
        (S.DRAFT, "entwurf", False),
        (S.FAILED, "wird_gesendet", False),
        (S.QUEUED, None, False),  # queued, being sent or sent: too late to change
        (S.SENDING, None, False),
        (S.SENT, None, False),
        (S.SENT, "in_warteschlange", False),
    ],
)
def test_update_email(current, requested, allowed):
    refusal = update_refusal(current, requested)
    assert (refusal is None) is allowed
    if refusal:
        assert current.value in refusal or repr(requested) in refusal


@pytest.mark.parametrize("status", list(S))
def test_answers_only_on_sent_emails(status):
    assert (response_refusal(status) is None) is (status is S.SENT)


def test_wire_values_are_the_german_ones():
    assert [s.value for s in S] == ["entwurf", "in_warteschlange", "wird_gesendet", "gesendet", "fehlgeschlagen"]
