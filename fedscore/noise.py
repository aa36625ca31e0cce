"""Differentially private noise for a summed histogram, by OpenDP.

The mechanism is OpenDP's `make_laplace` over a vector of 64-bit integers with the L1
distance: every bin gets independent discrete Laplace noise (integers only; no
floating-point noise on counts). OpenDP, not this module, decides what a release costs:
the scale is the smallest `binary_search_param` finds whose privacy map, at the
release's L1 sensitivity, stays within the definition's epsilon, and the epsilon
recorded as spent is that measurement's own `map(sensitivity)`.

OpenDP gates every noise mechanism behind its "contrib" feature (their proofs are
published but not yet fully vetted upstream), so it is enabled here, and nothing else:
neither "floating-point" nor "honest-but-curious" is needed by an integer mechanism.

The mechanism is additive (its output is the input plus independent noise), so
`NoisyHistogram.noise` draws the noise alone, as the mechanism's output on all-zero counts:
the helper aggregator adds it to its share sums, and the sum of the two aggregators' values
is the mechanism's output on the exact counts, which no process ever holds (docs/adr/0019).

Invariants:
- The exact histogram exists only as the argument of `NoisyHistogram.release`; the value
  returned is noisy and post-processed to non-negative integers (which costs no privacy).
  `noise` takes no data at all.
- Noise comes from OpenDP's own CSPRNG; it cannot be seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import opendp.prelude as dp

from fedscore.errors import FailedPrecondition

dp.enable_features("contrib")

MECHANISM = "discrete Laplace (opendp.measurements.make_laplace on vector<i64>, L1 distance)"


def opendp_version() -> str:
    return metadata.version("opendp")


@dataclass(frozen=True)
class NoisyHistogram:
    """A calibrated OpenDP measurement for one release's histogram."""

    measurement: Any  # opendp.mod.Measurement (untyped upstream)
    scale: float
    sensitivity: int
    epsilon: float  # what OpenDP's privacy map says one application costs

    def release(self, exact: Sequence[int]) -> list[int]:
        """Noisy counts, clamped at zero (post-processing)."""
        noisy = self.measurement([int(value) for value in exact])
        return [max(0, int(value)) for value in noisy]

    def noise(self, width: int) -> list[int]:
        """`width` independent draws of the mechanism's noise (its output on zero counts);
        not clamped: noise may be negative."""
        return [int(value) for value in self.measurement([0] * width)]


def _space() -> tuple[Any, Any]:
    return dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64")


def histogram_mechanism(sensitivity: int, epsilon: float) -> NoisyHistogram:
    """The least-noise discrete Laplace measurement whose map(sensitivity) <= epsilon."""
    if sensitivity < 1 or not epsilon > 0:
        raise FailedPrecondition(
            f"cannot calibrate noise for sensitivity {sensitivity} and epsilon {epsilon}",
            reason="BAD_PRIVACY_PARAMETERS",
        )
    space = _space()
    scale = float(
        dp.binary_search_param(
            lambda s: dp.m.make_laplace(*space, scale=s), d_in=sensitivity, d_out=epsilon
        )
    )
    measurement = dp.m.make_laplace(*space, scale=scale)
    spent = float(measurement.map(sensitivity))  # type: ignore[no-untyped-call]
    if spent > epsilon:  # binary_search_param promises this never happens
        raise FailedPrecondition("OpenDP calibrated above the epsilon asked", "BAD_CALIBRATION")
    return NoisyHistogram(measurement, scale, sensitivity, spent)
