"""What a figure was measured on: the machine, its load, the servers and the code, recorded with every run.

The reference machine is shared: the load average before and after a run says how much of it was ours.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any, cast

import asyncpg
import redis

ROOT = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]


def describe_machine() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python, load now and the commit measured."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": load_average(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain")),
    }


async def describe_servers(database_url: str, redis_url: str) -> dict[str, Any]:
    """PostgreSQL and Redis versions, and whether they are the embedded ones or given by TEST_*_URL."""
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        postgres = await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        info = cast(dict[str, Any], client.info("server"))
        redis_version = info.get("redis_version", "unknown")
    finally:
        client.close()
    return {
        "postgresql": postgres,
        "redis": redis_version,
        "origin": "TEST_DATABASE_URL/TEST_REDIS_URL"
        if os.environ.get("TEST_DATABASE_URL") and os.environ.get("TEST_REDIS_URL")
        else "embedded (.kalcifer/test)",
    }
