"""bench/results/<run>.png: the benchmark's figures in four panels (only if matplotlib imports).

1. Throughput of every load scenario (32 concurrent single queries), on a log axis whose
   ticks are plain numbers (10, 20, 50, 100, ...), coloured by kind with a legend:
   fedscore itself, the signature-only ceiling, the central lake.
2. Sequential latency, p50 and p99, of the same scenarios.
3. Batch scoring: scores per second through one ScoreBatch stream (every scenario with
   `batch_scores_per_s`) beside single queries to the same five agencies.
4. Ingestion: records per second into a node (every scenario with `records_per_s`).

The title carries the date of the run. Regenerate a chart from a results file without
running the bench again: `python -m bench.chart bench/results/latest.json` (the date is
the file's modification time unless the summary line names one as "date").
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

# Product scenarios, the signature-only ceiling and the central lake.
_KINDS = {
    "score": ("#2a7ab0", "fedscore (federated, signed, logged)"),
    "ceiling": ("#e08a1e", "ceiling (one signature per hop, nothing else)"),
    "lake": ("#4a9a4a", "lake (one central table)"),
}
_OTHER = ("#777777", "other")
_BATCH = "#7a4ab0"
_INGEST = "#b04a6a"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _kind(name: str) -> tuple[str, str]:
    return _KINDS.get(name.split("_", 1)[0], _OTHER)


def _plain_log_axis(axis: Any) -> None:
    """A log y axis whose ticks read as plain numbers: 10, 20, 50, 100, 200, 500, 1,000."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_yscale("log")
    axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axis.yaxis.set_minor_formatter(NullFormatter())


def _names(axis: Any, names: Sequence[str]) -> None:
    axis.set_xticks(list(range(len(names))))
    axis.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    axis.grid(axis="y", alpha=0.3)


def _throughput(axis: Any, loads: list[dict[str, Any]]) -> None:
    names = [str(r["scenario"]) for r in loads]
    kinds = [_kind(name) for name in names]
    bars = axis.bar(range(len(names)), [r["throughput_qps"] for r in loads],
                    color=[colour for colour, _ in kinds])  # fmt: skip
    axis.bar_label(bars, fmt="{:,.0f}", fontsize=7)
    _plain_log_axis(axis)  # the lake is an order of magnitude above the rest
    lowest = min(float(r["throughput_qps"]) for r in loads)
    axis.set_ylim(bottom=10 ** math.floor(math.log10(max(lowest, 1.0))))  # bars from 10^n
    axis.set_ylabel("queries / s (log scale)")
    axis.set_title("Throughput, 32 concurrent single queries", fontsize=10)
    _names(axis, names)
    from matplotlib.patches import Patch

    shown = dict.fromkeys(kinds)  # the kinds present, in order
    axis.legend(handles=[Patch(color=c, label=label) for c, label in shown], fontsize=7)


def _latency(axis: Any, loads: list[dict[str, Any]]) -> None:
    names = [str(r["scenario"]) for r in loads]
    width = 0.4
    positions = range(len(names))
    axis.bar([p - width / 2 for p in positions], [r["p50_ms"] for r in loads], width,
             label="p50", color="#2a7ab0")  # fmt: skip
    axis.bar([p + width / 2 for p in positions], [r["p99_ms"] for r in loads], width,
             label="p99", color="#9ec5e0")  # fmt: skip
    axis.set_ylabel("ms")
    axis.set_title("Sequential latency of one query", fontsize=10)
    axis.legend(fontsize=7)
    _names(axis, names)


def _rates(axis: Any, rows: list[tuple[str, float, str]], unit: str, title: str) -> None:
    """Bars of (label, rate, colour), each labelled with its value."""
    if not rows:
        axis.text(0.5, 0.5, "not measured in this run", ha="center", va="center")
        axis.set_axis_off()
        return
    bars = axis.bar(range(len(rows)), [rate for _, rate, _ in rows],
                    color=[colour for _, _, colour in rows])  # fmt: skip
    axis.bar_label(bars, fmt="{:,.0f}", fontsize=7)
    axis.set_xlim(-0.5 - 0.5 * (len(rows) < 3), len(rows) - 0.5 + 0.5 * (len(rows) < 3))
    axis.set_ylabel(unit)
    axis.set_title(title, fontsize=10)
    from matplotlib.ticker import FuncFormatter

    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    _names(axis, [label for label, _, _ in rows])


def _batch_rows(results: list[dict[str, Any]]) -> list[tuple[str, float, str]]:
    rows = [
        (f"{r['scenario']} (one stream)", float(r["batch_scores_per_s"]), _BATCH)
        for r in results
        if "batch_scores_per_s" in r and "scenario" in r
    ]
    single = [r for r in results if r.get("scenario") == "score_5_agencies"]
    if rows and single:  # the same five agencies, asked one question per call
        label, rate = "score_5_agencies (single queries)", single[0]["throughput_qps"]
        rows.insert(0, (label, float(rate), _KINDS["score"][0]))
    return rows


def _ingest_rows(results: list[dict[str, Any]]) -> list[tuple[str, float, str]]:
    rows = []
    for r in results:
        if "records_per_s" in r and "scenario" in r:
            label = f"{r['scenario']} ({r['records']:,} records)" if "records" in r else ""
            rows.append((label or str(r["scenario"]), float(r["records_per_s"]), _INGEST))
    return rows


def run_date(results: list[dict[str, Any]], default: datetime | None = None) -> datetime:
    """When the run was: the summary's "date" if it names one, else `default`, else now."""
    for line in results:
        if line.get("summary") and isinstance(line.get("date"), str):
            return datetime.fromisoformat(line["date"])
    return (default or datetime.now()).astimezone()


def figure_of(results: list[dict[str, Any]], when: datetime | None = None) -> Any:
    """The four panels of the run `results` (of the date `when`), or None if nothing to draw."""
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    loads = [r for r in results if "throughput_qps" in r and "p50_ms" in r]
    if not loads:
        return None
    width = max(12.0, len(loads) * 1.2)
    figure, ((top, right), (bottom, corner)) = plt.subplots(
        2, 2, figsize=(width, 10), gridspec_kw={"width_ratios": [3, 1]}
    )
    _throughput(top, loads)
    _latency(bottom, loads)
    _rates(right, _batch_rows(results), "scores / s", "Batch scoring (ScoreBatch)")
    _rates(corner, _ingest_rows(results), "records / s", "Ingestion into one node")
    moment = run_date(results, when)
    offset = moment.strftime("%z")
    date = f"{moment:%Y-%m-%d %H:%M} (UTC{offset[:3]}:{offset[3:]})"
    quick = any(r.get("summary") and r.get("quick") for r in results)
    figure.suptitle(f"fedscore benchmark, run of {date}{' (quick)' if quick else ''}", fontsize=13)
    figure.tight_layout()
    return figure


def write_chart(results: list[dict[str, Any]], path: Path, when: datetime | None = None) -> bool:
    """Draw the run `results` (of the date `when`, default now) to `path`."""
    if not available():
        return False
    figure = figure_of(results, when)
    if figure is None:
        return False
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.chart RESULTS.json [OUT.png]`: redraw a run's chart from its file."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m bench.chart RESULTS.json [OUT.png]", file=sys.stderr)
        return 2
    source = Path(args[0])
    out = Path(args[1]) if len(args) > 1 else source.with_suffix(".png")
    results = json.loads(source.read_text(encoding="utf-8"))
    modified = datetime.fromtimestamp(source.stat().st_mtime)
    if not write_chart(results, out, when=modified):
        print(f"{source}: no load scenario to draw (or no matplotlib)", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
