"""How arq jobs are written to Redis: JSON, never pickle.

arq pickles jobs by default, so whoever can write to the scheduler's Redis could make it run code. Our jobs carry
only ids, numbers and strings, so JSON holds them all; a job that is not valid JSON (a pickled job left by an older
release, or anything else) fails to decode and is dropped by arq, and the sweeps re-create the work it stood for
from PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import orjson


def encode_job(job: dict[str, Any]) -> bytes:
    """A job (function, args, kwargs, tries, enqueue time) as JSON bytes."""
    return orjson.dumps(job)


def decode_job(raw: bytes) -> dict[str, Any]:
    """A job from JSON bytes; raises ValueError (orjson.JSONDecodeError) for anything else, pickle included."""
    job: dict[str, Any] = orjson.loads(raw)
    return job


# Keyword arguments for `arq.create_pool` and `arq.worker.Worker`.
JSON_JOBS: dict[str, Any] = {"job_serializer": encode_job, "job_deserializer": decode_job}
