"""`kalcifer dev` (what `make run` runs): the whole product on one machine, with nothing installed but Python.

Order of a run: embedded PostgreSQL and Redis (only when DATABASE_URL / REDIS_URL are unset) -> migrations ->
development tokens -> api, engine and scheduler under the Supervisor -> wait until all three are SERVING on the
gRPC health protocol -> a development tenant -> print how to reach everything -> supervise until Ctrl-C -> stop the
services, then the embedded servers. Files under the data dir (`.kalcifer/` by default):

    postgres/, redis/      the embedded servers (see embedded.py)
    dev.env                generated KALCIFER_ADMIN_TOKEN / KALCIFER_INTERNAL_TOKEN / KALCIFER_SECRET_KEY (the key
                           that seals tenants' provider secrets), reused by later runs
    dev-tenant.json        the development tenant and its raw API key, reused while the database still has it
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

import grpc
from kalcifer_common.logging import get_logger
from rich.console import Console
from rich.text import Text

from kalcifer_cli.embedded import EmbeddedPostgres, EmbeddedRedis
from kalcifer_cli.supervisor import ChildSpec, Supervisor

log = get_logger(__name__)

ADMIN_TOKEN_VAR = "KALCIFER_ADMIN_TOKEN"
INTERNAL_TOKEN_VAR = "KALCIFER_INTERNAL_TOKEN"
SECRET_KEY_VAR = "KALCIFER_SECRET_KEY"


@dataclass(frozen=True)
class ServiceDefinition:
    """One deployable as `kalcifer dev` runs it."""

    name: str
    port_var: str
    default_port: int
    console_script: str
    module: str
    # Its Prometheus /metrics (plain HTTP); 0 in the environment turns it off.
    metrics_port_var: str
    default_metrics_port: int


# start order: the api calls the engine, the engine the scheduler, but each retries, so order only saves log noise
SERVICES: tuple[ServiceDefinition, ...] = (
    ServiceDefinition("engine", "ENGINE_PORT", 4510, "kalcifer-engine", "kalcifer_engine", "ENGINE_METRICS_PORT", 9510),
    ServiceDefinition(
        "scheduler", "SCHEDULER_PORT", 4520, "kalcifer-scheduler", "kalcifer_scheduler", "SCHEDULER_METRICS_PORT", 9520
    ),
    ServiceDefinition("api", "API_PORT", 4500, "kalcifer-api", "kalcifer_api", "API_METRICS_PORT", 9500),
)


class DevError(Exception):
    """`kalcifer dev` (or another CLI command) cannot go on; the message says what to do."""


@dataclass(frozen=True)
class DevConfig:
    """Options of `kalcifer dev`."""

    data_dir: Path = Path(".kalcifer")
    log_dir: Path | None = None  # None: services log to this terminal
    ready_timeout: float = 60.0
    tenant_name: str = "dev"
    grace_seconds: float = 10.0
    # argv per service name, replacing its console script (e.g. to run a service under a profiler)
    commands: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class DevTokens:
    """The operator and service-to-service secrets the services run with."""

    admin: str
    internal: str
    # Seals provider secrets at rest; losing it (deleting dev.env) makes the stored secrets unreadable.
    secret_key: str


@dataclass(frozen=True)
class DevTenant:
    """A tenant and the raw API key created with it (shown once by the API; kept in dev-tenant.json)."""

    tenant_id: str
    api_key_id: str
    raw_key: str


# ---------------------------------------------------------------------------------------------------------------
# configuration


def service_ports(environ: Mapping[str, str]) -> dict[str, int]:
    """Each service's port: API_PORT / ENGINE_PORT / SCHEDULER_PORT when set, else the defaults."""
    ports: dict[str, int] = {}
    for service in SERVICES:
        raw = environ.get(service.port_var, "").strip() or str(service.default_port)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise DevError(f"{service.port_var}={raw!r} is not a TCP port")
        ports[service.name] = int(raw)
    if len(set(ports.values())) != len(ports):
        raise DevError(f"the services need three different ports, got {ports}")
    return ports


def metrics_ports(environ: Mapping[str, str], ports: Mapping[str, int]) -> dict[str, int]:
    """Each service's /metrics port (API_METRICS_PORT / ENGINE_METRICS_PORT / SCHEDULER_METRICS_PORT when set,
    else the defaults; 0 = none), checked against each other and the gRPC `ports`."""
    found: dict[str, int] = {}
    for service in SERVICES:
        raw = environ.get(service.metrics_port_var, "").strip() or str(service.default_metrics_port)
        if not raw.isdigit() or not 0 <= int(raw) < 65536:
            raise DevError(f"{service.metrics_port_var}={raw!r} is not a TCP port (or 0 for no /metrics)")
        found[service.name] = int(raw)
    taken = [*ports.values(), *(port for port in found.values() if port)]
    if len(set(taken)) != len(taken):
        raise DevError(f"every port must differ: gRPC {dict(ports)}, /metrics {found}")
    return found


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of `path` (blank lines and # comments skipped); {} when it does not exist."""
    if not path.exists():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def load_or_create_dev_tokens(path: Path, environ: Mapping[str, str]) -> DevTokens:
    """The tokens from the environment, else from `path`, else freshly generated and saved to `path` (mode 600)."""
    saved = read_env_file(path)
    values: dict[str, str] = {}
    for var in (ADMIN_TOKEN_VAR, INTERNAL_TOKEN_VAR, SECRET_KEY_VAR):
        values[var] = environ.get(var) or saved.get(var) or secrets.token_urlsafe(32 if var == SECRET_KEY_VAR else 24)
    to_save = {var: value for var, value in values.items() if not environ.get(var)}
    if to_save and to_save != {var: saved.get(var) for var in to_save}:
        lines = ["# generated by `kalcifer dev`; reused by later runs (delete to rotate)"]
        lines += [f"{var}={value}" for var, value in to_save.items()]
        _write_private(path, "\n".join(lines) + "\n")
    return DevTokens(
        admin=values[ADMIN_TOKEN_VAR], internal=values[INTERNAL_TOKEN_VAR], secret_key=values[SECRET_KEY_VAR]
    )


def build_service_env(
    environ: Mapping[str, str],
    *,
    database_url: str,
    redis_url: str,
    tokens: DevTokens,
    ports: Mapping[str, int],
    metrics: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """The full environment of the three services: ours on top of the caller's, which wins where it is explicit."""
    env = dict(environ)
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            ADMIN_TOKEN_VAR: tokens.admin,
            INTERNAL_TOKEN_VAR: tokens.internal,
            SECRET_KEY_VAR: tokens.secret_key,
            **{service.port_var: str(ports[service.name]) for service in SERVICES},
            **{service.metrics_port_var: str((metrics or {}).get(service.name, 0)) for service in SERVICES},
        }
    )
    env.setdefault("ENGINE_ADDR", f"localhost:{ports['engine']}")
    env.setdefault("SCHEDULER_ADDR", f"localhost:{ports['scheduler']}")
    env.setdefault("LOG_FORMAT", "console")  # a person reads these
    env.setdefault("LOG_LEVEL", "INFO")
    env.setdefault("PYTHONUNBUFFERED", "1")  # interleave promptly with the other services in one terminal
    return env


def service_command(service: ServiceDefinition) -> list[str]:
    """The service's console script next to this interpreter, else `python -m <module>`."""
    script = Path(sys.executable).parent / service.console_script
    return [str(script)] if script.exists() else [sys.executable, "-m", service.module]


def service_specs(
    env: Mapping[str, str], log_dir: Path | None, commands: Mapping[str, Sequence[str]] | None = None
) -> list[ChildSpec]:
    """One ChildSpec per service (argv from `commands` when given), logging to `log_dir/<name>.log` when given."""
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    commands = commands or {}
    return [
        ChildSpec(
            name=service.name,
            argv=list(commands.get(service.name) or service_command(service)),
            env=env,
            log_path=log_dir / f"{service.name}.log" if log_dir is not None else None,
        )
        for service in SERVICES
    ]


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on localhost:`port` (IPv4 or IPv6)."""
    try:
        with socket.create_connection(("localhost", port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# steps


def run_migrations(database_url: str) -> None:
    """Bring the database schema to the newest migration."""
    # imported late: alembic and the models are heavy, and `kalcifer create-tenant` needs neither
    from kalcifer_common.db.migrate import upgrade_to_head

    upgrade_to_head(database_url)


def wait_until_serving(
    addresses: Mapping[str, str], *, timeout: float, supervisor: Supervisor | None = None, check_timeout: float = 1.0
) -> None:
    """Poll the gRPC health protocol until every address reports SERVING; DevError after `timeout` seconds.

    Between polls the supervisor restarts a service that died while starting.
    """
    from kalcifer_common.healthcheck import check

    deadline = time.monotonic() + timeout
    pending = dict(addresses)
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DevError(
                f"not SERVING after {timeout:.0f}s: {', '.join(f'{n} ({a})' for n, a in pending.items())}; "
                "see the services' logs"
            )
        if supervisor is not None:
            supervisor.poll()
        for name, address in list(pending.items()):
            if check(address, "", timeout_seconds=max(0.1, min(check_timeout, remaining))):
                log.info("service serving", service=name, address=address)
                del pending[name]
        if pending:
            time.sleep(0.2)


def create_tenant(address: str, admin_token: str, name: str, *, timeout: float = 10.0) -> DevTenant:
    """Call TenantService.CreateTenant on the API at `address` with the operator admin token."""
    # generated by `make proto`: imported late so the CLI (and `kalcifer migrate`) works without it
    from kalcifer.v1 import tenant_pb2, tenant_pb2_grpc  # type: ignore[import-not-found,unused-ignore]

    with grpc.insecure_channel(address) as channel:
        stub = tenant_pb2_grpc.TenantServiceStub(channel)
        response = stub.CreateTenant(
            tenant_pb2.CreateTenantRequest(name=name),
            metadata=(("authorization", f"Bearer {admin_token}"),),
            timeout=timeout,
        )
    return DevTenant(
        tenant_id=str(response.tenant.id), api_key_id=str(response.api_key.id), raw_key=str(response.raw_key)
    )


def tenant_exists(address: str, admin_token: str, tenant_id: str, *, timeout: float = 5.0) -> bool | None:
    """Whether GetTenant finds `tenant_id`: True, False (NOT_FOUND), or None when it cannot tell."""
    from kalcifer.v1 import tenant_pb2, tenant_pb2_grpc  # type: ignore[import-not-found,unused-ignore]

    try:
        request = tenant_pb2.GetTenantRequest(id=tenant_id)
    except (AttributeError, ValueError, TypeError):  # a contract without GetTenant{id}: do not guess
        return None
    with grpc.insecure_channel(address) as channel:
        try:
            tenant_pb2_grpc.TenantServiceStub(channel).GetTenant(
                request, metadata=(("authorization", f"Bearer {admin_token}"),), timeout=timeout
            )
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            return False if code == grpc.StatusCode.NOT_FOUND else None
    return True


def ensure_dev_tenant(path: Path, *, address: str, admin_token: str, database_url: str, name: str = "dev") -> DevTenant:
    """The tenant saved in `path` when the database still has it, else a new one (saved to `path`, mode 600)."""
    saved = _read_saved_tenant(path, database_url)
    if saved is not None and tenant_exists(address, admin_token, saved.tenant_id) is not False:
        return saved
    if saved is not None:
        log.info("saved development tenant is gone from the database; creating a new one", tenant_id=saved.tenant_id)
    tenant = create_tenant(address, admin_token, name)
    _write_private(path, json.dumps({**asdict(tenant), "database_url": database_url}, indent=2) + "\n")
    return tenant


def _read_saved_tenant(path: Path, database_url: str) -> DevTenant | None:
    try:
        raw = json.loads(path.read_text())
        tenant = DevTenant(tenant_id=raw["tenant_id"], api_key_id=raw["api_key_id"], raw_key=raw["raw_key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # a tenant saved against another database (e.g. DATABASE_URL now points elsewhere) does not exist here
    if raw.get("database_url", database_url) != database_url:
        return None
    return tenant


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    temporary.chmod(0o600)  # secrets
    temporary.replace(path)


# ---------------------------------------------------------------------------------------------------------------
# the run


@dataclass(frozen=True)
class DevEndpoints:
    """Everything the banner shows."""

    addresses: Mapping[str, str]
    # http://localhost:PORT/metrics of each service that serves one
    metrics_urls: Mapping[str, str]
    database_url: str
    redis_url: str
    embedded: frozenset[str]  # "postgres" / "redis" when we run them
    tokens: DevTokens
    tenant: DevTenant
    data_dir: Path


def run_dev(config: DevConfig, *, environ: Mapping[str, str] | None = None, console: Console | None = None) -> None:
    """Run everything until SIGINT/SIGTERM/SIGHUP, then stop the services, then the embedded servers."""
    env = dict(os.environ if environ is None else environ)
    console = console or Console(highlight=False)
    data_dir = config.data_dir.expanduser().resolve()
    stack = contextlib.ExitStack()
    try:
        with _stop_signals_raise_interrupt():
            _run(config, data_dir, env, console, stack)
    finally:
        # Teardown is bounded (supervisor grace, server stop timeouts); a second Ctrl-C must not cut it short
        # and leave a server behind.
        with _stop_signals_ignored():
            console.print("stopping ...")
            stack.close()
    console.print("stopped.")


def _run(config: DevConfig, data_dir: Path, env: dict[str, str], console: Console, stack: contextlib.ExitStack) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = service_ports(env)
    metrics = metrics_ports(env, ports)
    busy = [f"{name} port {port}" for name, port in ports.items() if port_in_use(port)]
    busy += [f"{name} metrics port {port}" for name, port in metrics.items() if port and port_in_use(port)]
    if busy:
        raise DevError(
            f"already in use: {', '.join(busy)}. Is another `kalcifer dev` running? (set API_PORT / ENGINE_PORT / "
            "SCHEDULER_PORT and API_METRICS_PORT / ENGINE_METRICS_PORT / SCHEDULER_METRICS_PORT to use others)"
        )
    tokens = load_or_create_dev_tokens(data_dir / "dev.env", env)

    embedded: set[str] = set()
    database_url = env.get("DATABASE_URL", "")
    if not database_url:
        console.print(f"starting embedded PostgreSQL in {data_dir / 'postgres'} ...")
        database_url = stack.enter_context(EmbeddedPostgres(data_dir / "postgres")).url
        embedded.add("postgres")
    redis_url = env.get("REDIS_URL", "")
    if not redis_url:
        console.print(f"starting embedded Redis in {data_dir / 'redis'} ...")
        redis_url = stack.enter_context(EmbeddedRedis(data_dir / "redis")).url
        embedded.add("redis")

    console.print("migrating the database ...")
    run_migrations(database_url)

    service_env = build_service_env(
        env, database_url=database_url, redis_url=redis_url, tokens=tokens, ports=ports, metrics=metrics
    )
    supervisor = Supervisor(
        service_specs(service_env, config.log_dir.expanduser().resolve() if config.log_dir else None, config.commands),
        grace_seconds=config.grace_seconds,
    )
    console.print("starting api, engine and scheduler ...")
    stack.enter_context(supervisor)
    addresses = {name: f"localhost:{port}" for name, port in ports.items()}
    wait_until_serving(addresses, timeout=config.ready_timeout, supervisor=supervisor)

    tenant = ensure_dev_tenant(
        data_dir / "dev-tenant.json",
        address=addresses["api"],
        admin_token=tokens.admin,
        database_url=database_url,
        name=config.tenant_name,
    )
    endpoints = DevEndpoints(
        addresses=addresses,
        metrics_urls={name: f"http://localhost:{port}/metrics" for name, port in metrics.items() if port},
        database_url=database_url,
        redis_url=redis_url,
        embedded=frozenset(embedded),
        tokens=tokens,
        tenant=tenant,
        data_dir=data_dir,
    )
    # The banner is printed under the supervisor's signal handlers: a Ctrl-C as soon as it appears stops cleanly.
    supervisor.run(on_started=lambda: print_banner(console, endpoints))


def print_banner(console: Console, endpoints: DevEndpoints) -> None:
    """Print the addresses, URLs, secrets and a ready grpcurl line (never wrapped, so it can be copied)."""
    where = endpoints.data_dir
    with contextlib.suppress(ValueError):
        where = where.relative_to(Path.cwd())
    rows: list[tuple[str, str, str]] = [
        (service.name, endpoints.addresses[service.name], _metrics_note(endpoints, service.name))
        for service in sorted(SERVICES, key=lambda s: s.default_port)
    ]
    rows += [
        ("database", endpoints.database_url, "embedded" if "postgres" in endpoints.embedded else ""),
        ("redis", endpoints.redis_url, "embedded" if "redis" in endpoints.embedded else ""),
        ("admin token", endpoints.tokens.admin, f"{ADMIN_TOKEN_VAR}, saved in {where / 'dev.env'}"),
        ("dev tenant", endpoints.tenant.tenant_id, ""),
        ("API key", endpoints.tenant.raw_key, f"saved in {where / 'dev-tenant.json'}"),
    ]
    api = endpoints.addresses["api"]
    console.print()
    console.print(Text("Kalcifer is running. Ctrl-C stops everything.", style="bold green"))
    for label, value, note in rows:
        line = Text(f"  {label:<12} ", style="bold")
        line.append(value, style="not bold")
        if note:
            line.append(f"  ({note})", style="dim")
        console.print(line, soft_wrap=True)
    console.print()
    console.print("Try:")
    console.print(
        Text(f'  grpcurl -plaintext -H "authorization: Bearer {endpoints.tenant.raw_key}" {api} list'), soft_wrap=True
    )
    console.print()


def _metrics_note(endpoints: DevEndpoints, service: str) -> str:
    url = endpoints.metrics_urls.get(service)
    return f"metrics {url}" if url else "no /metrics"


# ---------------------------------------------------------------------------------------------------------------
# signals


@contextlib.contextmanager
def _stop_signals_raise_interrupt() -> Iterator[None]:
    """While starting up, SIGTERM and SIGHUP act like Ctrl-C (KeyboardInterrupt), so cleanup runs for all three."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _stop_signals_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
