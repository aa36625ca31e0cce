"""`make bench`: every scenario, one JSON line each, then one summary line.

Scenarios (issue 5), all in one run so the baselines share the machine's state:
- score_{3,5,10}_agencies: the product, each party its own process on loopback with
  mutual TLS, 1,000 demo citizens' records per agency; sequential p50/p99 and
  throughput at 32 concurrent requests (bench.loadgen: pre-signed requests, separate
  client processes, answers checked after the timed window);
- ceiling_{3,5,10}_agencies: same topology and transport, one sign + one verify per hop
  per question and nothing else (bench.ceiling), with the product's token bytes;
- batched_ceiling_{3,5,10}_agencies: the product's processes, transport and
  micro-batching (its own `BatchDispatcher`), one signature and one verification per
  batch per hop and nothing else; floor_{3,5,10}_agencies: that plus, per question at
  each node, the token's registry signature and opening the sealed subject, for tokens
  not seen before (bench.batched_ceiling, bench.baselines). The three baselines run
  beside the product and all four are measured in turns (sequential turns and
  throughput windows alternate, `LoadPlan.rounds` of each), so all see the same state of
  a shared machine;
- lake_5_agencies: every agency's records in one SQLite table behind one service, one
  indexed SQL sum per query (bench.lake);
- score_5_agencies_{100000,10000000}_records: the product with that many records per
  node (bench.bigdata: filler built by SQLite, queried people imported by node.ingest),
  plus each node process's resident memory (VmRSS) after the queries;
- score_5_agencies_postgres and score_5_agencies_postgres_2_replicas: the nodes and the
  coordinator on a real PostgreSQL server (bench.postgres), the coordinator as one
  replica and as two behind round_robin, measured in turns with the SQLite federation
  (bench.pg_scenarios);
- ingest_one_node (SQLite) and ingest_one_node_postgres: 1,000,000 CSV records into an
  empty node (node.ingest), against a bare executemany / COPY of the same rows into the
  same table, timed in the same run (bench.ingest_bench);
- revocation_propagation: revoke -> coordinator and every node refuse (bench.revocation);
- the batch, audit and statistics benchmarks (bench.batch_bench, with the floor asked on
  the same kind of stream in turns; bench.audit_bench, bench.stats_bench) if present.

The summary line holds issue 15's target ratios (`TARGETS`, and `targets_met`), the
earlier figures, and the load averages before and after the run.

`--quick` runs the same shapes smaller (3 and 5 agencies, 10,000/200,000 records,
50,000 ingested) as a smoke check. Figures are from one run; the machine is shared, so
absolute times are noisy and the ratios to the same run's baselines are what to read.
Results go to bench/results/latest.json, and a chart to bench/results/latest.png when
matplotlib is installed (bench/results/quick.* for --quick).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import chart, ingest_bench, pg_scenarios, scenarios
from bench.scenarios import LoadPlan

RESULTS = Path(__file__).resolve().parent / "results"


def emit(record: dict[str, Any], sink: list[dict[str, Any]]) -> None:
    sink.append(record)
    print(json.dumps(record, sort_keys=True), flush=True)


def _other_benchmarks(quick: bool) -> list[dict[str, Any]]:
    """Lines from the audit and statistics benchmarks, where those modules exist."""
    lines: list[dict[str, Any]] = []
    for name in ("bench.batch_bench", "bench.audit_bench", "bench.stats_bench"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        label = name.removeprefix("bench.")
        try:
            # Their progress output goes to stderr: stdout stays one JSON line per scenario.
            with contextlib.redirect_stdout(sys.stderr):
                produced = module.run(quick)
        except Exception as exc:  # one broken hook must not hide every other figure
            lines.append({"scenario": label, "error": f"{type(exc).__name__}: {exc}"})
            continue
        for line in produced if isinstance(produced, list) else [produced]:
            lines.append({"scenario": label, **line})
    return lines


def _ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


# Issue 15's targets: summary field -> (a lower bound?, the bound).
TARGETS = {
    "throughput_ratio_to_batched_ceiling": (True, 0.5),
    "batch_ratio_to_floor": (True, 0.5),
    "p50_ratio_to_ceiling": (False, 2.0),
    "postgres_throughput_ratio_to_sqlite": (True, 0.7),
    "replicas_throughput_ratio": (True, 0.9),
    "ingest_ratio_to_raw_insert": (True, 0.5),
    "postgres_ingest_ratio_to_copy": (True, 0.5),
}


def summary(results: list[dict[str, Any]], small: int, large: int) -> dict[str, Any]:
    by_name = {r["scenario"]: r for r in results}

    def figure(scenario: str, key: str) -> Any:
        return by_name.get(scenario, {}).get(key)

    product, ceiling = "score_5_agencies", "ceiling_5_agencies"
    grown = f"score_5_agencies_{large}_records"
    base = f"score_5_agencies_{small}_records"
    batch = figure("batch_score_5_agencies", "scores_per_s")
    batched_ceiling, postgres = "batched_ceiling_5_agencies", "score_5_agencies_postgres"
    replicas = "score_5_agencies_postgres_2_replicas"
    ratios = {
        # Issue 15's targets, each against a baseline timed in the same run (TARGETS).
        "throughput_ratio_to_batched_ceiling": _ratio(
            figure(product, "throughput_qps"), figure(batched_ceiling, "throughput_qps")
        ),
        "batch_ratio_to_floor": _ratio(batch, figure("batch_floor_5_agencies", "scores_per_s")),
        "p50_ratio_to_ceiling": _ratio(figure(product, "p50_ms"), figure(ceiling, "p50_ms")),
        "postgres_throughput_ratio_to_sqlite": figure(postgres, "throughput_ratio_to_sqlite"),
        "replicas_throughput_ratio": figure(replicas, "throughput_ratio_to_one_replica"),
        "ingest_ratio_to_raw_insert": figure("ingest_one_node", "ratio_to_raw_insert"),
        "postgres_ingest_ratio_to_copy": figure("ingest_one_node_postgres", "ratio_to_copy"),
    }
    met = {
        name: None
        if ratios[name] is None
        else (ratios[name] >= bound if at_least else ratios[name] <= bound)
        for name, (at_least, bound) in TARGETS.items()
    }
    return {
        "summary": True,
        **ratios,
        "targets_met": met,
        "batched_ceiling_qps_5": figure(batched_ceiling, "throughput_qps"),
        "floor_qps_5": figure("floor_5_agencies", "throughput_qps"),
        "batched_ceiling_p50_ms_5": figure(batched_ceiling, "p50_ms"),
        "floor_batch_scores_per_s": figure("batch_floor_5_agencies", "scores_per_s"),
        "postgres_qps_5": figure(postgres, "throughput_qps"),
        "postgres_sqlite_qps_5": figure(postgres, "sqlite_throughput_qps"),
        "replicas_qps_5": figure(replicas, "throughput_qps"),
        "ingest_raw_insert_per_s": figure("ingest_one_node", "raw_insert_records_per_s"),
        "ingest_per_s_postgres": figure("ingest_one_node_postgres", "records_per_s"),
        "ingest_copy_per_s_postgres": figure("ingest_one_node_postgres", "copy_records_per_s"),
        "throughput_ratio_to_ceiling": _ratio(
            figure(product, "throughput_qps"), figure(ceiling, "throughput_qps")
        ),
        # Every query with a token no party has seen (no remembered verification helps).
        "p50_ratio_to_ceiling_fresh_tokens": _ratio(
            figure(product, "p50_ms_fresh_tokens"), figure(ceiling, "p50_ms_fresh_tokens")
        ),
        "batch_scores_per_s": batch,
        "batch_scores_per_s_reused_tokens": figure(
            "batch_score_5_agencies_reused_tokens", "scores_per_s"
        ),
        "latency_growth_100k_to_10m": _ratio(figure(grown, "p50_ms"), figure(base, "p50_ms")),
        "ingest_per_s": figure("ingest_one_node", "records_per_s"),
        "node_rss_mb_10m": figure(grown, "node_rss_mb_max"),
        "revocation_ms": figure("revocation_propagation", "revocation_ms"),
        # Two-server release (the helper adds the noise) against one aggregator, issue 18.
        "release_ratio_to_single_aggregator": figure(
            "stats_release_5_agencies", "ratio_to_single_aggregator"
        ),
        "throughput_qps_5": figure(product, "throughput_qps"),
        "ceiling_qps_5": figure(ceiling, "throughput_qps"),
        "lake_qps_5": figure("lake_5_agencies", "throughput_qps"),
        "p50_ms_5": figure(product, "p50_ms"),
        "ceiling_p50_ms_5": figure(ceiling, "p50_ms"),
        "lake_p50_ms_5": figure("lake_5_agencies", "p50_ms"),
        "throughput_ratio_to_lake": _ratio(
            figure(product, "throughput_qps"), figure("lake_5_agencies", "throughput_qps")
        ),
        "records_small": small,
        "records_large": large,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small runs, for a smoke check")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    args = parser.parse_args(argv)
    quick = args.quick
    plan = LoadPlan(
        sequential=60 if quick else 300, seconds=1.5 if quick else 4.0, clients=args.clients
    )
    small, large = (10_000, 200_000) if quick else (100_000, 10_000_000)
    load_before = [round(x, 2) for x in os.getloadavg()]
    print(f"load average before: {load_before}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fedscore-bench-")))

        def timed(step: Callable[[], dict[str, Any]]) -> None:
            began = time.perf_counter()
            record = step()
            record["scenario_s"] = round(time.perf_counter() - began, 1)
            emit(record, results)

        server = stack.enter_context(pg_scenarios.bench_server())
        for agencies in (3, 5) if quick else (3, 5, 10):
            began = time.perf_counter()
            federation, _ = scenarios.prepare(root, f"score-{agencies}", agencies)
            paired, revocation = scenarios.paired_scenario(
                root, federation, plan, revocation=agencies == 5
            )
            for record in paired:
                record["scenario_s"] = round(time.perf_counter() - began, 1)
                emit(record, results)
            if revocation is not None:
                emit(revocation, results)
            if agencies == 5:
                timed(lambda: scenarios.lake_scenario(root, federation, plan))  # noqa: B023
                began = time.perf_counter()
                for record in pg_scenarios.lines(root, federation, plan, server):
                    record["scenario_s"] = round(time.perf_counter() - began, 1)
                    emit(record, results)
        for records in (small, large):
            name = f"score-5-{records}"
            began = time.perf_counter()
            federation, build = scenarios.prepare(root, name, 5, filler_records=records)
            figures = scenarios.product_scenario(
                federation,
                plan,
                f"score_5_agencies_{records}_records",
                measure_rss=True,
            )
            figures["scenario_s"] = round(time.perf_counter() - began, 1)
            emit({**figures, "records_per_node": records, "build": build}, results)
            for party_dir in (federation.workdir / "orgs").iterdir():
                for database in party_dir.glob("state.db*"):
                    database.unlink()  # gigabytes each at 10M records: free them now
        for line in ingest_bench.run(50_000 if quick else 1_000_000, root, server):
            emit(line, results)
    for line in _other_benchmarks(quick):
        emit(line, results)
    total = summary(results, small, large)
    total["bench_s"] = round(time.perf_counter() - started, 1)
    # The 1-, 5- and 15-minute load averages before and after: a loaded machine is visible.
    total["load_before"] = load_before
    total["load_after"] = [round(x, 2) for x in os.getloadavg()]
    total["quick"] = quick
    RESULTS.mkdir(exist_ok=True)
    stem = "quick" if quick else "latest"  # a smoke run never overwrites the real figures
    total["chart"] = (
        str(RESULTS / f"{stem}.png")
        if chart.write_chart(results, RESULTS / f"{stem}.png")
        else "not written: matplotlib is not installed"
    )
    emit(total, results)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
