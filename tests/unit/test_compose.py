"""Static checks of the production shape: docker-compose.yml, the Dockerfile and .dockerignore (SPEC 3).

No Docker needed: the compose file is parsed as YAML, the console scripts it runs are looked up in the workspace
members' pyproject.toml files, and their target modules are read as text from disk (never imported).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# Long-running Kalcifer services: compose service -> (console script, gRPC port).
SERVICES: dict[str, tuple[str, int]] = {
    "api": ("kalcifer-api", 4500),
    "engine": ("kalcifer-engine", 4510),
    "scheduler": ("kalcifer-scheduler", 4520),
}
ONE_SHOT = "migrate"
KALCIFER_CONTAINERS = [*SERVICES, ONE_SHOT]
INFRASTRUCTURE = {"postgres": "postgres:16", "redis": "redis:7"}
ALL_SERVICES = sorted([*INFRASTRUCTURE, *KALCIFER_CONTAINERS])
ALLOWED_COMMANDS = {"kalcifer", "kalcifer-api", "kalcifer-engine", "kalcifer-scheduler"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

# Environment each service needs (SPEC 2-3, 10; the scheduler's queues and the API's rate limits use Redis).
REQUIRED_ENV: dict[str, set[str]] = {
    "migrate": {"DATABASE_URL"},
    "api": {
        "DATABASE_URL",
        "DATABASE_ROLE",
        "ENGINE_ADDR",
        "REDIS_URL",
        "SCHEDULER_ADDR",
        "KALCIFER_ADMIN_TOKEN",
        "KALCIFER_INTERNAL_TOKEN",
        "KALCIFER_SECRET_KEY",
    },
    "engine": {"DATABASE_URL", "DATABASE_ROLE", "SCHEDULER_ADDR", "KALCIFER_INTERNAL_TOKEN"},
    "scheduler": {
        "DATABASE_URL",
        "DATABASE_ROLE",
        "ENGINE_ADDR",
        "REDIS_URL",
        "KALCIFER_INTERNAL_TOKEN",
        "KALCIFER_SECRET_KEY",
    },
}

# The start-up order the stack relies on: service -> {dependency: condition}.
EXPECTED_DEPENDS_ON: dict[str, dict[str, str]] = {
    "migrate": {"postgres": "service_healthy"},
    "api": {"migrate": "service_completed_successfully", "engine": "service_healthy", "redis": "service_healthy"},
    "engine": {"migrate": "service_completed_successfully", "scheduler": "service_started"},
    "scheduler": {"redis": "service_healthy", "migrate": "service_completed_successfully"},
}


@dataclass(frozen=True)
class ConsoleScript:
    """One `[project.scripts]` entry of a workspace member."""

    name: str
    member: Path
    module: str
    function: str

    def module_file(self) -> Path:
        """Where the target module lives in the member's src layout (a module file or a package __init__)."""
        base = self.member / "src" / Path(*self.module.split("."))
        module_file = base.with_suffix(".py")
        return module_file if module_file.exists() or not (base / "__init__.py").exists() else base / "__init__.py"


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    assert isinstance(data.get("services"), dict), "docker-compose.yml has no `services` mapping"
    return data


def service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose()["services"]
    assert name in services, f"docker-compose.yml: service {name!r} is missing (has {sorted(services)})"
    spec = services[name]
    assert isinstance(spec, dict), f"service {name!r}: definition is not a mapping"
    return spec


def argv(name: str) -> list[str]:
    command = service(name).get("command")
    assert command, f"service {name!r}: no `command`"
    words = shlex.split(command) if isinstance(command, str) else [str(word) for word in command]
    assert words, f"service {name!r}: empty `command`"
    return words


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment", {})
    if isinstance(env, list):
        pairs = [str(item).partition("=") for item in env]
        return {key: value for key, _sep, value in pairs}
    assert isinstance(env, dict), f"service {name!r}: `environment` is neither a mapping nor a list"
    return {str(key): str(value) for key, value in env.items()}


def depends_on(name: str) -> dict[str, str]:
    """The service's dependencies and their conditions (the short list form means service_started)."""
    deps = service(name).get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(map(str, deps), "service_started")
    assert isinstance(deps, dict), f"service {name!r}: `depends_on` is neither a mapping nor a list"
    return {str(dep): str((spec or {}).get("condition", "service_started")) for dep, spec in deps.items()}


@dataclass(frozen=True)
class PortBinding:
    """One `ports` entry: where on the host (an address, a range of ports or none) a container port is published."""

    host_ip: str  # "" = every interface
    host_ports: tuple[int, int] | None  # an inclusive range (a fixed port is a range of one); None = Docker picks
    container_port: int


_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def interpolated(value: object) -> str:
    """`value` as Compose reads it when the variables it names are unset: `${NAME:-default}` -> default."""
    return _INTERPOLATION.sub(lambda match: match.group("default") or "", str(value))


def _host_ports(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def published_ports(name: str) -> list[PortBinding]:
    """The service's `ports`, short (`[ip:][host[-host]:]container[/proto]`) or long syntax, interpolated."""
    bindings: list[PortBinding] = []
    for entry in service(name).get("ports", []):
        if isinstance(entry, dict):
            published = interpolated(entry.get("published", ""))
            bindings.append(
                PortBinding(interpolated(entry.get("host_ip", "")), _host_ports(published), int(entry["target"]))
            )
            continue
        parts = interpolated(entry).split("/", 1)[0].rsplit(":", 2)
        container = int(parts[-1])
        host = parts[-2] if len(parts) >= 2 else ""
        host_ip = parts[-3] if len(parts) == 3 else ""
        bindings.append(PortBinding(host_ip, _host_ports(host), container))
    return bindings


@cache
def console_scripts() -> dict[str, ConsoleScript]:
    """Every `[project.scripts]` entry of the workspace members listed in the root pyproject.toml."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[str] = root["tool"]["uv"]["workspace"]["members"]
    scripts: dict[str, ConsoleScript] = {}
    for member in members:
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
        for script, target in project.get("scripts", {}).items():
            module, _, function = target.partition(":")
            assert function, f"{member}/pyproject.toml: script {script!r} target {target!r} names no function"
            assert script not in scripts, f"console script {script!r} is declared by two workspace members"
            scripts[script] = ConsoleScript(script, ROOT / member, module, function)
    return scripts


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions: list[tuple[str, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


# --- commands and entry points -----------------------------------------------------------------------------------


def test_the_stack_has_exactly_the_expected_services() -> None:
    assert sorted(compose()["services"]) == ALL_SERVICES, (
        f"docker-compose.yml: services are {sorted(compose()['services'])}, expected {ALL_SERVICES}"
    )


def test_every_kalcifer_container_runs_a_kalcifer_console_script() -> None:
    for name in sorted(set(compose()["services"]) - set(INFRASTRUCTURE)):
        program = argv(name)[0]
        assert program in ALLOWED_COMMANDS, (
            f"service {name!r}: command starts with {program!r}, not one of {sorted(ALLOWED_COMMANDS)}"
        )


@pytest.mark.parametrize("name", KALCIFER_CONTAINERS)
def test_command_is_a_declared_entry_point_whose_target_exists(name: str) -> None:
    program = argv(name)[0]
    scripts = console_scripts()
    assert program in scripts, f"service {name!r}: {program!r} is not in any workspace member's [project.scripts]"
    script = scripts[program]
    module_file = script.module_file()
    assert module_file.is_file(), (
        f"service {name!r}: {program!r} targets {script.module}:{script.function}, "
        f"but {module_file.relative_to(ROOT)} does not exist"
    )
    source = module_file.read_text()
    defines = re.compile(rf"^(?:async\s+)?def\s+{re.escape(script.function)}\s*\(", re.MULTILINE)
    assert defines.search(source), (
        f"service {name!r}: {module_file.relative_to(ROOT)} does not define `def {script.function}(` "
        f"(target of {program!r})"
    )


def test_the_services_run_their_own_scripts_and_migrate_runs_the_cli() -> None:
    for name, (program, _port) in SERVICES.items():
        assert argv(name) == [program], f"service {name!r}: command is {argv(name)}, expected [{program!r}]"
    assert argv(ONE_SHOT) == ["kalcifer", "migrate"], f"service {ONE_SHOT!r}: command is {argv(ONE_SHOT)}"


# --- health checks, ports, restart policies ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_healthcheck_uses_the_grpc_health_protocol_on_the_services_own_port(name: str) -> None:
    port = SERVICES[name][1]
    check = service(name).get("healthcheck")
    assert isinstance(check, dict), f"service {name!r}: no healthcheck"
    assert not check.get("disable"), f"service {name!r}: healthcheck is disabled"
    test = check.get("test")
    assert isinstance(test, list), f"service {name!r}: healthcheck test must be an exec-form list, got {test!r}"
    assert test[:1] == ["CMD"], f"service {name!r}: healthcheck test must start with CMD (no shell), got {test!r}"
    assert test[1:] == ["python", "-m", "kalcifer_common.healthcheck", f"localhost:{port}"], (
        f"service {name!r}: healthcheck must run `python -m kalcifer_common.healthcheck localhost:{port}`, "
        f"got {test[1:]!r}"
    )
    healthcheck_module = ROOT / "libs/common/src/kalcifer_common/healthcheck.py"
    assert healthcheck_module.is_file(), f"service {name!r}: {healthcheck_module.relative_to(ROOT)} does not exist"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_port_is_published(name: str) -> None:
    port = SERVICES[name][1]
    assert port in {binding.container_port for binding in published_ports(name)}, (
        f"service {name!r}: port {port} is not published (ports: {service(name).get('ports')})"
    )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_does_not_override_its_port(name: str) -> None:
    port = SERVICES[name][1]
    variable = f"{name.upper()}_PORT"
    value = environment(name).get(variable, str(port))
    assert value == str(port), f"service {name!r}: {variable}={value} but the healthcheck and ports use {port}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_long_running_services_restart_unless_stopped(name: str) -> None:
    restart = service(name).get("restart")
    assert restart == "unless-stopped", f"service {name!r}: restart is {restart!r}, expected 'unless-stopped'"


def test_migrate_is_one_shot() -> None:
    restart = service(ONE_SHOT).get("restart")
    # An unquoted `no` is the YAML boolean false, which Compose rejects: it must be the string "no".
    assert restart == "no", f"service {ONE_SHOT!r}: restart is {restart!r}, expected the string 'no'"
    assert "healthcheck" not in service(ONE_SHOT) or service(ONE_SHOT)["healthcheck"].get("disable"), (
        f"service {ONE_SHOT!r}: a one-shot job must not carry a service healthcheck"
    )


# --- scaling out (`docker compose up --scale engine=3`) ------------------------------------------------------------

# Replicas each service must be able to run on one host without a clash.
SCALE = 3


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_replicas_of_a_service_never_clash_on_a_host_port(name: str) -> None:
    for binding in published_ports(name):
        if binding.host_ports is None:
            continue  # Docker picks a free port for each replica
        low, high = binding.host_ports
        assert high - low + 1 >= SCALE, (
            f"service {name!r}: publishes container port {binding.container_port} on host port(s) {low}-{high}: "
            f"a fixed port clashes as soon as a second replica starts; publish a range of {SCALE}+ or none"
        )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_replicas_of_a_service_share_no_name_or_network_namespace(name: str) -> None:
    spec = service(name)
    for fixed in ("container_name", "hostname"):
        assert fixed not in spec, f"service {name!r}: `{fixed}` would be the same for every replica"
    assert spec.get("network_mode") != "host", f"service {name!r}: host networking makes replicas share a port"


def test_the_api_publishes_a_range_from_4500_and_the_internal_services_only_on_loopback() -> None:
    (api,) = [binding for binding in published_ports("api") if binding.container_port == SERVICES["api"][1]]
    assert api.host_ports is not None
    assert api.host_ports[0] == SERVICES["api"][1], f"service 'api': the first replica is not on 4500: {api}"
    for name in ("engine", "scheduler"):
        for binding in published_ports(name):
            assert binding.host_ip == "127.0.0.1", f"service {name!r}: internal port published beyond loopback"


def test_services_find_each_other_by_a_name_every_replica_answers_to() -> None:
    """The addresses name compose services (Docker's DNS answers every replica's address) through the `dns`
    scheme, and internal channels balance round_robin over what it answers (tests/integration/
    test_internal_channels.py shows the spread)."""
    from kalcifer_common.rpc.clients import LOAD_BALANCING_POLICY

    shared = {str(key): str(value) for key, value in compose()["x-kalcifer-env"].items()}
    for variable, target in (("ENGINE_ADDR", "engine"), ("SCHEDULER_ADDR", "scheduler")):
        match = re.fullmatch(r"dns:///(?P<host>[\w-]+):(?P<port>\d+)", shared[variable])
        assert match, f"x-kalcifer-env: {variable}={shared[variable]!r} is not dns:///<service>:<port>"
        assert match.group("host") == target in compose()["services"]
    assert LOAD_BALANCING_POLICY == "round_robin"


def test_migrations_run_once_however_many_replicas() -> None:
    """The schema is migrated by the one-shot `migrate` service, which every long-running service waits for; no
    service migrates on start, so N replicas never race to."""
    for name in SERVICES:
        assert depends_on(name).get(ONE_SHOT) == "service_completed_successfully", name
        assert "migrate" not in argv(name), name
    assert "deploy" not in service(ONE_SHOT), "the migration must not be replicated"


# --- dependencies --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SERVICES)
def test_depends_on_references_existing_services_with_valid_conditions(name: str) -> None:
    services = compose()["services"]
    for dep, condition in depends_on(name).items():
        assert dep in services, f"service {name!r}: depends_on {dep!r}, which is not a service"
        assert dep != name, f"service {name!r}: depends on itself"
        assert condition in CONDITIONS, f"service {name!r}: depends_on {dep!r} with unknown condition {condition!r}"
        if condition == "service_healthy":
            assert "healthcheck" in services[dep], (
                f"service {name!r}: waits for {dep!r} to be healthy, but {dep!r} has no healthcheck"
            )
        if condition == "service_completed_successfully":
            assert services[dep].get("restart", "no") == "no", (
                f"service {name!r}: waits for {dep!r} to complete, but {dep!r} restarts"
            )


@pytest.mark.parametrize("name", sorted(EXPECTED_DEPENDS_ON))
def test_start_up_order(name: str) -> None:
    assert depends_on(name) == EXPECTED_DEPENDS_ON[name], (
        f"service {name!r}: depends_on is {depends_on(name)}, expected {EXPECTED_DEPENDS_ON[name]}"
    )


def test_dependencies_have_no_cycle() -> None:
    graph = {name: set(depends_on(name)) for name in compose()["services"]}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        assert node not in visiting, f"depends_on cycle: {' -> '.join([*visiting, node])}"
        if node in done:
            return
        visiting.append(node)
        for dep in sorted(graph.get(node, ())):
            visit(dep)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


# --- environment ---------------------------------------------------------------------------------------------------


def test_shared_environment_anchor_requires_the_tokens() -> None:
    shared = compose().get("x-kalcifer-env")
    assert isinstance(shared, dict), "docker-compose.yml: no `x-kalcifer-env` mapping (the shared environment)"
    for token in ("KALCIFER_ADMIN_TOKEN", "KALCIFER_INTERNAL_TOKEN", "KALCIFER_SECRET_KEY"):
        value = str(shared.get(token, ""))
        assert re.fullmatch(rf"\$\{{{token}:\?[^}}]*\}}", value), (
            f"x-kalcifer-env: {token} must be the required interpolation ${{{token}:?...}}, got {value!r}"
        )
    assert shared.get("LOG_FORMAT") == "json", "x-kalcifer-env: LOG_FORMAT must be json"


@pytest.mark.parametrize("name", KALCIFER_CONTAINERS)
def test_service_gets_the_shared_environment(name: str) -> None:
    shared = {str(key): str(value) for key, value in compose()["x-kalcifer-env"].items()}
    env = environment(name)
    for key, value in shared.items():
        assert env.get(key) == value, f"service {name!r}: {key} is {env.get(key)!r}, not x-kalcifer-env's {value!r}"
    missing = REQUIRED_ENV[name] - set(env)
    assert not missing, f"service {name!r}: environment lacks {sorted(missing)}"


@pytest.mark.parametrize("name", KALCIFER_CONTAINERS)
def test_addresses_point_at_the_right_service_and_port(name: str) -> None:
    env = environment(name)
    for variable, target in (("ENGINE_ADDR", "engine"), ("SCHEDULER_ADDR", "scheduler")):
        if variable in env:
            # the dns scheme: the name resolves to every replica, and internal channels balance over them
            expected = f"dns:///{target}:{SERVICES[target][1]}"
            assert env[variable] == expected, f"service {name!r}: {variable}={env[variable]!r}, expected {expected!r}"
    database_url = env.get("DATABASE_URL", "")
    assert re.fullmatch(r"postgresql://[^@/]+@postgres:5432/\S+", database_url), (
        f"service {name!r}: DATABASE_URL {database_url!r} does not point at postgres:5432"
    )


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_service_runs_as_its_own_database_role(name: str) -> None:
    """SPEC 10: the role the migration created for the service, the same one its settings default to."""
    from kalcifer_common.settings import ApiSettings, EngineSettings, SchedulerSettings

    defaults = {"api": ApiSettings, "engine": EngineSettings, "scheduler": SchedulerSettings}
    assert environment(name).get("DATABASE_ROLE") == f"kalcifer_{name}" == defaults[name]().database_role


def test_only_the_scheduler_and_the_api_get_redis() -> None:
    users = {"scheduler", "api"}
    for name in KALCIFER_CONTAINERS:
        if name not in users:
            assert "REDIS_URL" not in environment(name), f"service {name!r}: gets REDIS_URL, but needs no Redis"
    for name in sorted(users):
        redis_url = environment(name).get("REDIS_URL", "")
        assert redis_url.startswith("redis://redis:6379"), f"service {name!r}: REDIS_URL {redis_url!r} is not redis"


# --- infrastructure ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INFRASTRUCTURE))
def test_infrastructure_images_and_healthchecks(name: str) -> None:
    spec = service(name)
    assert spec.get("image") == INFRASTRUCTURE[name], (
        f"service {name!r}: image is {spec.get('image')!r}, expected {INFRASTRUCTURE[name]!r}"
    )
    test = " ".join(map(str, (spec.get("healthcheck") or {}).get("test", [])))
    probe = {"postgres": "pg_isready", "redis": "redis-cli ping"}[name]
    assert probe in test, f"service {name!r}: healthcheck {test!r} does not run {probe!r}"


def test_postgres_keeps_its_data_in_a_named_volume() -> None:
    volumes = [str(volume) for volume in service("postgres").get("volumes", [])]
    mounts = [volume for volume in volumes if volume.endswith(":/var/lib/postgresql/data")]
    assert mounts, f"service 'postgres': no volume on /var/lib/postgresql/data (volumes: {volumes})"
    source = mounts[0].split(":", 1)[0]
    assert source in (compose().get("volumes") or {}), f"service 'postgres': volume {source!r} is not declared"


@pytest.mark.parametrize("name", KALCIFER_CONTAINERS)
def test_kalcifer_containers_build_from_this_dockerfile(name: str) -> None:
    build = service(name).get("build")
    if isinstance(build, str):
        build = {"context": build}
    assert isinstance(build, dict), f"service {name!r}: has no `build` (build: {build!r})"
    context = build.get("context")
    assert context in (".", "./"), f"service {name!r}: not built from the repository root (build: {build!r})"
    dockerfile = build.get("dockerfile", "Dockerfile")
    assert dockerfile == "Dockerfile", f"service {name!r}: built from {dockerfile!r}, not ./Dockerfile"


# --- Dockerfile and .dockerignore ----------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_the_final_stage_is_not_root() -> None:
    instructions = dockerfile_instructions()
    stages = [index for index, (keyword, _args) in enumerate(instructions) if keyword == "FROM"]
    assert len(stages) >= 2, f"Dockerfile: {len(stages)} FROM stage(s), expected a builder and a runtime stage"
    users = [args for keyword, args in instructions[stages[-1] :] if keyword == "USER"]
    assert users, "Dockerfile: the final stage has no USER line, so it runs as root"
    user = users[-1].split(":", 1)[0].strip()
    assert user not in ("root", "0", ""), f"Dockerfile: the final stage runs as {users[-1]!r}"


def test_dockerfile_runtime_stage_puts_the_venv_first_on_path() -> None:
    instructions = dockerfile_instructions()
    last_from = max(index for index, (keyword, _args) in enumerate(instructions) if keyword == "FROM")
    env = " ".join(args for keyword, args in instructions[last_from:] if keyword == "ENV")
    assert re.search(r"\bPATH=/app/\.venv/bin:\$PATH\b", env), "Dockerfile: runtime PATH does not start with the venv"
    copies = [args for keyword, args in instructions[last_from:] if keyword == "COPY"]
    assert copies, "Dockerfile: the runtime stage copies nothing from the builder"
    assert all(args.startswith("--from=") for args in copies), (
        f"Dockerfile: the runtime stage copies from the build context, not only from the builder: {copies}"
    )


def test_dockerfile_installs_from_the_lockfile_with_the_makefiles_uv() -> None:
    text = DOCKERFILE.read_text()
    makefile_pin = re.search(r"uv==([\w.]+)", (ROOT / "Makefile").read_text())
    dockerfile_pin = re.search(r"uv==([\w.]+)", text)
    assert makefile_pin, "Makefile: no uv==<version> pin"
    assert dockerfile_pin, "Dockerfile: uv is not pinned (uv==<version>)"
    assert dockerfile_pin.group(1) == makefile_pin.group(1), (
        f"Dockerfile pins uv=={dockerfile_pin.group(1)}, the Makefile uv=={makefile_pin.group(1)}"
    )
    syncs = re.findall(r"uv sync[^\n]*", text)
    assert syncs, "Dockerfile: never runs `uv sync`"
    for sync in syncs:
        assert "--frozen" in sync, f"Dockerfile: `{sync.strip()}` may re-resolve instead of installing uv.lock"
        assert "--no-dev" in sync, f"Dockerfile: `{sync.strip()}` would install the dev group into the image"
    assert any("--no-editable" in sync for sync in syncs), "Dockerfile: our packages are installed editable"


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", ".kalcifer", ".git", "libs/common/src/kalcifer", "**/__pycache__", ".env"):
        assert required in patterns, f".dockerignore: {required!r} is not excluded"
