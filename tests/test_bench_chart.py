"""The benchmark chart: a legend, plain-number ticks on its log axis, batch scoring and
ingestion panels, and the date of the run in its title; redrawn from a results file."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import chart

RESULTS: list[dict[str, Any]] = [
    {"scenario": "score_5_agencies", "throughput_qps": 625.4, "p50_ms": 5.1, "p99_ms": 10.3},
    {"scenario": "ceiling_5_agencies", "throughput_qps": 413.7, "p50_ms": 3.2, "p99_ms": 4.2},
    {"scenario": "lake_5_agencies", "throughput_qps": 5514.4, "p50_ms": 0.3, "p99_ms": 0.5},
    {"scenario": "ingest_one_node", "records": 1_000_000, "records_per_s": 110_759},
    {"scenario": "batch_score_5_agencies", "batch_scores_per_s": 1033.6},
    {"summary": True, "batch_scores_per_s": 1033.6, "ingest_per_s": 110_759, "quick": False},
]
RUN = datetime(2026, 12, 6, 3, 29, tzinfo=UTC)


def test_the_chart_has_a_legend_plain_ticks_batch_and_ingestion_and_the_date() -> None:
    figure = chart.figure_of(RESULTS, RUN)
    throughput, batch, latency, ingestion = figure.axes
    local = RUN.astimezone()  # shown in this machine's zone, with its offset
    offset = local.strftime("%z")
    title = figure._suptitle.get_text()
    assert f"run of {local:%Y-%m-%d %H:%M} (UTC{offset[:3]}:{offset[3:]})" in title
    legend = [text.get_text() for text in throughput.get_legend().get_texts()]
    assert [label.split(" ", 1)[0] for label in legend] == ["fedscore", "ceiling", "lake"]
    assert [t.get_text() for t in latency.get_legend().get_texts()] == ["p50", "p99"]
    figure.canvas.draw()
    assert throughput.get_yscale() == "log"
    ticks = [t.get_text() for t in throughput.get_yticklabels() if t.get_text()]
    assert ticks and all(t.replace(",", "").isdigit() for t in ticks), ticks  # no 10^x
    assert {"500", "1,000", "5,000"} <= set(ticks)
    assert "Batch" in batch.get_title() and "Ingestion" in ingestion.get_title()
    heights = [bar.get_height() for bar in batch.patches]
    assert heights == [625.4, 1033.6]  # single queries beside one stream, same agencies
    assert [bar.get_height() for bar in ingestion.patches] == [110_759]


def test_a_chart_is_redrawn_from_a_results_file_with_its_date(tmp_path: Path) -> None:
    source = tmp_path / "latest.json"
    source.write_text(json.dumps(RESULTS), encoding="utf-8")
    os.utime(source, (RUN.timestamp(), RUN.timestamp()))
    assert chart.main([str(source)]) == 0
    drawn = tmp_path / "latest.png"
    assert drawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.run_date(RESULTS, datetime.fromtimestamp(source.stat().st_mtime)) == RUN
    dated = [*RESULTS[:-1], {**RESULTS[-1], "date": "2025-01-02T03:04:05+07:00"}]
    assert chart.run_date(dated).isoformat() == "2025-01-02T03:04:05+07:00"
