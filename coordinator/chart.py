"""The release chart (`release.png`): bars per domain, band or month, labelled in Thai and English.

matplotlib draws it (a deliberate dependency, docs/adr/0008). Its bundled DejaVu fonts have
no Thai glyphs and a fresh machine has no Thai font, so fedscore ships Noto Sans Thai
(SIL Open Font License 1.1, `fedscore/fonts/OFL.txt`) and registers it here; matplotlib
falls back to it, glyph by glyph, for Thai text.

Invariants:
- The chart is drawn from the noisy, published values only (the release document).
- No pyplot: a `Figure` with the Agg canvas, so no global figure state and no display.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from policies.statistics import (
    MONTHS_EN,
    MONTHS_TH,
    PARTICIPATION,
    POINTS_IN_BANDS,
    SCORE_QUERIES,
    area_labels,
)
from policies.vocabulary import DOMAINS

THAI_FONT_FAMILY = "Noto Sans Thai"
_FONT_FILE = "NotoSansThai.ttf"
_PALETTE = ("#1b6ca8", "#f29e4c", "#2a9d8f", "#e76f51", "#8e7dbe", "#6c757d")


def thai_font_path() -> str:
    """The shipped Noto Sans Thai file."""
    return str(resources.files("fedscore") / "fonts" / _FONT_FILE)


@functools.cache
def _register_thai_font() -> None:
    from matplotlib import font_manager  # type: ignore[import-not-found, unused-ignore]

    font_manager.fontManager.addfont(thai_font_path())


def _dimension_labels(name: str, value: str) -> tuple[str, str]:
    """English and Thai label of one coordinate of a bin."""
    if name == "domain":
        return DOMAINS[value].name, DOMAINS[value].name_th
    if name == "area":
        return area_labels(value)
    if name == "month":
        return MONTHS_EN[int(value) - 1], MONTHS_TH[int(value) - 1]
    if name == "band":
        return f"{value} points", f"{value} คะแนน"
    return value, value


# Per kind: the dimension along the x axis, its title, and the y axis title.
_AXES = {
    PARTICIPATION: (
        "domain",
        "Domain / ด้าน",
        "People, counted once per agency / จำนวนคน (นับแยกตามหน่วยงาน)",
    ),
    POINTS_IN_BANDS: (
        "band",
        "Yearly points earned at one agency / คะแนนรายปีที่ได้รับจากหน่วยงานหนึ่ง",
        "People, counted once per agency / จำนวนคน (นับแยกตามหน่วยงาน)",
    ),
    SCORE_QUERIES: ("month", "Month / เดือน", "Score queries / จำนวนคำขอคะแนน"),
}
_LEGEND_TITLES = {"area": "Area / พื้นที่", "purpose": "Purpose / วัตถุประสงค์"}


@dataclass(frozen=True)
class _Bars:
    """Values arranged as groups along x and one series per value of the other dimension."""

    x_dimension: str
    series_dimension: str
    groups: list[str]
    series: list[str]
    heights: dict[tuple[str, str], int]


def _arrange(kind: str, values: Sequence[Mapping[str, Any]]) -> _Bars:
    x_dimension = _AXES[kind][0]
    others = [name for name in (values[0]["dimensions"] if values else {}) if name != x_dimension]
    series_dimension = others[0] if others else ""
    groups: list[str] = []
    series: list[str] = []
    heights: dict[tuple[str, str], int] = {}
    for entry in values:
        group = entry["dimensions"][x_dimension]
        one = entry["dimensions"].get(series_dimension, "")
        groups += [] if group in groups else [group]
        series += [] if one in series else [one]
        heights[(group, one)] = int(entry["value"])
    return _Bars(x_dimension, series_dimension, groups, series, heights)


def _footnote(release: Mapping[str, Any]) -> str:
    return (
        f"Differentially private release: ε = {release['epsilon_spent']:.3g} "
        "(OpenDP discrete Laplace noise); values are noisy and never below 0. "
        f"Release {release['release_id']}.\n"
        "เผยแพร่ด้วยหลักความเป็นส่วนตัวเชิงอนุพันธ์ (differential privacy): "
        "ค่าที่แสดงมีการเติมสัญญาณรบกวนและไม่ต่ำกว่า 0"
    )


def render_chart(release: Mapping[str, Any]) -> bytes:
    """PNG bytes of the chart of a release document (see `coordinator.statistics`)."""
    from matplotlib import rc_context  # type: ignore[import-not-found, unused-ignore]
    from matplotlib.backends.backend_agg import (  # type: ignore[import-not-found, unused-ignore]
        FigureCanvasAgg,
    )
    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]
    from matplotlib.layout_engine import (  # type: ignore[import-not-found, unused-ignore]
        ConstrainedLayoutEngine,
    )

    _register_thai_font()
    definition = release["definition"]
    bars = _arrange(definition["kind"], release["values"])
    _, x_title, y_title = _AXES[definition["kind"]]
    with rc_context({"font.family": ["DejaVu Sans", THAI_FONT_FAMILY], "font.size": 10}):
        # The layout keeps the bottom strip free for the footnote.
        layout = ConstrainedLayoutEngine(rect=(0, 0.07, 1, 0.93))
        figure = Figure(figsize=(12, 7), dpi=100, layout=layout)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        width = 0.8 / max(1, len(bars.series))
        for s, one in enumerate(bars.series):
            offset = (s - (len(bars.series) - 1) / 2) * width
            present = [g for g, group in enumerate(bars.groups) if (group, one) in bars.heights]
            drawn = axes.bar(
                [g + offset for g in present],
                [bars.heights[(bars.groups[g], one)] for g in present],
                width,
                label=" / ".join(dict.fromkeys(_dimension_labels(bars.series_dimension, one)))
                if one
                else None,
                color=_PALETTE[s % len(_PALETTE)],
            )
            axes.bar_label(drawn, fontsize=8, padding=2)
        axes.set_xticks(range(len(bars.groups)))
        axes.set_xticklabels(
            ["\n".join(_dimension_labels(bars.x_dimension, g)) for g in bars.groups], fontsize=9
        )
        axes.set_xlabel(x_title)
        axes.set_ylabel(y_title)
        axes.margins(y=0.12)
        axes.spines[["top", "right"]].set_visible(False)
        if bars.series_dimension:
            axes.legend(title=_LEGEND_TITLES.get(bars.series_dimension), fontsize=9)
        year = int(release["year"])
        figure.suptitle(
            f"{definition['title']} — {year}\n{definition['title_th']} — พ.ศ. {year + 543}",
            fontsize=13,
        )
        figure.text(0.01, 0.01, _footnote(release), fontsize=8, color="#444444")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
