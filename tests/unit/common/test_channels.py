"""Provider configurations (SPEC 7): every problem named by its field, secrets told apart from plain settings."""

from __future__ import annotations

from typing import Any

import pytest
from kalcifer_common.channels import provider_violations, split_secrets

SMTP = {"host": "smtp.example.com", "from": "news@example.com"}
WEBHOOK = {"url": "https://hooks.example.com/k", "secret": "s" * 16}


def fields(channel: str, provider: str, settings: dict[str, Any], stored: frozenset[str] = frozenset()) -> list[str]:
    return sorted(v.field for v in provider_violations(channel, provider, settings, stored_secrets=stored))


def test_good_configurations_pass() -> None:
    assert fields("email", "smtp", SMTP | {"port": 2525, "tls": "tls", "password": "p", "username": "u"}) == []
    assert fields("sms", "webhook", WEBHOOK) == []
    assert fields("push", "log", {}) == []


@pytest.mark.parametrize(
    ("channel", "provider", "settings", "expected"),
    [
        ("fax", "log", {}, ["channel"]),
        ("email", "carrier-pigeon", {}, ["provider"]),
        ("sms", "smtp", SMTP, ["provider"]),
        ("email", "log", {"url": "x"}, ["settings.url"]),
        ("email", "smtp", {"host": "smtp.example.com"}, ["settings.from"]),
        ("email", "smtp", SMTP | {"port": 0}, ["settings.port"]),
        ("email", "smtp", SMTP | {"port": 25.5}, ["settings.port"]),
        ("email", "smtp", SMTP | {"port": "25"}, ["settings.port"]),
        ("email", "smtp", SMTP | {"tls": "maybe"}, ["settings.tls"]),
        ("email", "smtp", SMTP | {"from": "not an address"}, ["settings.from"]),
        ("email", "smtp", SMTP | {"host": "smtp.example.com\r\nRCPT TO:<x>"}, ["settings.host"]),
        ("email", "smtp", SMTP | {"ca_cert": "not a pem"}, ["settings.ca_cert"]),
        ("email", "smtp", SMTP | {"tls": "none", "username": "u", "password": "p"}, ["settings.tls"]),
        ("webhook", "webhook", {"url": "ftp://x.example.com", "secret": "s" * 16}, ["settings.url"]),
        ("webhook", "webhook", {"url": "https://x.example.com"}, ["settings.secret"]),
        ("webhook", "webhook", {"url": "https://x.example.com", "secret": "short"}, ["settings.secret"]),
        ("webhook", "webhook", {"url": "https://x.example.com:99999/", "secret": "s" * 16}, ["settings.url"]),
    ],
)
def test_each_problem_names_its_field(
    channel: str, provider: str, settings: dict[str, Any], expected: list[str]
) -> None:
    assert fields(channel, provider, settings) == expected


def test_a_required_secret_may_be_kept_from_the_stored_configuration() -> None:
    assert fields("webhook", "webhook", {"url": "https://x.example.com"}, frozenset({"secret"})) == []
    # ... but not when it is explicitly removed.
    assert fields("webhook", "webhook", {"url": "https://x.example.com", "secret": None}, frozenset({"secret"})) == [
        "settings.secret"
    ]


def test_secrets_are_split_from_plain_settings() -> None:
    plain, secrets = split_secrets("smtp", SMTP | {"password": "p", "username": "u"})
    assert plain == SMTP | {"username": "u"}
    assert secrets == {"password": "p"}
    assert split_secrets("webhook", {"url": "u", "secret": None}) == ({"url": "u"}, {"secret": None})
