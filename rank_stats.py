"""Rank agreement between a supernet's fitness and a stand-alone reference, with its uncertainty.

The reference is the accuracy of each architecture trained alone, over several seeds (K architectures x S
seeds); the fitness is one supernet score per architecture, or several draws of it. This module measures how
well the two rank the architectures (Kendall's tau-b, Spearman's rho, top-k overlap, regret of the pick) and
how much of that is noise: the reliability of the reference and the ceiling it puts on any correlation, exact
and permutation p-values, and two-level bootstrap intervals that resample architectures and then seeds.
numpy only; everything random takes a seed and draws from np.random.default_rng(seed).
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike

Statistic = Callable[[np.ndarray, np.ndarray], float]


def average_ranks(values: ArrayLike) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span ([10, 20, 20, 30] -> [1, 2.5, 2.5, 4])."""
    v = np.asarray(values, dtype=float).ravel()
    order = np.argsort(v, kind='stable')
    sorted_v = v[order]
    first_of_group = np.r_[True, sorted_v[1:] != sorted_v[:-1]]
    starts = np.flatnonzero(first_of_group)
    ends = np.r_[starts[1:], v.size]
    # A tie group at sorted positions starts..ends-1 holds ranks starts+1..ends; their mean:
    group_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(v.size)
    ranks[order] = group_rank[np.cumsum(first_of_group) - 1]
    return ranks


def _pair_signs(values: ArrayLike) -> np.ndarray:
    """sign(v_j - v_i) for every ordered pair: the n x n matrix both tau-b and the permutation test use."""
    v = np.asarray(values, dtype=float).ravel()
    return np.sign(v[None, :] - v[:, None])


def _tau_from_signs(sx: np.ndarray, sy: np.ndarray) -> float:
    # Over the full matrix every pair counts twice, on the numerator and on both untied counts, so the 2s cancel:
    # C - D = sum(sx * sy) / 2 and n0 - n1 = #(sx != 0) / 2.
    untied_x, untied_y = np.count_nonzero(sx), np.count_nonzero(sy)
    if untied_x == 0 or untied_y == 0:
        return math.nan
    return float(np.sum(sx * sy) / math.sqrt(float(untied_x) * float(untied_y)))


def kendall_tau_b(x: ArrayLike, y: ArrayLike) -> float:
    """Kendall's tau-b, (C - D) / sqrt((n0 - n1)(n0 - n2)): ties in either ranking lower neither bound of +-1.

    NaN when either side is constant or has fewer than 2 items.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.size != y.size:
        raise ValueError(f'x and y differ in length: {x.size} != {y.size}')
    if x.size < 2:
        return math.nan
    return _tau_from_signs(_pair_signs(x), _pair_signs(y))


def spearman_rho(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rho: the Pearson correlation of average ranks, the usual handling of ties; NaN for a constant side."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.size != y.size:
        raise ValueError(f'x and y differ in length: {x.size} != {y.size}')
    if x.size < 2:
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
    if denominator == 0.0:
        return math.nan
    return float(np.sum(dx * dy) / denominator)


def spearman_brown(r: float, n: float) -> float:
    """Reliability of the mean of n measurements of single-measurement reliability r: n r / (1 + (n - 1) r).

    n may be fractional: n = 0.5 steps a reliability down to that of half a measurement.
    """
    return float(n * r / (1.0 + (n - 1.0) * r))


def reliability(columns: ArrayLike, n: Optional[float] = None) -> float:
    """Rank reliability of a K items x S repeats table, stepped up to the mean of n repeats (default S).

    The single-repeat reliability is the mean Spearman rho over all pairs of repeat columns (seeds); the
    Spearman-Brown formula turns it into the reliability of a mean over n repeats. NaN with fewer than 2 columns,
    and NaN when a column is constant (its rho is undefined).
    """
    table = np.asarray(columns, dtype=float)
    if table.ndim != 2 or table.shape[1] < 2:
        return math.nan
    repeats = table.shape[1]
    rhos = [spearman_rho(table[:, i], table[:, j]) for i in range(repeats) for j in range(i + 1, repeats)]
    return spearman_brown(float(np.mean(rhos)), repeats if n is None else n)


def noise_ceiling(reliability_x: float, reliability_y: float) -> Dict[str, float]:
    """The largest correlation two noisy measurements of the same ranking can show: {'rho', 'tau'}.

    rho = sqrt(Rx Ry) is Spearman's correction for attenuation read backwards. tau = (2 / pi) arcsin(rho) is
    Greiner's relation, exact for a bivariate normal: it assumes the two measurements are monotone transforms of
    a bivariate normal whose correlation is that rho (for a normal, Spearman's and Pearson's correlation differ by
    under 0.02, so the rank ceiling is used as the latent correlation). Reliabilities are clipped to [0, 1] first
    (a negative estimate means no signal, not a negative one); NaN in, NaN out.
    """
    rx = float(np.clip(reliability_x, 0.0, 1.0))
    ry = float(np.clip(reliability_y, 0.0, 1.0))
    rho = math.sqrt(rx * ry) if not (math.isnan(rx) or math.isnan(ry)) else math.nan
    tau = (2.0 / math.pi) * math.asin(rho) if not math.isnan(rho) else math.nan
    return {'rho': rho, 'tau': tau}


def _mahonian(n: int) -> List[int]:
    """Number of permutations of n items with 0, 1, ..., n(n-1)/2 inversions (exact Python ints).

    Inserting the m-th item adds 0..m-1 inversions, so each step is a moving sum of width m over the last row.
    """
    counts = [1]
    for m in range(2, n + 1):
        prefix = [0]
        for c in counts:
            prefix.append(prefix[-1] + c)
        last = len(counts)
        counts = [prefix[min(k + 1, last)] - prefix[max(0, k - m + 1)] for k in range(last + m - 1)]
    return counts


def kendall_null_pvalue(tau: float, n: int) -> float:
    """Exact two-sided p-value P(|T| >= |tau|) of Kendall's tau for n untied items under independence.

    Without ties tau = 1 - 2 I / n0, I the number of inversions of a uniformly random permutation, whose
    distribution is given by the Mahonian numbers (exact up to n = 200 in a fraction of a second or so).
    """
    if n < 2 or math.isnan(tau):
        return math.nan
    n0 = n * (n - 1) // 2
    threshold = abs(tau) * n0 - 1e-9  # |C - D| of the observed tau, with room for rounding in tau itself
    counts = _mahonian(n)
    extreme = sum(c for inversions, c in enumerate(counts) if abs(n0 - 2 * inversions) >= threshold)
    return extreme / math.factorial(n)  # int / int rounds correctly, so an exact 0.05 compares equal to alpha


def kendall_critical_tau(n: int, alpha: float = 0.05) -> float:
    """Smallest attainable tau >= 0 whose exact two-sided p-value is <= alpha (NaN if none, e.g. n <= 4 at 0.05).

    p <= alpha, the convention of the published tables (Zar), whose two-sided 0.05 values 0.643 (n = 8) and 0.511
    (n = 10) this reproduces. No attainable p equals 0.10, 0.05 or 0.01 exactly for n <= 60, so p < alpha would
    give the same values there.
    """
    if n < 2:
        return math.nan
    n0 = n * (n - 1) // 2
    total = math.factorial(n)
    counts = _mahonian(n)
    critical = math.nan
    tail = 0  # permutations with at most `inversions` inversions: one side of the two-sided tail
    for inversions in range(n0 // 2 + 1):
        tail += counts[inversions]
        score = n0 - 2 * inversions  # C - D
        p = 1.0 if score == 0 else 2 * tail / total
        if p > alpha:
            break
        critical = score / n0
    return critical


def permutation_pvalue(x: ArrayLike, y: ArrayLike, iterations: int = 10000, seed: int = 0) -> float:
    """Two-sided permutation p-value of tau-b: (1 + #{|tau(x, perm y)| >= |tau_obs|}) / (1 + iterations).

    Valid with ties, unlike the exact null; the 1 + counts the observed arrangement, so p is never 0.
    """
    sx, sy = _pair_signs(x), _pair_signs(y)
    if sx.shape != sy.shape:
        raise ValueError(f'x and y differ in length: {sx.shape[0]} != {sy.shape[0]}')
    observed = _tau_from_signs(sx, sy)
    if math.isnan(observed):
        return math.nan
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(iterations):
        p = rng.permutation(sy.shape[0])
        # Permuting y permutes the rows and columns of its sign matrix; its tie count, the denominator, is unchanged.
        hits += abs(_tau_from_signs(sx, sy[np.ix_(p, p)])) >= abs(observed) - 1e-12
    return (1 + hits) / (1 + iterations)


def _as_draws(fitness: ArrayLike, k: int, name: str) -> np.ndarray:
    """Fitness as K x F (F draws per architecture; a 1-D fitness is one draw)."""
    f = np.asarray(fitness, dtype=float)
    f = f[:, None] if f.ndim == 1 else f
    if f.ndim != 2 or f.shape[0] != k:
        raise ValueError(f'{name} must be (K,) or (K, F) with K = {k} architectures, got shape {np.shape(fitness)}')
    return f


def _as_reference(reference: ArrayLike) -> np.ndarray:
    ref = np.asarray(reference, dtype=float)
    if ref.ndim != 2:
        raise ValueError(f'reference must be (K, S): K architectures x S seeds, got shape {ref.shape}')
    return ref


def _resample_means(rng: np.random.Generator, arch: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Per resampled architecture, the mean of its columns resampled with replacement (the second level)."""
    columns = rng.integers(0, table.shape[1], size=(arch.size, table.shape[1]))
    return np.take_along_axis(table[arch], columns, axis=1).mean(axis=1)


def _percentile_interval(values: np.ndarray, level: float) -> Tuple[float, float]:
    if values.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(values, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(low), float(high)


def bootstrap_interval(fitness: ArrayLike, reference: ArrayLike, statistic: Statistic, iterations: int = 2000,
                       seed: int = 0, level: float = 0.95) -> Tuple[float, float]:
    """Two-level bootstrap percentile interval of statistic(fitness, reference mean).

    Each iteration resamples the K architectures, then each one's S seeds (and its F fitness draws when fitness is
    K x F), so the interval covers both which architectures were sampled and the seed noise of the reference.
    Resamples on which the statistic is NaN (a constant side) are skipped; (nan, nan) if all are.
    """
    ref = _as_reference(reference)
    fit = _as_draws(fitness, ref.shape[0], 'fitness')
    rng = np.random.default_rng(seed)
    values = np.empty(iterations)
    for i in range(iterations):
        arch = rng.integers(0, ref.shape[0], size=ref.shape[0])
        reference_mean = _resample_means(rng, arch, ref)
        values[i] = statistic(_resample_means(rng, arch, fit), reference_mean)
    return _percentile_interval(values[~np.isnan(values)], level)


def paired_bootstrap_difference(fitness_a: ArrayLike, fitness_b: ArrayLike, reference: ArrayLike,
                                statistic: Statistic, iterations: int = 2000, seed: int = 0,
                                level: float = 0.95) -> Dict[str, float]:
    """Is estimator a better than b? Bootstrap of statistic(a) - statistic(b) on the same resample each iteration.

    Same two levels as bootstrap_interval; pairing removes the noise the two share (which architectures, which
    seeds), so the interval is much narrower than the difference of two separate intervals. When a and b have the
    same number of fitness draws, the draws are taken as paired (draw f of both from the same batch or supernet)
    and share their resample too; otherwise each resamples its own. Returns the observed 'difference', 'low',
    'high' and 'p_below_zero', the share of resamples with a difference <= 0 (NaN resamples skipped).
    """
    ref = _as_reference(reference)
    fit_a = _as_draws(fitness_a, ref.shape[0], 'fitness_a')
    fit_b = _as_draws(fitness_b, ref.shape[0], 'fitness_b')
    reference_mean = ref.mean(axis=1)
    difference = statistic(fit_a.mean(axis=1), reference_mean) - statistic(fit_b.mean(axis=1), reference_mean)
    rng = np.random.default_rng(seed)
    values = np.array([_paired_resample(rng, fit_a, fit_b, ref, statistic) for _ in range(iterations)])
    return _difference_summary(float(difference), values, level)


def pooled_paired_difference(runs: Sequence[Tuple[ArrayLike, ArrayLike, ArrayLike]], statistic: Statistic,
                             iterations: int = 2000, seed: int = 0,
                             level: float = 0.95) -> Dict[str, float]:
    """paired_bootstrap_difference over several search runs: runs is a list of (fitness_a, fitness_b, reference),
    one per run (its own architectures and supernet). The difference is the mean over runs of each run's
    difference; each iteration resamples every run within itself (architectures, seeds, draws), so the interval
    covers the runs' own sampling noise, not the spread of the population of runs."""
    prepared = []
    for fitness_a, fitness_b, reference in runs:
        ref = _as_reference(reference)
        prepared.append((_as_draws(fitness_a, ref.shape[0], 'fitness_a'),
                         _as_draws(fitness_b, ref.shape[0], 'fitness_b'), ref))
    difference = float(np.mean([statistic(a.mean(axis=1), r.mean(axis=1)) - statistic(b.mean(axis=1), r.mean(axis=1))
                                for a, b, r in prepared]))
    rng = np.random.default_rng(seed)
    values = np.array([np.mean([_paired_resample(rng, a, b, r, statistic) for a, b, r in prepared])
                       for _ in range(iterations)])
    return _difference_summary(difference, values, level)


def _paired_resample(rng: np.random.Generator, fit_a: np.ndarray, fit_b: np.ndarray, ref: np.ndarray,
                     statistic: Statistic) -> float:
    """statistic(a) - statistic(b) on one two-level resample shared by both estimators."""
    arch = rng.integers(0, ref.shape[0], size=ref.shape[0])
    resampled_reference = _resample_means(rng, arch, ref)
    draws_a = rng.integers(0, fit_a.shape[1], size=(arch.size, fit_a.shape[1]))
    draws_b = draws_a if fit_b.shape[1] == fit_a.shape[1] else \
        rng.integers(0, fit_b.shape[1], size=(arch.size, fit_b.shape[1]))
    mean_a = np.take_along_axis(fit_a[arch], draws_a, axis=1).mean(axis=1)
    mean_b = np.take_along_axis(fit_b[arch], draws_b, axis=1).mean(axis=1)
    return statistic(mean_a, resampled_reference) - statistic(mean_b, resampled_reference)


def _difference_summary(difference: float, values: np.ndarray, level: float) -> Dict[str, float]:
    values = values[~np.isnan(values)]
    low, high = _percentile_interval(values, level)
    p_below_zero = float(np.mean(values <= 0.0)) if values.size else math.nan
    return {'difference': difference, 'low': low, 'high': high, 'p_below_zero': p_below_zero}


def top_k_overlap(x: ArrayLike, y: ArrayLike, k: int) -> Dict[str, float]:
    """How many of x's k best are among y's k best, and the 'chance' expectation k^2 / K under random rankings.

    Best = largest; ties go to the lower index (a stable descending sort), so the answer is deterministic.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.size != y.size:
        raise ValueError(f'x and y differ in length: {x.size} != {y.size}')
    top_x = set(np.argsort(-x, kind='stable')[:k].tolist())
    top_y = set(np.argsort(-y, kind='stable')[:k].tolist())
    return {'overlap': len(top_x & top_y), 'chance': k * k / x.size}


def regret(pick: int, reference: ArrayLike) -> Dict[str, float]:
    """Stand-alone accuracy lost by picking architecture `pick` instead of the best one.

    Choosing the best on the same seeds it is then measured on favours whichever architecture had lucky seeds, so
    that regret is biased upward. The unbiased 'regret' chooses the best on the mean of seeds 0..S-2 and measures
    it and the pick on the held-out seed S-1 (it can be negative; NaN with one seed). 'percentile' is the percent
    of the other K - 1 architectures whose mean over all seeds is strictly below the pick's (100 = the pick is the
    best, 0 = the worst). 'regret_all_seeds' is the biased best-minus-pick on the mean of all seeds.
    """
    ref = _as_reference(reference)
    k, seeds = ref.shape
    mean_all = ref.mean(axis=1)
    if seeds >= 2:
        best = int(np.argmax(ref[:, :-1].mean(axis=1)))
        unbiased = float(ref[best, -1] - ref[pick, -1])
    else:
        best, unbiased = int(np.argmax(mean_all)), math.nan
    below = int(np.count_nonzero(mean_all < mean_all[pick]))
    return {'regret': unbiased, 'best': best, 'percentile': 100.0 * below / (k - 1) if k > 1 else 100.0,
            'regret_all_seeds': float(mean_all.max() - mean_all[pick])}


def binomial_standard_error(accuracy_percent: float, n: int) -> float:
    """Sampling error, in percentage points, of an accuracy measured on n test images: 100 sqrt(p (1 - p) / n).

    Differences between stand-alone accuracies smaller than this are test-set noise, whatever the seeds say.
    """
    p = accuracy_percent / 100.0
    return 100.0 * math.sqrt(p * (1.0 - p) / n)
