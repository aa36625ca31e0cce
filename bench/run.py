"""`make bench`: every scenario, one JSON line each, then one summary line.

Scenarios (issue 5), all in one run so the baselines share the machine's state:
- score_{3,5,10}_agencies: the product, each party its own process on loopback with
  mutual TLS, 1,000 demo citizens' records per agency; sequential p50/p99 and
  throughput at 32 concurrent requests (bench.loadgen: pre-signed requests, separate
  client processes, answers checked after the timed window);
- ceiling_{3,5,10}_agencies: same topology and transport, one sign + one verify per hop
  and nothing else (bench.ceiling), with the product's token bytes; it runs beside the
  product and the two are measured in turns (sequential turns and throughput windows
  alternate, `LoadPlan.rounds` of each), so both see the same state of a shared machine;
- lake_5_agencies: every agency's records in one SQLite table behind one service, one
  indexed SQL sum per query (bench.lake);
- score_5_agencies_{100000,10000000}_records: the product with that many records per
  node (bench.bigdata: filler built by SQLite, queried people imported by node.ingest),
  plus each node process's resident memory (VmRSS) after the queries;
- ingest_one_node: 1,000,000 CSV records into an empty node (node.ingest);
- revocation_propagation: revoke -> coordinator and every node refuse (bench.revocation);
- the audit and statistics benchmarks (bench.audit_bench, bench.stats_bench) if present.

`--quick` runs the same shapes smaller (3 and 5 agencies, 10,000/200,000 records,
50,000 ingested) as a smoke check. Figures are from one run; the machine is shared, so
absolute times are noisy and the ratios to the same run's baselines are what to read.
Results go to bench/results/latest.json, and a chart to bench/results/latest.png when
matplotlib is installed (bench/results/quick.* for --quick).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import chart, scenarios
from bench.scenarios import LoadPlan

RESULTS = Path(__file__).resolve().parent / "results"


def emit(record: dict[str, Any], sink: list[dict[str, Any]]) -> None:
    sink.append(record)
    print(json.dumps(record, sort_keys=True), flush=True)


def ingest_scenario(records: int, root: Path) -> dict[str, Any]:
    """One agency's export of `records` rows (a tenth as many people) into an empty node."""
    from fedscore.apps.demo_data import FIELDS, random_national_id
    from fedscore.apps.federation import init_federation
    from fedscore.runtime.party import load_party
    from node.ingest import ingest_file
    from node.store import NodeStore

    workdir = root / "ingest"
    init_federation(workdir, 3, fast_kdf=True)
    party = load_party(workdir, "trc")
    rng = random.Random(1)
    people = [random_national_id(rng) for _ in range(max(1000, records // 10))]
    codes = sorted(c for c, i in party.policy.indicators.items() if i.agency == "trc")
    path = workdir / "trc-export.csv"
    year = time.gmtime().tm_year
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for n in range(records):
            writer.writerow(
                [
                    people[n % len(people)],
                    codes[n % len(codes)],
                    f"{year - 1}-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00",
                    1 + n % 3,
                    "trc-certifier",
                ]
            )
    store = NodeStore(party.db_url)
    try:
        start = time.perf_counter()
        report = ingest_file(store, path, party.policy, "trc", party.secrets.pseudonym_key)
        elapsed = time.perf_counter() - start
        database = Path(str(store.engine.url.database))
        size = sum(os.path.getsize(p) for p in database.parent.glob(database.name + "*"))
    finally:
        store.dispose()
    return {
        "scenario": "ingest_one_node",
        "records": records,
        "people": len(people),
        "new_records": report.new_records,
        "seconds": round(elapsed, 2),
        "records_per_s": round(records / elapsed),
        "database_mb": round(size / 1e6, 1),
    }


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


def summary(results: list[dict[str, Any]], small: int, large: int) -> dict[str, Any]:
    by_name = {r["scenario"]: r for r in results}

    def figure(scenario: str, key: str) -> Any:
        return by_name.get(scenario, {}).get(key)

    product, ceiling = "score_5_agencies", "ceiling_5_agencies"
    grown = f"score_5_agencies_{large}_records"
    base = f"score_5_agencies_{small}_records"
    batch = figure("batch_score_5_agencies", "scores_per_s")
    return {
        "summary": True,
        "throughput_ratio_to_ceiling": _ratio(
            figure(product, "throughput_qps"), figure(ceiling, "throughput_qps")
        ),
        "p50_ratio_to_ceiling": _ratio(figure(product, "p50_ms"), figure(ceiling, "p50_ms")),
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
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fedscore-bench-") as tmp:
        root = Path(tmp)

        def timed(step: Callable[[], dict[str, Any]]) -> None:
            began = time.perf_counter()
            record = step()
            record["scenario_s"] = round(time.perf_counter() - began, 1)
            emit(record, results)

        for agencies in (3, 5) if quick else (3, 5, 10):
            began = time.perf_counter()
            federation, _ = scenarios.prepare(root, f"score-{agencies}", agencies)
            product, ceiling, revocation = scenarios.paired_scenario(
                root, federation, plan, revocation=agencies == 5
            )
            product["scenario_s"] = ceiling["scenario_s"] = round(time.perf_counter() - began, 1)
            emit(product, results)
            emit(ceiling, results)
            if revocation is not None:
                emit(revocation, results)
            if agencies == 5:
                timed(lambda: scenarios.lake_scenario(root, federation, plan))  # noqa: B023
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
        timed(lambda: ingest_scenario(50_000 if quick else 1_000_000, root))
    for line in _other_benchmarks(quick):
        emit(line, results)
    total = summary(results, small, large)
    total["bench_s"] = round(time.perf_counter() - started, 1)
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
