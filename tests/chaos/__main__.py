"""`python -m tests.chaos`: one chaos run; exits 1 when anything was lost, duplicated or left wrong."""

from __future__ import annotations

import argparse
import os
import secrets

from kalcifer_common.logging import configure_logging

from tests.chaos.run import ChaosOptions, run


def main() -> int:
    """Parse the options (the seed also from CHAOS_SEED), run, return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument(
        "--seed",
        type=int,
        default=int(os.environ.get("CHAOS_SEED") or secrets.randbelow(1_000_000)),
        help="seed of the fault moments and down times (default: CHAOS_SEED, else random; printed either way)",
    )
    parser.add_argument("--rate", type=float, default=ChaosOptions.rate, help="instances started a second")
    args = parser.parse_args()
    configure_logging(level="WARNING", fmt="console")
    return run(ChaosOptions(seed=args.seed, rate=args.rate))


if __name__ == "__main__":
    raise SystemExit(main())
