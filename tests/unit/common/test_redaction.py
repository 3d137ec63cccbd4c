"""Logs never show secrets, and show contacts masked (SPEC 10)."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from kalcifer_common.logging import configure_logging, get_logger
from kalcifer_common.redaction import REDACTED, mask_contact, redact


@pytest.mark.parametrize(
    ("value", "masked"),
    [("ada@example.com", "a***@example.com"), ("+33 6 12 34 56 78", "***5678"), ("12", "***"), ("no", "***")],
)
def test_contacts_keep_only_enough_to_recognise_them(value: str, masked: str) -> None:
    assert mask_contact(value) == masked


def test_secrets_anywhere_in_a_value_are_replaced() -> None:
    logged = {
        "settings": {"host": "smtp.example.com", "password": "hunter2", "smtp_password": "x"},
        "headers": [{"Authorization": "Bearer abc"}, {"X-Api-Key": "k"}, {"Accept": "json"}],
        "payload": {"email": "ada@example.com", "data": {"coupon": "X", "secret": 1}},
    }
    assert redact(logged) == {
        "settings": {"host": "smtp.example.com", "password": REDACTED, "smtp_password": REDACTED},
        "headers": [{"Authorization": REDACTED}, {"X-Api-Key": REDACTED}, {"Accept": "json"}],
        "payload": {"email": "a***@example.com", "data": {"coupon": "X", "secret": REDACTED}},
    }


def test_every_log_line_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="INFO", fmt="json", service="test")
    try:
        get_logger("t").info("delivery sent", token="s3cr3t", payload={"phone": "+33612345678", "to": "b@x.io"})
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert (line["token"], line["payload"]) == (REDACTED, {"phone": "***5678", "to": "b***@x.io"})
    assert line["event"] == "delivery sent"
