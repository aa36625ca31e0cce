"""The OpenDP measurement behind every release: calibration, and that its noise is real.

OpenDP draws from the operating system's CSPRNG and cannot be seeded, so the statistical
test draws many samples (one call on a long vector of zeros) and uses tolerances of more
than six standard errors: a correct mechanism fails it with probability below 1e-8,
while a scale off by 10 % (epsilon off by 10 %) fails it for certain.
"""

from __future__ import annotations

import math

import pytest

from fedscore.errors import FedscoreError
from fedscore.noise import histogram_mechanism

SAMPLES = 60_000


@pytest.mark.parametrize(("sensitivity", "epsilon"), [(1, 1.0), (4, 1.0), (12, 0.5), (3, 2.0)])
def test_opendp_calibrates_the_scale_to_the_sensitivity_and_epsilon(
    sensitivity: int, epsilon: float
) -> None:
    noise = histogram_mechanism(sensitivity, epsilon)
    # OpenDP's own privacy map says what one release costs, never more than asked.
    assert noise.epsilon <= epsilon
    assert noise.epsilon == pytest.approx(epsilon, rel=1e-6)
    assert noise.scale == pytest.approx(sensitivity / epsilon, rel=1e-6)
    assert noise.measurement.map(sensitivity) == noise.epsilon
    # A larger change than the sensitivity costs more: the map is not a constant.
    assert noise.measurement.map(2 * sensitivity) == pytest.approx(2 * noise.epsilon)


@pytest.mark.parametrize(("sensitivity", "epsilon"), [(4, 1.0), (2, 0.5)])
def test_empirical_noise_matches_the_configured_epsilon(sensitivity: int, epsilon: float) -> None:
    noise = histogram_mechanism(sensitivity, epsilon)
    draws = noise.measurement([0] * SAMPLES)  # raw noise: no clamping at zero here
    assert len(draws) == SAMPLES and all(isinstance(x, int) for x in draws)
    # Discrete Laplace: P(k) ∝ q^|k| with q = exp(-1/scale), E|X| = 2q / (1 - q^2).
    mean_abs = sum(abs(x) for x in draws) / SAMPLES
    q_hat = (math.sqrt(1 + mean_abs**2) - 1) / mean_abs  # solves 2q / (1 - q^2) = mean_abs
    epsilon_hat = sensitivity * -math.log(q_hat)
    assert epsilon_hat == pytest.approx(epsilon, rel=0.05)
    # Symmetric around the true value, and P(0) / P(1) = exp(epsilon / sensitivity).
    assert abs(sum(draws) / SAMPLES) < 6 * math.sqrt(2 * noise.scale**2 / SAMPLES) + 0.05
    zeros, ones = draws.count(0), draws.count(1) + draws.count(-1)
    assert math.log(2 * zeros / ones) == pytest.approx(epsilon / sensitivity, abs=0.08)


def test_noise_is_real_and_released_values_are_non_negative() -> None:
    noise = histogram_mechanism(4, 1.0)
    exact = [0, 1, 2, 500, 10_000] * 20
    first, second = noise.release(exact), noise.release(exact)
    assert first != second  # 100 bins at scale 4: equal with probability ~1e-90
    assert first != exact
    assert all(value >= 0 for value in first + second)
    assert all(isinstance(value, int) for value in first)
    # Large counts move by about the scale, not by orders of magnitude.
    assert all(abs(first[i] - exact[i]) < 200 for i in range(3, len(exact), 5))


def test_a_huge_epsilon_leaves_the_counts_unchanged() -> None:
    noise = histogram_mechanism(10, 1e6)
    exact = list(range(0, 5000, 7))
    assert noise.release(exact) == exact


@pytest.mark.parametrize(("sensitivity", "epsilon"), [(0, 1.0), (4, 0.0), (4, -1.0)])
def test_meaningless_privacy_parameters_are_refused(sensitivity: int, epsilon: float) -> None:
    with pytest.raises(FedscoreError) as refused:
        histogram_mechanism(sensitivity, epsilon)
    assert refused.value.reason == "BAD_PRIVACY_PARAMETERS"
