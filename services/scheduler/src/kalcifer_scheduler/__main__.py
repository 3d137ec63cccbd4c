"""`kalcifer-scheduler`: timers, deliveries and maintenance on arq, configured only by the environment."""

from __future__ import annotations

from kalcifer_common.logging import configure_logging
from kalcifer_common.service import run_service
from kalcifer_common.settings import SchedulerSettings

from kalcifer_scheduler.app import serve


def main() -> None:
    """Console entry point."""
    settings = SchedulerSettings()
    configure_logging(level=settings.log_level, fmt=settings.log_format, service="scheduler")
    run_service(serve(settings))


if __name__ == "__main__":
    main()
