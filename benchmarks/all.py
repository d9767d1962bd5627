"""``make bench``: every recorded benchmark in turn, each in its own process as a person would run
it, with a progress line and an estimate of the time left after each.

    python -m benchmarks.all [--record]

The estimate is the mean time per benchmark so far times the benchmarks left (``pipeline.progress``):
rough, since the benchmarks differ in length, but it says minutes or hours.
"""

import argparse
import subprocess
import sys

from pipeline.progress import Progress, duration

BENCHMARKS = ("run_all", "labelling", "federated", "mqtt", "scale")
"""In the order ``make bench`` has always run them: the edge and pipeline figures first."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="append each benchmark's figures to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    progress = Progress(total=len(BENCHMARKS))
    for name in BENCHMARKS:
        done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *(["--record"] if args.record else [])])
        if done.returncode != 0:
            print(f"benchmarks.{name} failed (exit {done.returncode}): its output is above", file=sys.stderr)
            return done.returncode
        print(progress.done(f"benchmarks.{name}: ok"), flush=True)
    print(f"{len(BENCHMARKS)} benchmarks in {duration(progress.elapsed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
