"""Kalcifer through its public gRPC API, driven by a separate load process (issue #11); see benchmark.py."""

from bench.public_api.benchmark import run

__all__ = ["run"]
