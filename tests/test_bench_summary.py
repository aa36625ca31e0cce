"""`make bench`'s summary line: issue 15's target ratios are there, each from the baseline
timed in the same run, judged against its bound, beside every earlier field."""

from __future__ import annotations

from typing import Any

from bench.run import TARGETS, summary

EARLIER_FIELDS = {
    "throughput_ratio_to_ceiling",
    "p50_ratio_to_ceiling",
    "p50_ratio_to_ceiling_fresh_tokens",
    "batch_scores_per_s",
    "batch_scores_per_s_reused_tokens",
    "latency_growth_100k_to_10m",
    "ingest_per_s",
    "node_rss_mb_10m",
    "revocation_ms",
    "throughput_qps_5",
    "ceiling_qps_5",
    "lake_qps_5",
    "p50_ms_5",
    "ceiling_p50_ms_5",
    "lake_p50_ms_5",
    "throughput_ratio_to_lake",
    "records_small",
    "records_large",
}


def _results() -> list[dict[str, Any]]:
    return [
        {"scenario": "score_5_agencies", "throughput_qps": 600.0, "p50_ms": 6.0},
        {"scenario": "ceiling_5_agencies", "throughput_qps": 400.0, "p50_ms": 4.0},
        {"scenario": "batched_ceiling_5_agencies", "throughput_qps": 1500.0, "p50_ms": 4.5},
        {"scenario": "floor_5_agencies", "throughput_qps": 1400.0, "p50_ms": 4.6},
        {"scenario": "batch_score_5_agencies", "scores_per_s": 900.0},
        {"scenario": "batch_floor_5_agencies", "scores_per_s": 1500.0},
        {"scenario": "score_5_agencies_postgres", "throughput_ratio_to_sqlite": 0.75},
        {
            "scenario": "score_5_agencies_postgres_2_replicas",
            "throughput_ratio_to_one_replica": 0.85,
        },
        {"scenario": "ingest_one_node", "records_per_s": 90_000, "ratio_to_raw_insert": 0.6},
        {"scenario": "ingest_one_node_postgres", "ratio_to_copy": 0.4},
    ]


def test_the_summary_holds_every_target_ratio_and_every_earlier_field() -> None:
    line = summary(_results(), 100_000, 10_000_000)
    assert set(TARGETS) == {
        "throughput_ratio_to_batched_ceiling",
        "batch_ratio_to_floor",
        "p50_ratio_to_ceiling",
        "postgres_throughput_ratio_to_sqlite",
        "replicas_throughput_ratio",
        "ingest_ratio_to_raw_insert",
        "postgres_ingest_ratio_to_copy",
    }
    assert set(TARGETS) | EARLIER_FIELDS <= set(line)
    assert line["throughput_ratio_to_batched_ceiling"] == 0.4
    assert line["batch_ratio_to_floor"] == 0.6
    assert line["p50_ratio_to_ceiling"] == 1.5
    assert line["postgres_throughput_ratio_to_sqlite"] == 0.75
    assert line["replicas_throughput_ratio"] == 0.85
    assert line["ingest_ratio_to_raw_insert"] == 0.6
    assert line["postgres_ingest_ratio_to_copy"] == 0.4
    assert line["targets_met"] == {
        "throughput_ratio_to_batched_ceiling": False,
        "batch_ratio_to_floor": True,
        "p50_ratio_to_ceiling": True,
        "postgres_throughput_ratio_to_sqlite": True,
        "replicas_throughput_ratio": False,
        "ingest_ratio_to_raw_insert": True,
        "postgres_ingest_ratio_to_copy": False,
    }


def test_a_missing_scenario_leaves_its_ratio_unjudged() -> None:
    line = summary([], 100_000, 10_000_000)
    assert all(line[name] is None for name in TARGETS)
    assert all(met is None for met in line["targets_met"].values())
