"""Progress of a long command, on a terminal only (tqdm).

A command that may run for seconds (`node ingest` of a large export, `audit verify` of
long logs) hands its work a `Progress` as the hook `(stage, done, total)`: the stage a
person reads ("checking export.csv", "trc: fetching entries"), and how far it is; a
stage of one step (total 1) shows only its name.

Invariants:
- Nothing is drawn unless a person watches: never with `--json`, and only when both
  stdout and stderr are terminals (a command whose output goes to a file or a pipe is
  being scripted; its output stays exactly what it was). `shown(args)` decides.
- The bar goes to stderr and is removed when the command ends (`leave=False`), so what
  the command prints afterwards reads as it always did.
- A bar appears only once the work has taken `DELAY_SECONDS`: a small file or log never
  flickers one.
"""

from __future__ import annotations

import argparse
import sys
import time
from types import TracebackType
from typing import Any

DELAY_SECONDS = 0.5
STEP_FORMAT = "{desc} ..."


def shown(args: argparse.Namespace) -> bool:
    """Whether progress may be drawn for this command: a terminal, and no --json."""
    if getattr(args, "json", False):
        return False
    return sys.stdout.isatty() and sys.stderr.isatty()


class Progress:
    """One bar on stderr whose stage, count and total follow the hook's calls; or nothing.

    `unit="B"` counts bytes (shown as kB, MB); anything else counts items. The bar is made
    at the first call after `DELAY_SECONDS` (tqdm's own `delay` is undone by `reset`).
    """

    def __init__(self, enabled: bool, unit: str = "entries") -> None:
        self.enabled = enabled
        self.unit = unit
        self.bar: Any = None
        self.stage = ""
        self.started = time.monotonic()

    def _open(self) -> Any:
        from tqdm import tqdm

        return tqdm(
            total=0,
            unit=self.unit,
            unit_scale=self.unit == "B",
            unit_divisor=1024 if self.unit == "B" else 1000,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.started < DELAY_SECONDS:
                return
            self.bar = self._open()
        bar = self.bar
        if stage != self.stage:
            self.stage = stage
            # A stage of one step (total 1: "building the index") shows only its name.
            bar.bar_format = STEP_FORMAT if total == 1 else None
            bar.set_description_str(stage, refresh=False)
            bar.reset(total=total)
        elif total != bar.total:
            bar.total = total
        if done != bar.n:
            bar.update(done - bar.n)

    def close(self) -> None:
        self.enabled = False
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
