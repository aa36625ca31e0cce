"""bench/results/latest.png: throughput and latency per scenario (only if matplotlib imports)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

# Product scenarios, the signature-only ceiling and the central lake.
_COLOURS = {"score": "#2a7ab0", "ceiling": "#e08a1e", "lake": "#4a9a4a"}


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_chart(results: list[dict[str, Any]], path: Path) -> bool:
    """Draw throughput (bars) and sequential p50/p99 (bars) of every load scenario."""
    if not available():
        return False
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    loads = [r for r in results if "throughput_qps" in r and "p50_ms" in r]
    if not loads:
        return False
    names = [str(r["scenario"]) for r in loads]
    positions = list(range(len(names)))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(8.0, len(names) * 1.1), 8))
    colours = [_COLOURS.get(name.split("_", 1)[0], "#777777") for name in names]
    bars = top.bar(positions, [r["throughput_qps"] for r in loads], color=colours)
    top.bar_label(bars, fmt="%.0f", fontsize=8)
    top.set_yscale("log")  # the lake is an order of magnitude above the rest
    top.set_ylabel("queries / s, 32 concurrent (log)")
    top.set_title("fedscore benchmark: throughput and latency per scenario")
    width = 0.4
    bottom.bar([p - width / 2 for p in positions], [r["p50_ms"] for r in loads], width, label="p50")
    bottom.bar([p + width / 2 for p in positions], [r["p99_ms"] for r in loads], width, label="p99")
    bottom.set_ylabel("sequential latency (ms)")
    bottom.legend()
    for axis in (top, bottom):
        axis.set_xticks(positions)
        axis.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
