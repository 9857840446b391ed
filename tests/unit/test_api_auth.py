"""The API's access settings and token check: where tokens come from, what is
refused at start, how a presented token is compared, and the address a worker
advertises to the others for forwarding."""

from __future__ import annotations

import hmac

import pytest
from pydantic import SecretStr

from streams.api import auth
from streams.api.auth import Tokens, bearer_token
from streams.kafka.app import create_app
from streams.ops.web import faust_options
from streams.settings import Settings, SettingsError

TOKEN = "k3y-for-the-staff-tool-0001"
OTHER = "k3y-for-the-ops-console-0002"


def test_no_token_configured_means_none():
    assert Settings.from_environ({}).api_tokens == ()


def test_tokens_come_from_the_variable_its_file_and_the_tokens_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    tokens = tmp_path / "tokens"
    tokens.write_text(
        f"# staff tool\n\n  {OTHER}  \n# rotated out: old-token-never-used-again\nthird-token-for-the-cli-03\n"
    )
    from_file = Settings.from_environ({"COMM_API_TOKEN_FILE": str(secret), "COMM_API_TOKENS_FILE": str(tokens)})
    assert [t.get_secret_value() for t in from_file.api_tokens] == [TOKEN, OTHER, "third-token-for-the-cli-03"]
    assert [t.get_secret_value() for t in Settings.from_environ({"COMM_API_TOKEN": TOKEN}).api_tokens] == [TOKEN]


def test_tokens_never_show_in_the_settings_repr():
    settings = Settings.from_environ({"COMM_API_TOKEN": TOKEN})
    assert isinstance(settings.api_token, SecretStr)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"COMM_API_TOKEN": "short-one"}, "COMM_API_TOKEN: a token must be at least 16 characters"),
        ({"COMM_API_TOKEN": "with a space in it, long enough"}, "COMM_API_TOKEN: a token may hold printable ASCII"),
        ({"COMM_API_TOKENS_FILE": "/nonexistent/tokens"}, "COMM_API_TOKENS_FILE: cannot read /nonexistent/tokens"),
    ],
)
def test_a_token_that_cannot_work_stops_start_up_naming_the_variable(environ, fragment):
    with pytest.raises(SettingsError) as error:
        Settings.from_environ(environ)
    assert fragment in str(error.value)
    assert "short-one" not in str(error.value) and "with a space" not in str(error.value)


def test_a_bad_line_of_the_tokens_file_is_named_by_its_number_not_its_value(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n# comment\ntoo-short\n")
    with pytest.raises(SettingsError) as error:
        Settings.from_environ({"COMM_API_TOKENS_FILE": str(tokens)})
    assert "COMM_API_TOKENS_FILE: line 3: a token must be at least 16 characters" in str(error.value)
    assert "too-short" not in str(error.value)


def test_a_tokens_file_without_tokens_is_refused(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# nothing here yet\n\n")
    with pytest.raises(SettingsError, match=r"COMM_API_TOKENS_FILE: .* holds no token"):
        Settings.from_environ({"COMM_API_TOKENS_FILE": str(tokens)})


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {OTHER}", True),  # the scheme is case-insensitive
        (f"  Bearer   {TOKEN}  ", True),
        (None, False),
        ("", False),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("Bearer", False),
        (f"Bearer {TOKEN} {TOKEN}", False),
    ],
)
def test_a_request_is_let_in_only_with_a_configured_token(header, accepted):
    assert Tokens([SecretStr(TOKEN), SecretStr(OTHER)]).accepts(header) is accepted


def test_the_presented_token_is_compared_with_every_token_in_constant_time(monkeypatch):
    compared = []
    real = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", compare_digest)
    tokens = Tokens([SecretStr(TOKEN), SecretStr(OTHER), SecretStr("a-third-token-of-another-length")])
    assert tokens.accepts(f"Bearer {TOKEN}")  # matches the first, and still compares the others
    assert not tokens.accepts("Bearer x")
    # digests of equal length: a token's length does not show in the time either
    assert compared == [(32, 32)] * 6


def test_only_digests_of_the_tokens_are_kept():
    tokens = Tokens([SecretStr(TOKEN)])
    assert TOKEN not in repr(vars(tokens)) and TOKEN.encode() not in repr(vars(tokens)).encode()
    assert len(tokens) == 1


def test_bearer_token_reads_the_token():
    assert bearer_token(f"Bearer {TOKEN}") == TOKEN
    assert bearer_token("Bearer ") is None


# --- the address the other workers forward to


def test_the_advertised_address_defaults_to_the_bound_host_and_port():
    settings = Settings.from_environ({"COMM_WEB_HOST": "127.0.0.1", "COMM_WEB_PORT": "7071"})
    assert settings.web_url == "http://127.0.0.1:7071"
    assert faust_options(settings)["canonical_url"] == "http://127.0.0.1:7071"
    assert str(create_app(settings).conf.canonical_url) == "http://127.0.0.1:7071"


def test_a_wildcard_bind_advertises_the_host_name(monkeypatch):
    monkeypatch.setattr("streams.settings.socket.gethostname", lambda: "worker-7")
    assert Settings.from_environ({}).web_url == "http://worker-7:6066"
    assert Settings.from_environ({"COMM_WEB_HOST": "::"}).web_url == "http://worker-7:6066"
    assert Settings.from_environ({"COMM_WEB_HOST": "::1"}).web_url == "http://[::1]:6066"


def test_the_advertised_address_may_be_set():
    settings = Settings.from_environ({"COMM_WEB_ADVERTISED_URL": "http://10.0.3.7:6066/"})
    assert settings.web_url == "http://10.0.3.7:6066"
    assert str(create_app(settings).conf.canonical_url) == "http://10.0.3.7:6066"


@pytest.mark.parametrize(
    "value",
    ["worker-1:6066", "ftp://worker-1", "http://worker-1:port", "http://worker-1/api", "http://u:p@w:1", "http://"],
)
def test_an_advertised_address_that_is_no_web_server_is_refused(value):
    with pytest.raises(SettingsError, match="COMM_WEB_ADVERTISED_URL: not the address of this worker's web server"):
        Settings.from_environ({"COMM_WEB_ADVERTISED_URL": value})
