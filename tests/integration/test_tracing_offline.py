"""An OTLP collector that does not answer costs a service nothing but its spans: a span still ends at once, and
the shutdown flush gives up within its bound instead of holding the process (the SDK's own would wait 30 s)."""

from __future__ import annotations

import time

import pytest
from kalcifer_common.settings import CommonSettings
from kalcifer_common.tracing import Tracing, tracer_provider

from tests.support.processes import free_port


async def test_a_collector_that_does_not_answer_neither_blocks_spans_nor_the_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every export is refused
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", nowhere)  # what the exporter itself reads
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")  # export at once, so the shutdown finds it failing
    provider = tracer_provider(CommonSettings(), service_name="kalcifer-offline")
    assert provider is not None
    tracer = provider.get_tracer(__name__)

    began = time.monotonic()
    for number in range(100):
        with tracer.start_as_current_span(f"work {number}"):
            pass
    spans_took = time.monotonic() - began
    began = time.monotonic()
    await Tracing(provider).shutdown(timeout_seconds=1.0)
    shutdown_took = time.monotonic() - began

    assert spans_took < 5.0
    assert shutdown_took < 5.0
