"""`kalcifer-engine`: node registry and instance execution, configured only by the environment."""

from __future__ import annotations

from kalcifer_common.logging import configure_logging
from kalcifer_common.service import run_service
from kalcifer_common.settings import EngineSettings

from kalcifer_engine.app import serve


def main() -> None:
    """Console entry point."""
    settings = EngineSettings()
    configure_logging(level=settings.log_level, fmt=settings.log_format, service="engine")
    run_service(serve(settings))


if __name__ == "__main__":
    main()
