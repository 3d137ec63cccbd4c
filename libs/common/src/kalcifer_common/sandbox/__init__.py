"""CEL evaluation out of the engine's process (SPEC 10): a runaway expression costs its own step, never the engine.

`ExpressionSandbox` hands each evaluation to one of a few worker processes and stops a worker that overruns its
time budget, exceeds its memory limit or crashes; the caller gets `ExpressionRunaway` and the worker is replaced.
Ordinary evaluation errors (a missing field, a type mismatch) are `ExpressionFailed`. Both are `ValueError`s.
"""

from kalcifer_common.sandbox.errors import ExpressionFailed, ExpressionRunaway, SandboxUnavailable
from kalcifer_common.sandbox.evaluation import evaluate_here
from kalcifer_common.sandbox.pool import ExpressionSandbox, SandboxLimits

__all__ = [
    "ExpressionFailed",
    "ExpressionRunaway",
    "ExpressionSandbox",
    "SandboxLimits",
    "SandboxUnavailable",
    "evaluate_here",
]
