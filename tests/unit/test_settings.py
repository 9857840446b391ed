"""Settings from an environment mapping (CONTRACT §6)."""

import os
from datetime import timedelta

import pytest

from domain.schedule import CronSchedule, IntervalSchedule
from streams.settings import Settings, SettingsError


def test_defaults_match_the_contract():
    s = Settings.from_environ({})
    assert s.kafka_broker == "kafka://localhost:9092"
    assert s.app_id == "communication-service"
    assert s.database_url.get_secret_value().startswith("sqlite:///")
    assert (s.smtp_host, s.smtp_port, s.smtp_security) == ("localhost", 1025, "none")
    assert s.smtp_username is None and s.smtp_password is None
    assert s.sender_name == "Therapieplatz-Vermittlung"
    assert str(s.timezone) == "Europe/Berlin"
    assert s.contact_interval == timedelta(days=7) == s.follow_up_after
    assert isinstance(s.batch_schedule, CronSchedule)
    assert (s.call_slot, s.call_reminder_before) == (timedelta(minutes=5), timedelta(minutes=15))
    assert (s.max_send_attempts, s.max_call_attempts) == (5, 3)
    assert (s.topic_matching, s.topic_therapists, s.topic_commands, s.topic_events, s.topic_dlq) == (
        "matching-events",
        "therapist-events",
        "communication-commands",
        "communication-events",
        "communication-dlq",
    )


def test_values_from_the_environment():
    s = Settings.from_environ(
        {
            "COMM_CONTACT_INTERVAL": "40s",
            "COMM_BATCH_SCHEDULE": "30s",
            "COMM_TIMEZONE": "UTC",
            "COMM_SMTP_SECURITY": "starttls",
            "COMM_TOPIC_EVENTS": "x-events",
            "UNRELATED": "ignored",
        }
    )
    assert s.contact_interval == timedelta(seconds=40)
    assert s.batch_schedule == IntervalSchedule(timedelta(seconds=30))
    assert (s.smtp_security, s.topic_events) == ("starttls", "x-events")


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("COMM_CONTACT_INTERVAL", "7 days", "invalid duration"),
        ("COMM_FOLLOW_UP_AFTER", "x", "invalid duration"),
        ("COMM_CALL_SLOT", "5", "invalid duration"),
        ("COMM_BATCH_SCHEDULE", "0 25 * * *", "outside 0-23"),
        ("COMM_BATCH_SCHEDULE", "soon", "invalid duration"),
        ("COMM_TIMEZONE", "Europe/Atlantis", "unknown time zone"),
        ("COMM_SMTP_PORT", "smtp", "valid integer"),
        ("COMM_SMTP_SECURITY", "ssl", "'none', 'starttls' or 'tls'"),
        ("COMM_MAX_SEND_ATTEMPTS", "0", "greater than or equal to 1"),
        ("COMM_DATABASE_URL", "not a url", "not a database URL"),
        ("COMM_CALL_SLOT", "0s", "must be longer than zero"),
        ("COMM_DELIVERY_LEASE", "0ms", "must be longer than zero"),
        ("COMM_CONTACT_INTERVAL", "0d", "must be longer than zero"),
    ],
)
def test_invalid_value_names_the_variable(variable, value, fragment):
    with pytest.raises(SettingsError) as error:
        Settings.from_environ({variable: value})
    assert variable in str(error.value)
    assert fragment in str(error.value)


def test_secrets_are_hidden_and_may_come_from_a_file(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret-value\n")
    s = Settings.from_environ(
        {
            "COMM_SMTP_USERNAME": "mailer",
            "COMM_SMTP_PASSWORD_FILE": str(secret),
            "COMM_DATABASE_URL": "postgresql+psycopg://app:db-pass@db/comm",
        }
    )
    assert s.smtp_password.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(s) and "db-pass" not in repr(s)
    assert s.database_url_display == "postgresql+psycopg://app:***@db/comm"


def test_unreadable_secret_file_is_reported():
    with pytest.raises(SettingsError, match="COMM_SMTP_PASSWORD_FILE"):
        Settings.from_environ({"COMM_SMTP_PASSWORD_FILE": "/nonexistent/file"})


def test_invalid_secret_is_not_echoed():
    with pytest.raises(SettingsError) as error:
        Settings.from_environ({"COMM_DATABASE_URL": "::postgres-with-secret-pw::"})
    assert "secret-pw" not in str(error.value)


@pytest.mark.parametrize(("cpus", "expected"), [({0}, False), ({0, 1}, True), ({2, 5, 7}, True)])
def test_the_delivery_process_is_on_by_default_when_the_process_may_use_a_second_cpu(monkeypatch, cpus, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cpus)
    assert Settings.from_environ({}).delivery_process is expected
    assert Settings.from_environ({"COMM_DELIVERY_PROCESS": "auto"}).delivery_process is expected
    assert Settings.from_environ({"COMM_DELIVERY_PROCESS": "false"}).delivery_process is False
    assert Settings.from_environ({"COMM_DELIVERY_PROCESS": "true"}).delivery_process is True


def test_several_smtp_connections_by_default():
    assert Settings.from_environ({}).smtp_connections == 3


def test_a_delivery_process_setting_that_is_neither_true_false_nor_auto_is_refused():
    with pytest.raises(SettingsError, match=r"COMM_DELIVERY_PROCESS(.|\n)*expected true, false or auto"):
        Settings.from_environ({"COMM_DELIVERY_PROCESS": "sometimes"})
