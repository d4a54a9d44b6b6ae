"""Run the simulation of tests/simulation.py for as long as it is given, seed after seed, and print the
seed of every failure so that it can be replayed (--seed N --seeds 1).

    python tools/simulate.py [--minutes 10] [--steps 700] [--seed 1000] [--seeds N]
"""

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embedded.mongomock_compat import patch_mongomock  # noqa: E402
from tests.simulation import InvariantViolation, simulate  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="stop starting seeds after this long (default 10)")
    parser.add_argument("--steps", type=int, default=700, help="moves of the world per seed (default 700)")
    parser.add_argument("--seed", type=int, default=1000, help="the first seed (default 1000)")
    parser.add_argument("--seeds", type=int, help="at most this many seeds (default: as many as the time allows)")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    patch_mongomock()
    logging.disable(logging.CRITICAL)  # the job logs every injected fault; the violations are what matters
    deadline = time.monotonic() + args.minutes * 60
    seed, tried, failed, steps = args.seed, 0, [], 0
    while time.monotonic() < deadline and (args.seeds is None or tried < args.seeds):
        try:
            simulate(seed, args.steps)
            steps += args.steps
        except InvariantViolation as violation:
            failed.append(seed)
            print(f"FAILED {violation}\n", flush=True)
        tried += 1
        seed += 1
    print(f"{tried} seed(s) from {args.seed}, {steps:,} steps without a violation; failed seeds: "
          f"{', '.join(map(str, failed)) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
