"""Noise calibration with OpenDP's own measurements, exactly as OpenDP's Context API does it.

The Context API (``make_private_lazyframe`` with a ``global_scale``) gives each noisy
statistic the scale ``c × s``, where ``c`` is the statistic's sensitivity when *one row*
changes (OpenDP's ``approximate_c_stability``) and ``s`` is one global scale, rounded
up. It then looks for the smallest ``s`` whose privacy map, evaluated at the privacy
unit, fits the budget: ``map(d_in) <= ε`` for pure DP, ``< ε`` (then a threshold with
``δ_map < δ``) when keys are released. The losses of several statistics add up (basic
composition, rounded up).

This module reproduces that search over the same OpenDP measurements:

* integer counts and sums: ``dp.m.make_laplace`` on a vector of integers with
  ``l1_distance`` (OpenDP's "Integer Laplace", the discrete Laplace sampler);
* counts over released keys: ``dp.m.make_laplace_threshold`` on a map with
  ``l01inf_distance`` (same sampler, plus OpenDP's threshold);
* quantiles: ``dp.t.make_quantile_score_candidates`` then ``dp.m.make_noisy_max``
  (``negate=True``, OpenDP's "ExponentialMin"), once per group.

The search starts from the analytic guess and walks one float at a time to the
smallest passing scale, the same point OpenDP's ``binary_search`` returns (the unit
tests check the scales against ``Context.summarize()``). Results are cached.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import opendp.prelude as dp

from lab.errors import ConfigError

ALPHA = 0.05  # the previewed accuracy is the half-width of the 95% interval
THRESHOLD_PROBE = 2**32 - 1  # the Context API's threshold while it searches the scale
Loss = tuple[float, float]


def _contrib() -> None:
    dp.enable_features("contrib")


def round_up(exact: Fraction) -> float:
    """The smallest float >= ``exact`` (OpenDP's ``inf_*`` arithmetic)."""
    value = float(exact)
    return value if Fraction(value) >= exact else math.nextafter(value, math.inf)


def inf_mul(a: float, b: float) -> float:
    return round_up(Fraction(a) * Fraction(b))


def inf_add(a: float, b: float) -> float:
    return round_up(Fraction(a) + Fraction(b))


@lru_cache(maxsize=1024)
def discrete_laplace_accuracy(scale: float, alpha: float) -> float:
    """OpenDP's half-width of the (1 - alpha) interval of Integer Laplace noise.

    OpenDP's formula underflows to -inf for tiny scales, where the noise is always 0.
    """
    accuracy = float(dp.discrete_laplacian_scale_to_accuracy(scale, alpha))
    return accuracy if accuracy >= 0 else 0.0


@lru_cache(maxsize=512)
def laplace_vector(scale: float) -> dp.Measurement:
    """Integer Laplace noise on a vector of exact integer aggregates (one per group)."""
    _contrib()
    domain = dp.vector_domain(dp.atom_domain(T=dp.i64))
    return dp.m.make_laplace(domain, dp.l1_distance(T=dp.i64), scale)


@lru_cache(maxsize=512)
def laplace_threshold(scale: float, threshold: int) -> dp.Measurement:
    """Integer Laplace noise on per-key counts; keys whose noisy count is below ``threshold`` are dropped."""
    _contrib()
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=dp.i64))
    metric = dp.l01inf_distance(dp.absolute_distance(T=dp.i64))
    return dp.m.make_laplace_threshold(domain, metric, scale, threshold=threshold)


@lru_cache(maxsize=64)
def quantile_scores(candidates: tuple[Any, ...], alpha: float, integer: bool) -> dp.Transformation:
    """OpenDP's quantile score transformation over a column of ``i64`` or non-NaN ``f64``."""
    _contrib()
    atom = dp.atom_domain(T=dp.i64) if integer else dp.atom_domain(T=dp.f64, nan=False)
    return dp.t.make_quantile_score_candidates(
        dp.vector_domain(atom), dp.symmetric_distance(), list(candidates), alpha
    )


def noisy_min(scores: dp.Transformation, scale: float) -> dp.Measurement:
    """OpenDP's report-noisy-min over the candidates' scores (the lowest score is best)."""
    return dp.m.make_noisy_max(
        scores.output_domain, scores.output_metric, dp.max_divergence(), scale, negate=True
    )


def score_constants(alpha: float) -> tuple[int, int, int]:
    """``(num, den, size_limit)`` of OpenDP's quantile scores for vectors of unknown size.

    OpenDP takes ``alpha``'s exact fraction when its denominator is below 10,000, else
    ``num = trunc(alpha · 10,000)`` over 10,000; counts are capped at ``u64::MAX // den``.
    """
    exact = Fraction(alpha)
    if exact.denominator < 10_000:
        num, den = exact.numerator, exact.denominator
    else:
        num, den = int(alpha * 10_000.0), 10_000
    return num, den, (2**64 - 1) // den


@lru_cache(maxsize=512)
def quantile_noise(candidates: tuple[Any, ...], alpha: float, integer: bool, scale: float) -> dp.Measurement:
    """The second half of OpenDP's quantile mechanism ``quantile_scores(...) >> noisy min``.

    :mod:`lab.dp.execute` computes the scores from cell counts (equal to the transformation's
    output) and passes them to this measurement.
    """
    return noisy_min(quantile_scores(candidates, alpha, integer), scale)


@dataclass(frozen=True)
class LaplaceStat:
    """An integer statistic per group (count, clamped sum) with Integer Laplace noise.

    ``one_row`` is its sensitivity when one row changes, ``unit`` the L1 sensitivity of
    the vector of groups when one privacy unit (``max_rows`` rows) changes.
    """

    label: str
    one_row: int
    unit: int
    distribution = "Integer Laplace"

    def c(self) -> float:
        return float(self.one_row)

    def sensitivity(self) -> float:
        return float(self.unit)

    def loss(self, scale: float, threshold: int | None) -> Loss:
        return laplace_vector(scale).map(self.unit), 0.0

    def accuracy(self, scale: float, alpha: float) -> float | None:
        return discrete_laplace_accuracy(scale, alpha)


@dataclass(frozen=True)
class ThresholdStat:
    """Row counts per released key: Integer Laplace, then OpenDP's threshold (spends δ).

    ``unit`` is OpenDP's ``(l0, l1, linf)`` distance: groups touched, rows, rows per group.
    """

    label: str
    one_row: int
    unit: tuple[int, int, int]
    distribution = "Integer Laplace"

    def c(self) -> float:
        return float(self.one_row)

    def sensitivity(self) -> float:
        return float(self.unit[1])

    def loss(self, scale: float, threshold: int | None) -> Loss:
        eps, delta = laplace_threshold(scale, THRESHOLD_PROBE if threshold is None else threshold).map(
            self.unit
        )
        return eps, delta

    def accuracy(self, scale: float, alpha: float) -> float | None:
        return discrete_laplace_accuracy(scale, alpha)


@dataclass(frozen=True)
class QuantileStat:
    """A quantile per group by OpenDP's exponential mechanism; ``groups`` a unit can touch (l0)."""

    label: str
    candidates: tuple[Any, ...]
    alpha: float
    integer: bool
    max_rows: int
    groups: int = 1
    distribution = "ExponentialMin"

    def c(self) -> float:
        return float(quantile_scores(self.candidates, self.alpha, self.integer).map(1))

    def sensitivity(self) -> float:
        return float(
            quantile_scores(self.candidates, self.alpha, self.integer).map(self.max_rows) * self.groups
        )

    def loss(self, scale: float, threshold: int | None) -> Loss:
        # As the Context API accounts for it: the unit moves the scores of up to `groups`
        # groups by scores.map(max_rows) each; noisy min is charged for the total move.
        scores = quantile_scores(self.candidates, self.alpha, self.integer)
        return noisy_min(scores, scale).map(int(self.sensitivity())), 0.0

    def accuracy(self, scale: float, alpha: float) -> float | None:
        return None


Stat = LaplaceStat | ThresholdStat | QuantileStat


@dataclass(frozen=True)
class Calibration:
    """The noise of a query: one scale per statistic, the threshold, and OpenDP's map at the unit."""

    global_scale: float
    scales: tuple[float, ...]
    threshold: int | None
    epsilon_map: float
    delta_map: float


def scales_at(stats: Sequence[Stat], global_scale: float) -> tuple[float, ...]:
    """Each statistic's scale: its one-row sensitivity times the global scale, rounded up."""
    return tuple(inf_mul(stat.c(), global_scale) for stat in stats)


def loss_at(stats: Sequence[Stat], global_scale: float, threshold: int | None = None) -> Loss:
    """The composed privacy loss (ε, δ) at the privacy unit, from each OpenDP measurement's map."""
    eps, delta = 0.0, 0.0
    for stat, scale in zip(stats, scales_at(stats, global_scale), strict=True):
        stat_eps, stat_delta = stat.loss(scale, threshold)
        eps, delta = inf_add(eps, stat_eps), inf_add(delta, stat_delta)
    return eps, delta


def _safe(predicate: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def wrapped(value: Any) -> bool:
        try:
            return predicate(value)
        except (dp.OpenDPException, OverflowError, ValueError, ZeroDivisionError):
            return False

    return wrapped


def smallest_passing_scale(predicate: Callable[[float], bool], guess: float) -> float:
    """The smallest positive float passing a monotone ``predicate``, walking from ``guess``.

    Falls back to OpenDP's ``binary_search`` when the guess is more than 64 floats away.
    """
    ok = _safe(predicate)
    scale = guess
    if scale > 0 and math.isfinite(scale):
        if ok(scale):
            for _ in range(64):
                lower = math.nextafter(scale, 0.0)
                if not ok(lower):
                    return scale
                scale = lower
        else:
            for _ in range(64):
                scale = math.nextafter(scale, math.inf)
                if ok(scale):
                    return scale
    return float(dp.binary_search(ok, T=float))


@lru_cache(maxsize=1024)
def calibrate(stats: tuple[Stat, ...], epsilon: float, delta: float = 0.0) -> Calibration:
    """Find the Context API's global scale (and threshold) for ``stats`` under (ε, δ)."""
    _contrib()
    approximate = any(isinstance(stat, ThresholdStat) for stat in stats)
    probe_eps = loss_at(stats, 1.0)[0]
    guess = probe_eps / epsilon
    if approximate:
        scale = smallest_passing_scale(lambda s: loss_at(stats, s)[0] < epsilon, guess)
        threshold = _threshold(stats, scale, delta)
    else:
        scale = smallest_passing_scale(lambda s: loss_at(stats, s)[0] <= epsilon, guess)
        threshold = None
    eps_map, delta_map = loss_at(stats, scale, threshold)
    return Calibration(scale, scales_at(stats, scale), threshold, eps_map, delta_map)


def _threshold(stats: tuple[Stat, ...], scale: float, delta: float) -> int:
    if delta <= 0:
        raise ConfigError(
            "releasing unknown group keys needs delta > 0 / 发布未公开的分组键需要 δ > 0", reason="dp-delta"
        )
    try:
        return int(dp.binary_search(_safe(lambda t: loss_at(stats, scale, t)[1] < delta), T=int))
    except (ValueError, dp.OpenDPException) as exc:
        raise ConfigError(
            f"no threshold reaches delta={delta:g} at this epsilon; raise delta (e.g. 1e-7) or epsilon "
            "/ 当前 ε 下无法满足 δ，请调大 δ 或 ε",
            reason="dp-delta",
            detail=str(exc),
        ) from exc
