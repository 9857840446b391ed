"""Query parameters of the API: each one read and checked, a bad one named."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from multidict import MultiDict

from streams.api.params import MAX_LIMIT, BadParameter, Params, decode_cursor, encode_cursor

KNOWN = ("therapist_id", "status", "since", "date", "limit", "cursor")


def params(**values: str | list[str]) -> Params:
    pairs = [(k, v) for k, vs in values.items() for v in (vs if isinstance(vs, list) else [vs])]
    return Params(MultiDict(pairs), KNOWN)


def refused(make, name: str) -> str:
    with pytest.raises(BadParameter) as error:
        make()
    assert error.value.name == name
    assert str(error.value).startswith(f"{name}: ")
    return str(error.value)


def test_an_unknown_parameter_is_refused_naming_it_and_the_known_ones():
    message = refused(lambda: params(therapist="7"), "therapist")
    assert "therapist_id" in message


def test_absent_and_empty_parameters_are_none():
    p = params(therapist_id="")
    assert p.integer("therapist_id") is None and p.time("since") is None and p.day("date") is None
    assert p.cursor("emails") is None and p.choices("status", {"a"}) == ()


@pytest.mark.parametrize("value", ["abc", "-1", "0", "1.5", " 7", "99999999999999999999"])
def test_an_id_must_be_a_positive_whole_number(value):
    assert "not an id" in refused(lambda: params(therapist_id=value).integer("therapist_id"), "therapist_id")


def test_an_id_given_twice_is_refused():
    assert "more than once" in refused(lambda: params(therapist_id=["1", "2"]).integer("therapist_id"), "therapist_id")


def test_choices_may_be_repeated_or_comma_separated():
    allowed = {"gesendet", "fehlgeschlagen", "entwurf"}
    assert params(status=["gesendet", "fehlgeschlagen,entwurf", "gesendet"]).choices("status", allowed) == (
        "gesendet",
        "fehlgeschlagen",
        "entwurf",
    )
    message = refused(lambda: params(status="sent").choices("status", allowed), "status")
    assert "'sent' is not one of entwurf, fehlgeschlagen, gesendet" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-23T10:15:00+01:00", datetime(2026, 11, 23, 9, 15, tzinfo=UTC)),
        ("2026-11-23T09:15:00Z", datetime(2026, 11, 23, 9, 15, tzinfo=UTC)),
        ("2026-11-23t09:15:00z", datetime(2026, 11, 23, 9, 15, tzinfo=UTC)),
        ("2026-11-23T09:15:00.250000+00:00", datetime(2026, 11, 23, 9, 15, 0, 250000, tzinfo=UTC)),
        # an unencoded "+" arrives as a space
        ("2026-11-23T10:15:00 01:00", datetime(2026, 11, 23, 9, 15, tzinfo=UTC)),
    ],
)
def test_times_are_rfc_3339_with_an_offset(value, expected):
    assert params(since=value).time("since") == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-11-23", "2026-13-01T00:00:00Z", "1700000000"])
def test_a_time_that_is_not_rfc_3339_is_refused(value):
    assert "not an RFC 3339 time" in refused(lambda: params(since=value).time("since"), "since")


def test_a_time_without_an_offset_is_refused():
    assert "needs an offset" in refused(lambda: params(since="2026-11-23T10:15:00").time("since"), "since")


def test_dates():
    assert params(date="2026-03-29").day("date") == date(2026, 3, 29)
    for value in ("2026-3-29", "29.03.2026", "2026-02-30"):
        assert "not a date" in refused(lambda v=value: params(date=v).day("date"), "date")


def test_limit_defaults_to_50_and_is_capped_at_500():
    assert params().limit() == 50
    assert params(limit="7").limit() == 7
    assert params(limit="100000").limit() == MAX_LIMIT == 500
    for value in ("0", "-5", "ten", "2.5"):
        assert "not a whole number from 1 to 500" in refused(lambda v=value: params(limit=v).limit(), "limit")


def test_a_cursor_is_opaque_and_round_trips_to_the_microsecond():
    position = (datetime(2026, 11, 23, 9, 15, 0, 123456, tzinfo=UTC), 4711)
    cursor = encode_cursor("emails", position)
    assert "2026" not in cursor and "=" not in cursor
    assert decode_cursor("emails", cursor) == position
    assert params(cursor=cursor).cursor("emails") == position
    # another zone is kept as the same instant
    berlin = timezone(timedelta(hours=1))
    assert decode_cursor("emails", encode_cursor("emails", (position[0].astimezone(berlin), 1)))[0] == position[0]


OTHER_LIST = encode_cursor("phone-calls", (datetime(2026, 11, 23, tzinfo=UTC), 1))


@pytest.mark.parametrize("value", ["garbage", "eyJ4IjoxfQ", "W10", OTHER_LIST])
def test_a_cursor_that_is_not_one_of_this_list_is_refused(value):
    assert "not a cursor of this list" in refused(lambda: params(cursor=value).cursor("emails"), "cursor")
