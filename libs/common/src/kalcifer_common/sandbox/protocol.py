"""Frames between the engine and a worker on their socket: a 4-byte big-endian length, then orjson.

Request: `[kind, source, variables]`, kind `cel` (evaluate the expression `source`), `jinja` (render every
templated string in the JSON value `source`) or `jinja_check` (compile the named templates of the object `source`
and answer the problems by name; `variables` is empty). Answer: `[true, value]` or `[false, reason]`. One frame in
flight per worker.
"""

from __future__ import annotations

import struct
from typing import Final

HEADER: Final = struct.Struct(">I")
# A frame larger than this is refused before it is sent (contexts are bounded far below it).
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
# What a request asks the worker to do.
CEL: Final = "cel"
JINJA: Final = "jinja"
JINJA_CHECK: Final = "jinja_check"
# The first frame a worker sends: it has imported CEL and limited itself, and waits for work.
READY: Final = b"ready"


def frame(payload: bytes) -> bytes:
    """`payload` with its length in front."""
    return HEADER.pack(len(payload)) + payload
