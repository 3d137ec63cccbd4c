"""Providers' status reports only move a delivery forward (SPEC 7): the one rule the scheduler applies them by."""

from __future__ import annotations

import itertools

import pytest
from kalcifer_common.statuses import DeliveryStatus
from kalcifer_scheduler.deliveries.reports import FINAL, REPORTABLE, refusal

PENDING, SENDING, SENT, DELIVERED, BOUNCED, FAILED = (
    DeliveryStatus.PENDING,
    DeliveryStatus.SENDING,
    DeliveryStatus.SENT,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.BOUNCED,
    DeliveryStatus.FAILED,
)
ORDER = [PENDING, SENDING, SENT]


@pytest.mark.parametrize(
    ("current", "reported"),
    [(SENDING, SENT), (SENDING, DELIVERED), (SENT, DELIVERED), (SENT, BOUNCED), (SENT, FAILED), (SENDING, FAILED)],
)
def test_a_report_that_moves_forward_is_accepted(current: DeliveryStatus, reported: DeliveryStatus) -> None:
    assert refusal(current, reported, attempts=1) is None


@pytest.mark.parametrize(("current", "reported"), [(DELIVERED, SENT), (SENT, SENT), (BOUNCED, BOUNCED)])
def test_the_status_a_delivery_already_has_is_accepted_and_backwards_is_refused(
    current: DeliveryStatus, reported: DeliveryStatus
) -> None:
    if current == reported:
        assert refusal(current, reported, attempts=1) is None
    else:
        assert refusal(current, reported, attempts=1) == f"the delivery is {current}, a final status"


def test_a_final_status_is_final_and_no_report_goes_back() -> None:
    for current, reported in itertools.product(DeliveryStatus, REPORTABLE):
        why = refusal(current, reported, attempts=1)
        if current in FINAL and reported != current:
            assert why == f"the delivery is {current}, a final status"
        elif current in ORDER and reported in ORDER and ORDER.index(reported) < ORDER.index(current):
            assert why is not None
            assert "cannot take it back" in why


def test_a_pending_delivery_takes_a_report_only_once_a_send_was_attempted() -> None:
    assert refusal(PENDING, DELIVERED, attempts=0) == "the delivery was never handed to a provider"
    # An attempt that failed (a timeout after the provider took it) is retried later: the report stops that.
    assert refusal(PENDING, DELIVERED, attempts=1) is None
    assert refusal(PENDING, SENT, attempts=2) is None
