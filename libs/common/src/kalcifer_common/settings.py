"""Configuration from the environment (12-factor): one settings class per deployable, sharing a common base.

Every variable, its default and its meaning is listed in the README's configuration table; keep them in step.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kalcifer_common.outbound_policy import OutboundPolicy
from kalcifer_common.rpc.tls import TlsFiles
from kalcifer_common.secrets import MIN_KEY_LENGTH


def _key_long_enough(value: SecretStr) -> SecretStr:
    if value.get_secret_value() and len(value.get_secret_value()) < MIN_KEY_LENGTH:
        raise ValueError(f"must be at least {MIN_KEY_LENGTH} characters (e.g. `openssl rand -base64 32`)")
    return value


# Settings the API and the scheduler share: the key of provider secrets and the budget of template rendering.
SecretKey = Annotated[
    SecretStr,
    AfterValidator(_key_long_enough),
    Field(
        description="Key (32+ characters) that seals tenants' provider secrets at rest; without it the API refuses "
        "to store a secret."
    ),
]
PreviousSecretKeys = Annotated[
    SecretStr,
    Field(description="Comma-separated former KALCIFER_SECRET_KEYs that still open secrets (key rotation)."),
]
TemplateWorkers = Annotated[
    int, Field(ge=1, le=64, description="Worker processes that compile and render message templates (on first use).")
]
TemplateTimeoutMs = Annotated[
    int, Field(ge=1, le=60_000, description="Time budget of one template part's rendering; over it the render fails.")
]
TemplateMemoryMb = Annotated[
    int, Field(ge=64, le=65_536, description="Address-space limit of each template worker process.")
]


class CommonSettings(BaseSettings):
    """Settings every Kalcifer process reads."""

    # Errors never echo what was given: a mistyped secret must not end up in a crash log.
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", hide_input_in_errors=True)

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/kalcifer",
        description="PostgreSQL URL (postgresql://user:pass@host:port/db); the source of truth.",
    )
    kalcifer_internal_token: str = Field(
        default="",
        description="Shared secret that the engine and scheduler require from their callers.",
    )
    engine_addr: str = Field(default="localhost:4510", description="host:port of the engine service.")
    scheduler_addr: str = Field(default="localhost:4520", description="host:port of the scheduler service.")
    log_level: str = Field(default="INFO", description="Minimum log level.")
    log_format: Literal["json", "console"] = Field(default="json", description="json for machines, console for people.")
    # All 20 kept open rather than 10 kept + 10 opened and closed again under load: a connection opened for one
    # burst and closed after it costs a PostgreSQL backend start and re-prepares every statement on its next use.
    db_pool_size: int = Field(default=20, ge=1, le=200, description="Connections kept in each process's pool.")
    db_max_overflow: int = Field(
        default=0, ge=0, le=200, description="Connections a pool may open beyond DB_POOL_SIZE under load."
    )
    shutdown_grace_seconds: float = Field(default=10.0, gt=0, description="How long SIGTERM waits for in-flight calls.")
    rpc_timeout_seconds: float = Field(default=10.0, gt=0, description="Deadline of every internal gRPC call.")
    tls_cert_file: str = Field(
        default="", description="PEM certificate chain: when set (with TLS_KEY_FILE) every gRPC port serves TLS only."
    )
    tls_key_file: str = Field(default="", description="PEM private key of TLS_CERT_FILE.")
    tls_ca_file: str = Field(
        default="",
        description="PEM CA: internal services then demand client certificates from it, and trust only it (mTLS).",
    )
    max_concurrent_rpcs: int = Field(
        default=1000, ge=1, description="Calls a process serves at once; more are refused RESOURCE_EXHAUSTED at once."
    )
    outbound_allowlist: str = Field(
        default="",
        description="Hosts, host:port or CIDRs (comma-separated) that outbound calls may reach although they resolve "
        "to loopback, private, link-local or metadata addresses.",
    )
    health_interval_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often dependencies are probed for the health status: PostgreSQL (and, by the scheduler, "
        "Redis and the engine).",
    )
    timer_horizon_seconds: float = Field(
        default=60.0,
        ge=0,
        description="Waits due within this horizon are armed in Redis from PostgreSQL; the engine tells the "
        "scheduler only of timers due within twice this (0: of every timer, and Redis holds them all).",
    )
    metrics_refresh_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often the gauges read from PostgreSQL and Redis (instances by status, queue depths, armed "
        "timers) are refreshed for /metrics.",
    )
    otel_traces_exporter: Literal["", "none", "otlp", "console"] = Field(
        default="",
        description="Where spans go: otlp, console (one JSON line per span on stderr) or none; empty = otlp when an "
        "OTLP endpoint is set, else none.",
    )
    otel_exporter_otlp_endpoint: str = Field(
        default="", description="OTLP collector (read by the OTLP exporter itself); setting it turns traces on."
    )
    otel_exporter_otlp_traces_endpoint: str = Field(
        default="", description="OTLP collector for traces only; setting it turns traces on."
    )

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _readable_tls(self) -> CommonSettings:
        TlsFiles.load(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)  # half a configuration stops the start
        return self

    def tls(self) -> TlsFiles | None:
        """The TLS files, or None for plaintext."""
        return TlsFiles.load(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)

    @field_validator("outbound_allowlist")
    @classmethod
    def _readable_allowlist(cls, value: str) -> str:
        OutboundPolicy.parse(value)  # a bad entry stops the process at start, naming the entry
        return value


class RedisSettings(CommonSettings):
    """Settings of the processes that use Redis (the API's rate limits, the scheduler's queues)."""

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis URL (API rate limits, scheduler queues)."
    )
    redis_key_prefix: str = Field(default="kalcifer", description="Prefix of Kalcifer's own Redis keys.")


class ApiSettings(RedisSettings):
    """Settings of `kalcifer-api`."""

    database_role: str = Field(
        default="kalcifer_api",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$|^$",
        description="PostgreSQL role of the API's connections (created by the migrations); empty = the URL's user.",
    )
    api_port: int = Field(default=4500, ge=0, le=65535, description="Port of the public gRPC API.")
    engine_starts_in_flight: int = Field(
        default=2,
        ge=1,
        le=64,
        description="StartInstances calls out at once for TriggerFlow; more starts queue and go together in the next "
        "(at least the number of engine replicas, so that each serves).",
    )
    engine_routes_in_flight: int = Field(
        default=2,
        ge=1,
        le=64,
        description="RouteEachEvent calls out at once for IngestEvent; more events queue and go together in the next "
        "(at least the number of engine replicas, so that each serves).",
    )
    api_metrics_port: int = Field(
        default=9500, ge=0, le=65535, description="Port of the API's Prometheus /metrics (plain HTTP); 0 = none."
    )
    kalcifer_admin_token: str = Field(
        default="",
        description="Operator token for TenantService; when empty TenantService refuses every call.",
    )
    rate_limit_per_second: float = Field(
        default=200.0, gt=0, description="Calls a second each tenant may make to the public API (all replicas)."
    )
    rate_limit_burst: int = Field(default=400, ge=1, description="Calls a tenant may make at once above its rate.")
    rate_limit_max_held: int = Field(
        default=200,
        ge=0,
        le=10_000,
        description="Calls per tenant held until their retry time when the tenant calls again while refused (0: none).",
    )
    api_key_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long a verified API key is trusted before it is looked up again (bounds revocation delay).",
    )
    kalcifer_secret_key: SecretKey = SecretStr("")
    kalcifer_previous_secret_keys: PreviousSecretKeys = SecretStr("")
    template_workers: TemplateWorkers = 1
    template_timeout_ms: TemplateTimeoutMs = 1000
    template_memory_mb: TemplateMemoryMb = 256


class EngineSettings(CommonSettings):
    """Settings of `kalcifer-engine`."""

    database_role: str = Field(
        default="kalcifer_engine",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$|^$",
        description="PostgreSQL role of the engine's connections (created by the migrations); empty = the URL's user.",
    )
    engine_port: int = Field(default=4510, ge=0, le=65535, description="Port of the engine gRPC service.")
    engine_metrics_port: int = Field(
        default=9510, ge=0, le=65535, description="Port of the engine's Prometheus /metrics (plain HTTP); 0 = none."
    )
    event_lookback_seconds: float = Field(
        default=5.0,
        ge=0,
        description="A wait_for_event also takes a matching event received up to this long before its node ran.",
    )
    max_steps_per_run: int = Field(default=1000, ge=1, description="Steps one run may take before it fails.")
    retry_backoff_seconds: float = Field(default=2.0, gt=0, description="First retry delay of a retryable node.")
    retry_backoff_max_seconds: float = Field(default=300.0, gt=0, description="Longest retry delay of a node.")
    graph_cache_size: int = Field(default=1024, ge=1, description="Flow versions whose parsed graph is cached.")
    cel_workers: int = Field(
        default=2, ge=1, le=64, description="Worker processes that evaluate CEL expressions (started on first use)."
    )
    cel_timeout_ms: int = Field(
        default=250, ge=1, le=60_000, description="Time budget of one CEL evaluation; over it the step fails."
    )
    cel_memory_mb: int = Field(
        default=256, ge=64, le=65_536, description="Address-space limit of each CEL worker process."
    )
    recovery_interval_seconds: float = Field(
        default=10.0, gt=0, description="How often the engine looks for interrupted work (SPEC 6.9)."
    )
    recovery_overdue_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A pending timer this long overdue was missed by the scheduler; the engine fires it itself.",
    )
    recovery_event_seconds: float = Field(
        default=30.0, gt=0, description="An event stored this long ago and still not routed is routed by recovery."
    )
    recovery_running_seconds: float = Field(
        default=60.0, gt=0, description="An instance left 'running' this long is re-run from its committed state."
    )
    migration_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Instances a MIGRATE_ALL moves per batch (one lease renewal each)."
    )
    migration_call_seconds: float = Field(
        default=3.0, ge=0, description="How long MigrateFlowVersion moves instances before answering in_progress."
    )
    migration_lease_seconds: float = Field(
        default=30.0, gt=0, description="A migration whose replica stopped is taken up by another after this."
    )
    instance_retention_seconds: float = Field(
        default=30 * 86400.0, gt=0, description="Finished instances (and their steps) are pruned after this."
    )


class SchedulerSettings(RedisSettings):
    """Settings of `kalcifer-scheduler`."""

    database_role: str = Field(
        default="kalcifer_scheduler",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$|^$",
        description="PostgreSQL role of the scheduler's connections (made by the migrations); empty = the URL's user.",
    )
    scheduler_port: int = Field(default=4520, ge=0, le=65535, description="Port of the scheduler gRPC service.")
    scheduler_metrics_port: int = Field(
        default=9520, ge=0, le=65535, description="Port of the scheduler's Prometheus /metrics (plain HTTP); 0 = none."
    )
    delayed_resume_concurrency: int = Field(default=20, ge=1, le=1000, description="Jobs of delayed_resume at once.")
    flow_triggers_concurrency: int = Field(default=10, ge=1, le=1000, description="Jobs of flow_triggers at once.")
    maintenance_concurrency: int = Field(default=5, ge=1, le=1000, description="Jobs of maintenance at once.")
    deliveries_concurrency: int = Field(default=10, ge=1, le=1000, description="Jobs of deliveries at once.")
    arq_poll_seconds: float = Field(
        default=0.025, gt=0, le=5, description="How often each arq worker polls its queue (bounds timer lateness)."
    )
    timer_bucket_seconds: float = Field(
        default=0.025, gt=0, le=10, description="Timers due within one bucket fire together (one arq job per bucket)."
    )
    fire_batch_size: int = Field(default=500, ge=1, le=1000, description="Resumes per EngineService.ResumeInstances.")
    sweep_interval_seconds: float = Field(
        default=1.0, gt=0, le=60, description="Period of the overdue-wait sweep (bounds the delay after a Redis loss)."
    )
    sweep_batch_size: int = Field(default=1000, ge=1, le=10000, description="Overdue waits claimed per sweep query.")
    claim_lease_seconds: float = Field(
        default=60.0, gt=0, description="How long a claimed wait or delivery is held before another replica retries."
    )
    resume_retry_seconds: float = Field(
        default=30.0, gt=0, description="How long a resume is retried while the engine is UNAVAILABLE."
    )
    delivery_sweep_interval_seconds: float = Field(default=2.0, gt=0, description="Period of the pending-send sweep.")
    deliveries_queued_per_tenant: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Deliveries of one tenant queued at once: another tenant's send waits behind at most this many.",
    )
    delivery_max_attempts: int = Field(default=5, ge=1, le=100, description="Send attempts before a delivery fails.")
    delivery_backoff_seconds: float = Field(default=5.0, gt=0, description="First retry delay of a failed send.")
    kalcifer_secret_key: SecretKey = SecretStr("")
    kalcifer_previous_secret_keys: PreviousSecretKeys = SecretStr("")
    template_workers: TemplateWorkers = 2
    template_timeout_ms: TemplateTimeoutMs = 1000
    template_memory_mb: TemplateMemoryMb = 256
    stuck_running_seconds: float = Field(
        default=300.0, gt=0, description="A running instance whose lease expired this long ago counts as stuck."
    )
    outbound_max_response_bytes: int = Field(
        default=256 * 1024, ge=1024, le=4 * 1024 * 1024, description="Largest answer an outbound call may get."
    )
    outbound_max_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts of one outbound call (within its deadline) before it fails."
    )
    outbound_backoff_seconds: float = Field(
        default=0.5, gt=0, le=60, description="Delay before an outbound call's second attempt; doubles after."
    )
    outbound_concurrency: int = Field(default=50, ge=1, le=10_000, description="Outbound calls in flight at once.")
    stats_interval_seconds: float = Field(default=10.0, gt=0, description="How often counters are logged.")
    segment_entry_overlap_seconds: float = Field(
        default=300.0,
        ge=0,
        description="segment_entry reads customers changed this long before a run again in the next runs, so a "
        "transaction that wrote a customer and committed up to this long after it started is still seen.",
    )
