"""Run one benchmark alternately from two source trees (a "before" checkout and the
working tree), so both see the same load: the order flips every round, and each run's
report is kept whole. For before/after figures of a change on a shared machine.

    git archive <base> | tar -x -C /tmp/base
    .venv/bin/python benchmarks/ab_trees.py --before /tmp/base --after . --rounds 2 \\
        -- predict_request_profile.py --calls 200 --rounds 3

Reports go to --out (one file per tree, round and benchmark), with the load average at
the start and end of each run; the figures are read from them by hand or by script.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, type=Path)
    parser.add_argument("--after", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ab_trees"))
    parser.add_argument("benchmark", nargs=argparse.REMAINDER,
                        help="-- <script in benchmarks/> [its arguments]")
    args = parser.parse_args()
    command = [a for a in args.benchmark if a != "--"]
    script, extra = command[0], command[1:]
    args.out.mkdir(parents=True, exist_ok=True)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for index in range(args.rounds):
        order = list(trees) if index % 2 == 0 else list(reversed(trees))
        for name in order:
            tree = trees[name]
            stem = f"{Path(script).stem}-{name}-{index}"
            result = args.out / f"{stem}.md"
            env = {**os.environ, "PYTHONPATH": str(tree)}
            load_start = os.getloadavg()
            started = time.perf_counter()
            completed = subprocess.run(
                [sys.executable, str(tree / "benchmarks" / script), *extra,
                 "--result", str(result)],
                cwd=tree, env=env, capture_output=True, text=True)
            with result.open("a") as out:
                out.write(f"\n[{name}, round {index}] load average at start "
                          f"{load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}; "
                          f"{time.perf_counter() - started:.0f} s; rc {completed.returncode}\n")
                if completed.returncode:
                    out.write(completed.stderr[-3000:])
            print(result.read_text(), flush=True)


if __name__ == "__main__":
    main()
