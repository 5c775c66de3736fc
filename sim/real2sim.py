"""Real2Sim ranking metrics: Pearson r and Mean Maximum Rank Violation (MMRV).

Both compare per-policy success rates from a cheap evaluator (simulator or world model) with
real-robot success rates of the same policies. Definitions, argument order and tie/degenerate
conventions follow SIMPLER: Li et al. 2024, "Evaluating Real-World Robot Manipulation Policies in
Simulation", arXiv:2405.05941, Section III-B, and its reference implementation, so that the
published Tables IV and V reproduce (see tests/sim/test_real2sim.py).
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike

from configs.constants import MIN_RANKED_POLICIES as MIN_POLICIES

logger = logging.getLogger(__name__)

PEARSON_EPS = 1e-8  # SIMPLER adds this to the Pearson denominator


def _validate(perf_sim: ArrayLike, perf_real: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    sim = np.asarray(perf_sim, dtype=np.float64)
    real = np.asarray(perf_real, dtype=np.float64)
    if sim.ndim != 1 or real.ndim != 1:
        raise ValueError("expected one success rate per policy (1-D), "
                         f"got shapes {sim.shape} and {real.shape}")
    if sim.size != real.size:
        raise ValueError(f"perf_sim has {sim.size} policies but perf_real has {real.size}: "
                         "both must list the same policies in the same order")
    if sim.size < MIN_POLICIES:
        raise ValueError(f"need at least {MIN_POLICIES} policies to compare rankings, got {sim.size}")
    for name, values in (("perf_sim", sim), ("perf_real", real)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] is {values[bad[0]]} (policy index {bad[0]}); "
                             "every policy needs a finite success rate")
    return sim, real


def pearson_correlation(perf_sim: ArrayLike, perf_real: ArrayLike) -> float:
    """Pearson correlation of simulated and real per-policy success rates (higher is better).

    Parameters
    ----------
    perf_sim, perf_real : array_like, shape (n_policies,)
        Success rates of the same policies, same order; at least ``MIN_POLICIES``.

    Returns
    -------
    float
        ``sum(s r) / (sqrt(sum(s^2) sum(r^2)) + PEARSON_EPS)`` on the centred vectors s and r,
        as in SIMPLER. Centred vectors that are equal (identical inputs, a constant shift, or both
        inputs constant) give exactly 1.0. If only one side is constant the numerator vanishes
        and the result is 0.0 (logged as a warning). Because of the epsilon a perfectly linear
        but not shifted-identical pair gives slightly less than 1.

    Raises
    ------
    ValueError
        Different lengths, fewer than ``MIN_POLICIES`` policies, or a NaN/inf (the message names
        the index).
    """
    sim, real = _validate(perf_sim, perf_real)
    # np.ptp guards the constant case against round-off in the mean, so "both constant" is 1.0.
    sim_c = sim - sim.mean() if np.ptp(sim) > 0 else np.zeros_like(sim)
    real_c = real - real.mean() if np.ptp(real) > 0 else np.zeros_like(real)
    if np.array_equal(sim_c, real_c):
        return 1.0
    if not sim_c.any() or not real_c.any():
        logger.warning("Pearson r is undefined when one side has zero variance (perf_sim constant: %s, "
                       "perf_real constant: %s); returning 0.0 as SIMPLER does",
                       not sim_c.any(), not real_c.any())
    denom = np.sqrt(np.sum(sim_c**2) * np.sum(real_c**2)) + PEARSON_EPS
    return float(np.sum(sim_c * real_c) / denom)


def mean_maximum_rank_violation(perf_sim: ArrayLike, perf_real: ArrayLike) -> float:
    """Mean Maximum Rank Violation of a simulated ranking against the real one (lower is better).

    For each policy i, ``RV_i = max_j |real_i - real_j|`` over the j where
    ``(sim_i > sim_j) != (real_i > real_j)``; MMRV is the mean of ``RV_i``, in [0, 1] for
    success rates.

    The metric is asymmetric: the second argument (``perf_real``) both defines the reference
    order and weights each violation, so swapping the arguments changes the value. Use SIMPLER's
    order, evaluator first, real robot second.

    Ties follow SIMPLER's strict ``>``: if ``sim_i == sim_j`` but ``real_i > real_j``, the pair
    is a violation charged to policy i only (weight ``real_i - real_j``); a tie in ``perf_real``
    has weight 0 and so never costs anything.

    Parameters
    ----------
    perf_sim, perf_real : array_like, shape (n_policies,)
        Success rates of the same policies, same order; at least ``MIN_POLICIES``.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Different lengths, fewer than ``MIN_POLICIES`` policies, or a NaN/inf (the message names
        the index).
    """
    sim, real = _validate(perf_sim, perf_real)
    violated = (sim[:, None] > sim[None, :]) != (real[:, None] > real[None, :])
    gap = np.abs(real[:, None] - real[None, :])
    return float(np.where(violated, gap, 0.0).max(axis=1).mean())
