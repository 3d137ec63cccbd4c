"""`kalcifer-api`: the public gRPC API, configured only by the environment."""

from __future__ import annotations

from kalcifer_common.logging import configure_logging
from kalcifer_common.service import run_service
from kalcifer_common.settings import ApiSettings

from kalcifer_api.app import serve


def main() -> None:
    """Console entry point."""
    settings = ApiSettings()
    configure_logging(level=settings.log_level, fmt=settings.log_format, service="api")
    run_service(serve(settings))


if __name__ == "__main__":
    main()
