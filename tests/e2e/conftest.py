"""Fixtures of the end-to-end tests on the session's `suite`."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.support.processes import Suite


@pytest.fixture(scope="module")
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    """A channel to the suite's API."""
    with grpc.insecure_channel(suite.address("api")) as opened:
        yield opened
