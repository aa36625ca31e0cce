"""Where the score path spends its time: py-spy on the coordinator and one node under load.

    python -m bench.profile_score --py-spy /path/to/py-spy [--agencies 5] [--seconds 8]
        [--scenario score|batch|postgres|floor-batch]

Starts the product federation as `make bench` does (separate processes, mutual TLS,
demo data) and samples the coordinator and the first agency node with `py-spy record
--format raw` (py-spy is a profiler outside the project's dependencies: point --py-spy
at it) while it is loaded: `score` drives 32 concurrent score queries with
bench.loadgen; `batch` streams ScoreBatch queries, each with a fresh token, as
bench.batch_bench does; `postgres` is `score` on the PostgreSQL federation of
bench.pg_scenarios (one replica asked); `floor-batch` is `batch` against the floor
(bench.batched_ceiling --floor). Prints, per process, the functions with the largest
share of samples (own time and inclusive) and keeps the raw stacks in the output folder
for flame graphs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import baselines, batch_bench, pg_scenarios, scenarios
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
    parser.add_argument(
        "--scenario", choices=("score", "batch", "postgres", "floor-batch"), default="score"
    )
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="fedscore-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedscore-profile-run-") as tmp:
        root = Path(tmp)
        federation, _ = scenarios.prepare(root, "profile", args.agencies)
        with contextlib.ExitStack() as stack:
            processes = stack.enter_context(scenarios.running(federation))
            pids = {COORDINATOR_ID: processes.processes[COORDINATOR_ID].pid}
            pids.update({a: processes.processes[a].pid for a in federation.agencies})
            load: Callable[[], dict[str, Any]]
            if args.scenario in ("batch", "floor-batch"):
                asked = federation
                if args.scenario == "floor-batch":
                    floor = stack.enter_context(
                        baselines.running(
                            root, args.agencies, None, federation.data.demo_citizen, floor=True
                        )
                    )
                    asked = scenarios.Federation(
                        floor.workdir, floor.agencies, federation.data, floor.portal
                    )
                    pids = {COORDINATOR_ID: floor.pids["coordinator"]}
                    pids.update({a: floor.pids[a] for a in floor.agencies})
                count = int(1500 * args.seconds)

                def load() -> dict[str, Any]:
                    return batch_bench.measure(asked, pids, count, count)

            else:
                if args.scenario == "postgres":
                    server = stack.enter_context(pg_scenarios.bench_server())
                    assert server is not None, "no PostgreSQL server can be had here"
                    replicated = pg_scenarios.prepare_postgres(root, args.agencies, server, 5)
                    pids = stack.enter_context(pg_scenarios.running_replicated(replicated))
                    pids[COORDINATOR_ID] = pids.pop("coordinator")
                    federation = replicated.federation
                token = scenarios.grant_token(federation)
                target = scenarios.score_target(federation, token, federation.expected_score)
                if args.scenario == "postgres":
                    target = dataclasses.replace(target, endpoint=replicated.first)

                def load() -> dict[str, Any]:
                    return measure(target, sequential=20, seconds=args.seconds).as_dict()

            profiled = {COORDINATOR_ID: pids[COORDINATOR_ID], "node": pids[federation.agencies[0]]}
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
                        "--output",
                        str(out / f"{party}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for party, pid in profiled.items()
            ]
            figures = load()
            for spy in spies:  # py-spy writes what it sampled when interrupted
                spy.send_signal(signal.SIGINT)
                spy.wait()
    print(figures)
    for party in profiled:
        print("\n".join(summarise(out / f"{party}.txt", args.top)))
    print(f"raw stacks in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
