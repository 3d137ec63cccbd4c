# syntax=docker/dockerfile:1.7
# One image for all Kalcifer deployables; the container's command picks the service:
#   kalcifer-api (4500) | kalcifer-engine (4510) | kalcifer-scheduler (4520) | kalcifer migrate
# and each service's Prometheus /metrics: 9500 | 9510 | 9520
# Build: docker build -t kalcifer:local .        (BuildKit is required for the cache mounts)

# Builder and runtime must share the interpreter: the venv's `python` links to /usr/local/bin/python3.11.
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_FROZEN=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON=python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

# Same pin as the Makefile.
RUN pip install "uv==0.13.9"

WORKDIR /src

# 1. Third-party runtime dependencies, from the manifests only, so this layer survives source edits.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY services/api/pyproject.toml services/api/pyproject.toml
COPY services/engine/pyproject.toml services/engine/pyproject.toml
COPY services/scheduler/pyproject.toml services/scheduler/pyproject.toml
COPY tools/cli/pyproject.toml tools/cli/pyproject.toml
COPY clients/python/pyproject.toml clients/python/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace

# 2. The protobuf generator lives in its own builder-only venv (/opt/protoc), never in /app/.venv:
#    `uv export` turns uv.lock's dev group into a constraints file, so grpcio-tools and mypy-protobuf (plus their
#    own dependencies) are installed at exactly the versions `make proto` uses, without the rest of the dev group
#    (mypy, ruff, pytest, ...). The runtime image gets the generated code, not the generator.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv export --quiet --frozen --only-group dev --no-emit-project --no-emit-workspace \
        --no-hashes --no-header --no-annotate --output-file /tmp/dev-constraints.txt \
    && uv venv /opt/protoc \
    && uv pip install --python /opt/protoc/bin/python --constraints /tmp/dev-constraints.txt \
        grpcio-tools mypy-protobuf

# 3. Generate the contract exactly like `make proto` (protoc finds the protoc-gen-mypy* plugins on PATH).
COPY protos/ protos/
RUN mkdir -p /src/generated \
    && PATH="/opt/protoc/bin:$PATH" /opt/protoc/bin/python -m grpc_tools.protoc -I protos \
        --python_out=/src/generated --grpc_python_out=/src/generated \
        --mypy_out=/src/generated --mypy_grpc_out=/src/generated \
        $(find protos -name '*.proto' | sort) \
    && test -d /src/generated/kalcifer

# 4. Our own packages, installed as ordinary (non-editable) wheels, so /app/.venv is self-contained. (The SDK's
#    wheel, which the CLI uses, generates its own `kalcifer.v1` from protos/; step 5 puts the full set over it.)
COPY libs/ libs/
COPY services/ services/
COPY tools/ tools/
COPY clients/ clients/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# 5. The kalcifer-common wheel ships only `kalcifer_common`; the generated `kalcifer` package sits beside it in
#    dev mode (see libs/common/pyproject.toml), so put it into the venv's site-packages ourselves. Then prove the
#    venv is complete from outside the source tree: every generated module imports, the health check imports, and
#    each console script's target (module:function) loads, so a broken image fails here and not at `compose up`.
RUN site_packages="$(/app/.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && rm -rf "$site_packages/kalcifer" \
    && cp -r /src/generated/kalcifer "$site_packages/kalcifer" \
    && /app/.venv/bin/python -m compileall -q "$site_packages/kalcifer" \
    && cd / \
    && /app/.venv/bin/python -c "\
import importlib, importlib.metadata as md, pathlib, sys; \
import kalcifer_common.healthcheck; \
root, scripts = pathlib.Path(sys.argv[1]), set(sys.argv[2:]); \
mods = sorted('.'.join(p.relative_to(root.parent).with_suffix('').parts) for p in root.rglob('*.py')); \
[importlib.import_module(m) for m in mods]; \
eps = [ep for ep in md.entry_points(group='console_scripts') if ep.name in scripts]; \
missing = scripts - {ep.name for ep in eps}; \
sys.exit(f'console scripts not installed: {sorted(missing)}') if missing else None; \
[ep.load() for ep in eps]; \
print(f'{len(mods)} generated modules and {len(eps)} console scripts load')" \
        "$site_packages/kalcifer" kalcifer kalcifer-api kalcifer-engine kalcifer-scheduler

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json

RUN groupadd --system --gid 10001 kalcifer \
    && useradd --system --uid 10001 --gid kalcifer --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin kalcifer

# Only the venv: third-party dependencies, our wheels, the generated contract. No sources, no uv, no protoc.
COPY --from=builder /app/.venv /app/.venv

WORKDIR /app
USER kalcifer:kalcifer

EXPOSE 4500 4510 4520 9500 9510 9520

# No HEALTHCHECK here: the image runs three services on three ports (and the one-shot migration), so whoever runs
# it declares the check per service, as docker-compose.yml does with
#   python -m kalcifer_common.healthcheck localhost:<port>   (gRPC health protocol, grpcio only, no extra binary)
CMD ["kalcifer-api"]
