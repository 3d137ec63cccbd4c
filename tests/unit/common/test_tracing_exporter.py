"""Where spans go is decided by the standard OpenTelemetry variables, and nowhere unless one is set."""

from __future__ import annotations

import pytest
from kalcifer_common.settings import CommonSettings
from kalcifer_common.tracing import (
    chosen_exporter,
    client_interceptors,
    server_interceptors,
    tracer_provider,
    tracing_installed,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor


@pytest.fixture(autouse=True)
def _no_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of the test run decides nothing here."""
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def settings(**values: str) -> CommonSettings:
    return CommonSettings.model_validate(values)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "none"),
        ({"otel_traces_exporter": "none", "otel_exporter_otlp_endpoint": "http://collector:4317"}, "none"),
        ({"otel_exporter_otlp_endpoint": "http://collector:4317"}, "otlp"),
        ({"otel_exporter_otlp_traces_endpoint": "http://collector:4317"}, "otlp"),
        ({"otel_traces_exporter": "otlp"}, "otlp"),
        ({"otel_traces_exporter": "console"}, "console"),
    ],
)
def test_spans_go_where_the_variables_say_and_nowhere_by_default(values: dict[str, str], expected: str) -> None:
    assert chosen_exporter(settings(**values)) == expected


def test_no_exporter_means_no_provider_so_nothing_is_recorded() -> None:
    assert tracer_provider(settings(), service_name="kalcifer-test") is None


def test_a_process_that_traces_nothing_installs_no_tracing_interceptor() -> None:
    # Nothing in the test process installs a provider (only a service's `serve` does).
    assert not tracing_installed()
    assert server_interceptors() == []
    assert client_interceptors() == []


def test_the_console_exporter_writes_each_span_as_it_ends_and_otlp_in_batches() -> None:
    console = tracer_provider(settings(otel_traces_exporter="console"), service_name="kalcifer-test")
    otlp = tracer_provider(settings(otel_traces_exporter="otlp"), service_name="kalcifer-test")
    assert console is not None
    assert otlp is not None
    try:
        assert console.resource.attributes["service.name"] == "kalcifer-test"
        [console_processor] = console._active_span_processor._span_processors
        [otlp_processor] = otlp._active_span_processor._span_processors
        assert isinstance(console_processor, SimpleSpanProcessor)
        assert isinstance(otlp_processor, BatchSpanProcessor)
    finally:
        console.shutdown()
        otlp.shutdown()
