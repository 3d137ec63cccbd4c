"""What an evaluation can end in besides a value."""

from __future__ import annotations

from kalcifer_common.errors import Unavailable


class ExpressionFailed(ValueError):
    """The expression ran and could not produce a value for this data (missing field, wrong type, ...)."""


class ExpressionRunaway(ExpressionFailed):
    """The expression was stopped: it ran over its time budget, over its memory limit, or crashed its evaluator."""


class SandboxUnavailable(Unavailable):
    """No evaluator process could be had in time (none would start); the work is retried, not failed."""
