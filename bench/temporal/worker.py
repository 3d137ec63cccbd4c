"""The Temporal worker of the benchmark, a process of its own like our engine: `python -m bench.temporal.worker
ADDRESS`. Default worker options (what a user starts with); it runs until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

from temporalio.client import Client
from temporalio.worker import Worker

from bench.temporal.workflows import TASK_QUEUE, SleepUntil, WaitForResume


async def serve(address: str) -> None:
    """Poll TASK_QUEUE until SIGTERM or SIGINT."""
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(client, task_queue=TASK_QUEUE, workflows=[WaitForResume, SleepUntil]):
        print("worker polling", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
