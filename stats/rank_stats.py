"""Rank agreement between a supernet's fitness and a stand-alone reference, with its uncertainty.

The reference is the accuracy of each architecture trained alone, over several seeds (K architectures x S
seeds); the fitness is one supernet score per architecture, or several draws of it. This module measures how
well the two rank the architectures (Kendall's tau-b, Spearman's rho, top-k overlap, regret of the pick) and
how much of that is noise: the reliability of the reference and the tau a perfect supernet would be expected
to reach through it, exact and permutation p-values, and two-level bootstrap intervals that resample
architectures and then seeds; and what a few paired replicates (search or training seeds) say about a mean
difference.
numpy only; everything random takes a seed and draws from np.random.default_rng(seed).
"""
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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

    n may be fractional: n = 0.5 steps a reliability down to that of half a measurement. A negative r (a
    small sample can give one by chance) means no signal, not a negative one: it is clipped at 0 first, which
    also keeps the result in [0, 1] (the formula divides by zero at r = -1/(n - 1) and leaves [-1, 1] below it).
    NaN in, NaN out.
    """
    if math.isnan(r):
        return math.nan
    r = max(float(r), 0.0)
    return float(n * r / (1.0 + (n - 1.0) * r))


def single_repeat_rho(columns: ArrayLike) -> float:
    """The mean Spearman rho over all pairs of repeat columns of a K items x S repeats table: how well one repeat
    (a seed, a fitness draw) ranks like another. NaN with fewer than 2 columns or a constant column."""
    table = np.asarray(columns, dtype=float)
    if table.ndim != 2 or table.shape[1] < 2:
        return math.nan
    repeats = table.shape[1]
    return float(np.mean([spearman_rho(table[:, i], table[:, j])
                          for i in range(repeats) for j in range(i + 1, repeats)]))


def reliability(columns: ArrayLike, n: Optional[float] = None) -> float:
    """Rank reliability of a K items x S repeats table, stepped up to the mean of n repeats (default S).

    The single-repeat reliability is the mean Spearman rho over all pairs of repeat columns (seeds); the
    Spearman-Brown formula turns it into the reliability of a mean over n repeats. NaN with fewer than 2 columns,
    and NaN when a column is constant (its rho is undefined).
    """
    table = np.asarray(columns, dtype=float)
    if table.ndim != 2 or table.shape[1] < 2:
        return math.nan
    return spearman_brown(single_repeat_rho(table), table.shape[1] if n is None else n)


def reliability_interval(columns: ArrayLike, iterations: int = 2000, seed: int = 0,
                         level: float = 0.95) -> Tuple[float, float]:
    """Bootstrap percentile interval of reliability(columns): the K items resampled with replacement (the
    repeats are the measurement, the items the sample it was measured on). Resamples with a constant column
    are skipped."""
    table = np.asarray(columns, dtype=float)
    if table.ndim != 2 or table.shape[1] < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = np.array([reliability(table[rng.integers(0, table.shape[0], size=table.shape[0])])
                       for _ in range(iterations)])
    return _percentile_interval(values[~np.isnan(values)], level)


def pearson_from_spearman(rho: float) -> float:
    """The Pearson correlation of a bivariate normal whose Spearman correlation is rho: 2 sin(pi rho / 6)."""
    return 2.0 * math.sin(math.pi * rho / 6.0)


def _latent_reliability(columns: np.ndarray) -> float:
    """Pearson-scale reliability of the mean of a table's S columns: the single-repeat Spearman rho converted
    to Pearson's r, clipped at 0, stepped up by Spearman-Brown (which holds for Pearson's r, not for ranks)."""
    rho = single_repeat_rho(columns)
    return math.nan if math.isnan(rho) else spearman_brown(pearson_from_spearman(rho), columns.shape[1])


def _tau_of_perfect(reference: np.ndarray, fitness: Optional[np.ndarray]) -> Tuple[float, float, float]:
    r_ref = _latent_reliability(reference)
    r_fit = 1.0 if fitness is None else _latent_reliability(fitness)
    if math.isnan(r_ref) or math.isnan(r_fit):
        return math.nan, r_ref, r_fit
    return (2.0 / math.pi) * math.asin(math.sqrt(r_ref * r_fit)), r_ref, r_fit


def perfect_supernet_tau(reference: ArrayLike, fitness: Optional[ArrayLike] = None, iterations: int = 2000,
                         seed: int = 0, level: float = 0.95) -> Dict[str, Any]:
    """The Kendall tau a perfect supernet is expected to reach against this reference: one whose fitness,
    averaged over endless draws, ranks the architectures exactly as the reference averaged over endless seeds.

    A model, not a bound: each side is taken as a monotone transform of a bivariate normal. Each side's
    single-repeat Spearman rho becomes Pearson's r (2 sin(pi rho / 6)), is stepped up to the mean of its repeats
    (Spearman-Brown, negative values clipped at 0), the two attenuate the perfect correlation to
    sqrt(R_ref R_fit), and Greiner's relation turns that into tau = (2 / pi) asin(r). An observed tau exceeds it
    about as often as not. `fitness` (K x F draws) adds the supernet's own draw noise; None (or a single draw)
    leaves it out, and 'supernet_reliability' is then None. 'interval' resamples the architectures (bootstrap):
    with 20 architectures the estimate itself is uncertain by about +-0.1, so conclusions should rest on the
    interval, not on the point.
    """
    ref = _as_reference(reference)
    fit = None if fitness is None else _as_draws(fitness, ref.shape[0], 'fitness')
    fit = None if fit is not None and fit.shape[1] < 2 else fit
    tau, r_ref, r_fit = _tau_of_perfect(ref, fit)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(iterations):
        rows = rng.integers(0, ref.shape[0], size=ref.shape[0])
        values.append(_tau_of_perfect(ref[rows], None if fit is None else fit[rows])[0])
    values = np.array(values)
    return {'tau': tau, 'interval': _percentile_interval(values[~np.isnan(values)], level),
            'reference_reliability': r_ref, 'supernet_reliability': None if fit is None else r_fit}


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


def top_k_overlap(x: ArrayLike, y: ArrayLike, k: int, seed: int = 0) -> Dict[str, float]:
    """How many of x's k best are among y's k best, and the 'chance' expectation k^2 / K under random rankings.

    Best = largest. Ties are broken at random (seeded): breaking them by index would favour whatever sits first,
    and the pick does (index 0 of trust.py's sample), which lifted a null overlap from 0.81 to 0.93.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.size != y.size:
        raise ValueError(f'x and y differ in length: {x.size} != {y.size}')
    rng = np.random.default_rng(seed)

    def best(values: np.ndarray) -> set:
        shuffled = rng.permutation(values.size)  # a stable sort of a shuffled order: ties in random order
        return set(shuffled[np.argsort(-values[shuffled], kind='stable')][:k].tolist())

    return {'overlap': len(best(x) & best(y)), 'chance': k * k / x.size}


def regret(pick: int, reference: ArrayLike) -> Dict[str, float]:
    """Stand-alone accuracy lost by picking architecture `pick` instead of the best one, as a bracket.

    The true regret (the best architecture's true accuracy minus the pick's) cannot be measured without bias
    from S seeds, but it can be bracketed. 'regret_all_seeds' chooses the best on the mean of all seeds and
    measures it there: the best of K noisy means is lucky, so this overestimates. 'regret_held_out' chooses the
    best on S - 1 seeds and measures it and the pick on the seed left out, averaged over every seed left out:
    unbiased for that choice, which is worse than the true best, so this underestimates (NaN with one seed; it
    can be negative). 'best' is the best on all seeds; 'percentile' is the percent of the other K - 1
    architectures whose mean over all seeds is strictly below the pick's (100 = the pick is the best).
    """
    ref = _as_reference(reference)
    k, seeds = ref.shape
    mean_all = ref.mean(axis=1)
    held_out = math.nan
    if seeds >= 2:
        gaps = []
        for left_out in range(seeds):
            means = np.delete(ref, left_out, axis=1).mean(axis=1)
            tied = np.flatnonzero(means == means.max())  # every tied best counts alike: argmax would favour the pick
            gaps.append(ref[tied, left_out].mean() - ref[pick, left_out])
        held_out = float(np.mean(gaps))
    below = int(np.count_nonzero(mean_all < mean_all[pick]))
    return {'regret_held_out': held_out, 'regret_all_seeds': float(mean_all.max() - mean_all[pick]),
            'best': int(np.argmax(mean_all)), 'percentile': 100.0 * below / (k - 1) if k > 1 else 100.0}


def binomial_standard_error(accuracy_percent: float, n: int) -> float:
    """Sampling error, in percentage points, of an accuracy measured on n test images: 100 sqrt(p (1 - p) / n).

    Differences between stand-alone accuracies smaller than this are test-set noise, whatever the seeds say.
    """
    p = accuracy_percent / 100.0
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


# ----------------------------------------------------------------------------------------------------------
# Paired differences over a few replicates (search seeds, training seeds)

def student_t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with an integer number of degrees of freedom, from the closed forms of
    Abramowitz & Stegun 26.7.3-4 (a finite series in cos(theta), theta = atan(t / sqrt(df)))."""
    if df < 1:
        raise ValueError(f'degrees of freedom must be at least 1 (got {df})')
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: 2/pi (theta + sin cos (1 + 2/3 cos^2 + (2*4)/(3*5) cos^4 + ...)), terms up to cos^(df-2)
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for i in range(1, (df - 1) // 2):
            term *= c2 * 2 * i / (2 * i + 1)
            total += term
        within = 2.0 / math.pi * (theta + s * math.cos(theta) * total)
    else:  # even: sin (1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ...), terms up to cos^(df-2)
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= c2 * (2 * i - 1) / (2 * i)
            total += term
        within = s * total
    return 0.5 + 0.5 * within if t >= 0 else 0.5 - 0.5 * within  # `within` is P(|T| <= |t|)


def student_t_quantile(p: float, df: int) -> float:
    """The t with P(T <= t) = p, by bisection on student_t_cdf (to 1e-10)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f'p must be in (0, 1) (got {p})')
    low, high = -1.0, 1.0
    while student_t_cdf(low, df) > p:
        low *= 2.0
    while student_t_cdf(high, df) < p:
        high *= 2.0
    while high - low > 1e-10:
        middle = (low + high) / 2.0
        low, high = (middle, high) if student_t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2.0


EXACT_SIGN_FLIPS = 16


def sign_flip_pvalue(differences: ArrayLike, iterations: int = 100000, seed: int = 0) -> float:
    """Two-sided sign-flip (paired permutation) p-value of a mean difference: the share of the 2^n sign patterns
    whose mean is at least as far from 0 as the observed one. Exact by enumeration up to n = 16 (65,536 patterns),
    Monte Carlo (with the observed pattern counted) above. Assumes each difference is symmetric about 0 under the null,
    nothing else. NaN for no differences."""
    d = np.asarray(differences, dtype=float).ravel()
    if d.size == 0 or np.isnan(d).any():
        return math.nan
    observed = abs(d.mean()) - 1e-12 * max(1.0, float(np.abs(d).max()))  # room for rounding in the sums
    if d.size <= EXACT_SIGN_FLIPS:
        patterns = ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1) * 2 - 1
        return float(np.mean(np.abs(patterns @ d) / d.size >= observed))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(iterations, d.size))
    return float((1 + np.count_nonzero(np.abs(signs @ d) / d.size >= observed)) / (1 + iterations))


def paired_differences(differences: ArrayLike, level: float = 0.95, power: float = 0.8) -> Dict[str, float]:
    """What n paired differences (a minus b, one per replicate) say about the mean difference.

    'mean', 'sd' and 'n'; 'low'/'high', the Student t interval at `level`; 'p', the sign-flip p-value (no
    normality assumed); 'detectable', the smallest true difference this design finds with probability `power`
    at the 5 % level, (t_0.975 + t_power) sd / sqrt(n); 'equivalence', the smallest margin m for which two
    one-sided tests at 5 % declare the difference within +-m (the larger end of the 90 % interval, in absolute
    value): where no difference shows, the data still rule out any larger than that. NaN where n < 2.
    """
    d = np.asarray(differences, dtype=float).ravel()
    d = d[~np.isnan(d)]
    n = int(d.size)
    result = {'n': n, 'mean': float(d.mean()) if n else math.nan, 'sd': math.nan, 'low': math.nan, 'high': math.nan,
              'p': sign_flip_pvalue(d), 'detectable': math.nan, 'equivalence': math.nan}
    if n < 2:
        return result
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = student_t_quantile(0.5 + level / 2.0, n - 1) * se
    half90 = student_t_quantile(0.95, n - 1) * se
    result.update(sd=sd, low=result['mean'] - half, high=result['mean'] + half,
                  detectable=(student_t_quantile(0.975, n - 1) + student_t_quantile(power, n - 1)) * se,
                  equivalence=abs(result['mean']) + half90)
    return result
