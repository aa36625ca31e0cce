"""Where the score path spends its time: py-spy on the coordinator and one node under load.

    python -m bench.profile_score --py-spy /path/to/py-spy [--agencies 5] [--seconds 8]

Starts the product federation as `make bench` does (separate processes, mutual TLS,
demo data), drives 32 concurrent score queries with bench.loadgen, and samples the
coordinator and the first agency node with `py-spy record --format raw` (py-spy is a
profiler outside the project's dependencies: point --py-spy at it). Prints, per
process, the functions with the largest share of samples (own time and inclusive) and
keeps the raw stacks in the output folder for flame graphs.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import scenarios
from bench.loadgen import measure
from fedscore.apps.client import COORDINATOR_ID


def summarise(raw: Path, top: int) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{raw.name}: {total} samples"]
    lines += [f"  {100 * n / total:5.1f}% own  {f}" for f, n in own.most_common(top)]
    lines += [f"  {100 * n / total:5.1f}% incl {f}" for f, n in inclusive.most_common(top)]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.profile_score", description=__doc__)
    parser.add_argument("--py-spy", required=True, type=Path)
    parser.add_argument("--agencies", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="fedscore-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedscore-profile-run-") as tmp:
        federation, _ = scenarios.prepare(Path(tmp), "profile", args.agencies)
        with scenarios.running(federation) as processes:
            token = scenarios.grant_token(federation)
            target = scenarios.score_target(federation, token, federation.expected_score)
            profiled = {
                COORDINATOR_ID: processes.processes[COORDINATOR_ID].pid,
                federation.agencies[0]: processes.processes[federation.agencies[0]].pid,
            }
            spies = [
                subprocess.Popen(
                    [
                        str(args.py_spy),
                        "record",
                        "--pid",
                        str(pid),
                        "--format",
                        "raw",
                        "--rate",
                        "250",
                        "--duration",
                        str(int(args.seconds) + 4),
                        "--output",
                        str(out / f"{party}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for party, pid in profiled.items()
            ]
            figures = measure(target, sequential=20, seconds=args.seconds)
            for spy in spies:
                spy.wait()
    print(figures.as_dict())
    for party in profiled:
        print("\n".join(summarise(out / f"{party}.txt", args.top)))
    print(f"raw stacks in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
