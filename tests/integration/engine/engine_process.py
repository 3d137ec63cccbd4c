"""An engine process with the test node types: `python -m tests.integration.engine.engine_process`.

Configured by the environment like `kalcifer-engine`; the only difference is the registry, so tests that need
separate processes (two replicas, SIGKILL) exercise the real composition root, recovery loop included.
"""

from __future__ import annotations

import asyncio

from kalcifer_common.logging import configure_logging
from kalcifer_common.settings import EngineSettings
from kalcifer_engine.app import serve

from tests.integration.engine.support import registry_with_test_nodes


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    settings = EngineSettings()
    configure_logging(level=settings.log_level, fmt=settings.log_format, service="engine")
    asyncio.run(serve(settings, builtins=registry_with_test_nodes()))


if __name__ == "__main__":
    main()
