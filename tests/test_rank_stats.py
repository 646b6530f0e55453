"""Rank-agreement statistics against hand-worked answers, published critical values and brute-force counts."""
import itertools
import math

import numpy as np
import pytest

import rank_stats as rs

# Hand example with ties, pairs (i, j), i < j:
#   x = [1, 2, 2, 3], y = [1, 3, 2, 2]
#   (0,1) +/+ C   (0,2) +/+ C   (0,3) +/+ C   (1,2) 0/- tied in x   (1,3) +/- D   (2,3) +/0 tied in y
#   C = 3, D = 1, n0 = 6, n1 = 1, n2 = 1: tau_b = (3 - 1) / sqrt(5 * 5) = 0.4
#   ranks x = [1, 2.5, 2.5, 4], y = [1, 4, 2.5, 2.5]; deviations [-1.5, 0, 0, 1.5] and [-1.5, 1.5, 0, 0]:
#   rho = 2.25 / sqrt(4.5 * 4.5) = 0.5
TIED_X, TIED_Y = [1, 2, 2, 3], [1, 3, 2, 2]


def _naive_tau_b(x, y) -> float:
    """tau-b straight from its definition, pair by pair."""
    concordant = discordant = tied_x = tied_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[j] - x[i]), np.sign(y[j] - y[i])
        tied_x += dx == 0
        tied_y += dy == 0
        concordant += dx * dy > 0
        discordant += dx * dy < 0
    n0 = len(x) * (len(x) - 1) // 2
    return (concordant - discordant) / math.sqrt((n0 - tied_x) * (n0 - tied_y))


def _correlated(k=30, seeds=3, seed=0):
    """A true ranking, a reference that measures it with seed noise and a fitness that measures it with more."""
    rng = np.random.default_rng(seed)
    truth = np.linspace(0.0, 3.0, k)
    return truth + 0.5 * rng.standard_normal(k), truth[:, None] + 0.3 * rng.standard_normal((k, seeds))


class TestAverageRanks:
    def test_ties_share_the_mean_rank(self):
        assert rs.average_ranks([10, 20, 20, 30]).tolist() == [1, 2.5, 2.5, 4]

    def test_unsorted_triple_tie(self):
        # 1 -> 1, 2 -> 2, the three 3s span ranks 3, 4, 5 -> 4
        assert rs.average_ranks([3, 1, 3, 3, 2]).tolist() == [4, 1, 4, 4, 2]


class TestKendallTauB:
    def test_hand_example_with_ties(self):
        assert rs.kendall_tau_b(TIED_X, TIED_Y) == pytest.approx(0.4)

    def test_perfect_agreement_and_reversal(self):
        assert rs.kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
        assert rs.kendall_tau_b([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0

    def test_constant_side_or_single_item_is_nan(self):
        assert math.isnan(rs.kendall_tau_b([1, 2, 3], [5, 5, 5]))
        assert math.isnan(rs.kendall_tau_b([7, 7, 7], [1, 2, 3]))
        assert math.isnan(rs.kendall_tau_b([1], [1]))

    def test_matches_the_pairwise_definition_on_tied_data(self):
        rng = np.random.default_rng(3)
        for _ in range(20):
            x, y = rng.integers(0, 4, size=12), rng.integers(0, 5, size=12)
            assert rs.kendall_tau_b(x, y) == pytest.approx(_naive_tau_b(x, y))


class TestSpearmanRho:
    def test_hand_example_with_ties(self):
        assert rs.spearman_rho(TIED_X, TIED_Y) == pytest.approx(0.5)

    def test_perfect_agreement_and_reversal_on_ranks_not_values(self):
        assert rs.spearman_rho([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
        assert rs.spearman_rho([1, 2, 3, 4], [1000, 100, 10, 1]) == pytest.approx(-1.0)

    def test_constant_side_is_nan(self):
        assert math.isnan(rs.spearman_rho([1, 2, 3], [5, 5, 5]))


class TestReliability:
    def test_spearman_brown_known_values(self):
        assert rs.spearman_brown(0.5, 2) == pytest.approx(2 / 3)
        assert rs.spearman_brown(0.37, 1) == pytest.approx(0.37)
        assert rs.spearman_brown(0.5, 0.5) == pytest.approx(1 / 3)  # 0.25 / (1 - 0.25): half a measurement

    def test_identical_columns_are_perfectly_reliable(self):
        column = np.array([3.0, 1.0, 4.0, 1.5, 9.0])
        assert rs.reliability(np.stack([column] * 3, axis=1)) == pytest.approx(1.0)

    def test_two_columns_step_up_from_their_rho(self):
        columns = np.stack([TIED_X, TIED_Y], axis=1)  # rho 0.5
        assert rs.reliability(columns) == pytest.approx(2 / 3)
        assert rs.reliability(columns, n=1) == pytest.approx(0.5)

    def test_fewer_than_two_columns_is_nan(self):
        assert math.isnan(rs.reliability(np.ones((5, 1))))


class TestNoiseCeiling:
    def test_perfect_reliability_has_no_ceiling(self):
        assert rs.noise_ceiling(1.0, 1.0) == pytest.approx({'rho': 1.0, 'tau': 1.0})

    def test_attenuated(self):
        ceiling = rs.noise_ceiling(0.64, 1.0)
        assert ceiling['rho'] == pytest.approx(0.8)
        assert ceiling['tau'] == pytest.approx(2 / math.pi * math.asin(0.8))  # 0.5903

    def test_negative_clipped_and_nan_passes_through(self):
        assert rs.noise_ceiling(-0.2, 0.9) == pytest.approx({'rho': 0.0, 'tau': 0.0})
        assert all(math.isnan(v) for v in rs.noise_ceiling(math.nan, 0.9).values())


class TestKendallNull:
    @pytest.mark.parametrize('n, fraction', [(8, 18 / 28), (10, 23 / 45), (20, 62 / 190)])
    def test_critical_tau_matches_published_tables(self, n, fraction):
        # Published two-sided alpha = 0.05 values: 0.643 (n = 8), 0.511 (n = 10), 0.326 (n = 20)
        assert rs.kendall_critical_tau(n) == pytest.approx(fraction)

    def test_critical_tau_is_nan_when_nothing_is_significant(self):
        assert math.isnan(rs.kendall_critical_tau(4))  # even tau = 1 has p = 2 / 24

    @pytest.mark.parametrize('n', [2, 3, 5, 9])
    def test_pvalue_of_perfect_agreement_is_two_over_n_factorial(self, n):
        assert rs.kendall_null_pvalue(1.0, n) == pytest.approx(2 / math.factorial(n))
        assert rs.kendall_null_pvalue(-1.0, n) == pytest.approx(2 / math.factorial(n))

    def test_pvalue_matches_enumeration_of_all_permutations(self):
        n = 6
        taus = np.array([rs.kendall_tau_b(range(n), p) for p in itertools.permutations(range(n))])
        for tau in [0.0, 1 / 15, 0.2, 7 / 15, 0.6, 13 / 15]:
            assert rs.kendall_null_pvalue(tau, n) == pytest.approx(np.mean(np.abs(taus) >= tau - 1e-9))

    def test_mahonian_numbers(self):
        assert rs._mahonian(4) == [1, 3, 5, 6, 5, 3, 1]


class TestPermutationPvalue:
    X = np.arange(10)
    Y = np.array([3, 1, 6, 2, 0, 4, 9, 5, 7, 8])  # tau 21/45, exact p 0.073

    def test_deterministic_for_a_seed(self):
        assert rs.permutation_pvalue(self.X, self.Y, 500, seed=1) == rs.permutation_pvalue(self.X, self.Y, 500, seed=1)
        assert rs.permutation_pvalue(self.X, self.Y, 500, seed=1) != rs.permutation_pvalue(self.X, self.Y, 500, seed=2)

    def test_close_to_the_exact_null_without_ties(self):
        exact = rs.kendall_null_pvalue(rs.kendall_tau_b(self.X, self.Y), 10)
        assert 0.001 < exact < 0.2, 'the example should sit in the body of the null, where the two can be compared'
        assert rs.permutation_pvalue(self.X, self.Y, 3000, seed=0) == pytest.approx(exact, abs=0.02)


class TestBootstrap:
    def test_deterministic_for_a_seed(self):
        fitness, reference = _correlated()
        first = rs.bootstrap_interval(fitness, reference, rs.kendall_tau_b, 500, seed=1)
        assert first == rs.bootstrap_interval(fitness, reference, rs.kendall_tau_b, 500, seed=1)
        assert first != rs.bootstrap_interval(fitness, reference, rs.kendall_tau_b, 500, seed=2)

    def test_correlated_interval_holds_the_estimate_and_excludes_zero(self):
        fitness, reference = _correlated()
        observed = rs.kendall_tau_b(fitness, reference.mean(axis=1))
        low, high = rs.bootstrap_interval(fitness, reference, rs.kendall_tau_b, 500, seed=0)
        assert 0.0 < low < observed < high

    def test_two_dimensional_fitness(self):
        fitness, reference = _correlated()
        draws = fitness[:, None] + 0.1 * np.random.default_rng(5).standard_normal((fitness.size, 4))
        low, high = rs.bootstrap_interval(draws, reference, rs.spearman_rho, 500, seed=0)
        assert 0.0 < low < rs.spearman_rho(draws.mean(axis=1), reference.mean(axis=1)) < high

    def test_seeds_and_draws_are_resampled_too(self):
        # The means rank perfectly (tau 1 on every resample of architectures alone) but the seeds and the draws
        # scatter by +-10 around them: only resampling them can move the lower bound below 1.
        k = np.arange(20.0)
        scattered = k[:, None] + np.array([-10.0, 10.0])
        assert rs.bootstrap_interval(k, np.stack([k, k], axis=1), rs.kendall_tau_b, 200, seed=0) == (1.0, 1.0)
        assert rs.bootstrap_interval(k, scattered, rs.kendall_tau_b, 200, seed=0)[0] < 0.9
        assert rs.bootstrap_interval(scattered, np.stack([k, k], axis=1), rs.kendall_tau_b, 200, seed=0)[0] < 0.9

    def test_independent_noise_brackets_zero(self):
        rng = np.random.default_rng(7)
        low, high = rs.bootstrap_interval(rng.standard_normal(30), rng.standard_normal((30, 3)), rs.kendall_tau_b,
                                          500, seed=0)
        assert low < 0.0 < high

    def test_constant_fitness_gives_nan(self):
        _, reference = _correlated()
        low, high = rs.bootstrap_interval(np.ones(30), reference, rs.kendall_tau_b, 50, seed=0)
        assert math.isnan(low) and math.isnan(high)


class TestPairedBootstrap:
    @pytest.mark.parametrize('draws', [False, True])
    def test_an_estimator_against_itself_is_exactly_zero(self, draws):
        fitness, reference = _correlated()
        if draws:
            fitness = fitness[:, None] + np.random.default_rng(5).standard_normal((fitness.size, 3))
        result = rs.paired_bootstrap_difference(fitness, fitness, reference, rs.kendall_tau_b, 500, seed=0)
        assert result == {'difference': 0.0, 'low': 0.0, 'high': 0.0, 'p_below_zero': 1.0}

    def test_reference_seeds_are_resampled(self):
        # Every architecture's seeds are -1 and +1, mean 0: a statistic of the reference mean alone (a = 1, b = 0)
        # is 0 on every resample of architectures, and varies only when the seeds are resampled as well.
        reference = np.tile([-1.0, 1.0], (20, 1))
        result = rs.paired_bootstrap_difference(np.ones(20), np.zeros(20), reference,
                                                lambda f, r: float(np.mean(f * r)), 200, seed=0)
        assert result['difference'] == 0.0 and result['low'] < 0.0 < result['high']

    def test_the_better_estimator_wins(self):
        fitness, reference = _correlated()
        worse = fitness + 2.0 * np.random.default_rng(9).standard_normal(fitness.size)
        result = rs.paired_bootstrap_difference(fitness, worse, reference, rs.kendall_tau_b, 500, seed=0)
        assert 0.0 < result['low'] < result['difference'] < result['high']
        assert result['p_below_zero'] < 0.025
        again = rs.paired_bootstrap_difference(fitness, worse, reference, rs.kendall_tau_b, 500, seed=0)
        assert again == result


class TestTopKOverlap:
    def test_known_answer(self):
        # top-2 of x: indices 0 (5) and 4 (4); of y: 4 (5) and 3 (4)
        assert rs.top_k_overlap([5, 3, 3, 1, 4], [1, 2, 3, 4, 5], 2) == {'overlap': 1, 'chance': 0.8}

    def test_ties_go_to_the_lower_index(self):
        # x's top-2 is {0, 1} (not {1, 2}), y's is {3, 2}: no overlap
        assert rs.top_k_overlap([3, 3, 3, 0], [0, 0, 1, 2], 2)['overlap'] == 0


class TestRegret:
    # seeds 0-1 mean: 90.5, 92.5, 88, 91 -> best = 1; held-out seed 2: 89, 90, 88, 94
    # all-seed mean: 90, 91.67, 88, 92
    REFERENCE = np.array([[90.0, 91.0, 89.0],
                          [92.0, 93.0, 90.0],
                          [88.0, 88.0, 88.0],
                          [91.0, 91.0, 94.0]])

    def test_known_answer(self):
        result = rs.regret(0, self.REFERENCE)
        assert result['best'] == 1
        assert result['regret'] == pytest.approx(1.0)  # 90 - 89 on seed 2
        assert result['percentile'] == pytest.approx(100 / 3)  # only arch 2 (88) of the other 3 is below 90
        assert result['regret_all_seeds'] == pytest.approx(2.0)  # 92 - 90

    def test_held_out_regret_can_be_negative_and_the_best_scores_100(self):
        result = rs.regret(3, self.REFERENCE)
        assert result['regret'] == pytest.approx(-4.0)  # 90 - 94: arch 1 was chosen on lucky seeds
        assert result['percentile'] == 100.0
        assert result['regret_all_seeds'] == 0.0

    def test_one_seed_has_no_unbiased_regret(self):
        result = rs.regret(0, self.REFERENCE[:, :1])
        assert math.isnan(result['regret'])
        assert result['regret_all_seeds'] == pytest.approx(2.0)  # 92 - 90 on seed 0


class TestBinomialStandardError:
    def test_known_values(self):
        assert rs.binomial_standard_error(50.0, 10000) == pytest.approx(0.5)
        assert rs.binomial_standard_error(97.0, 10000) == pytest.approx(100 * math.sqrt(0.97 * 0.03 / 10000))
        assert rs.binomial_standard_error(100.0, 10000) == 0.0


def test_pooling_one_run_is_its_paired_bootstrap_and_averages_the_runs():
    rng = np.random.default_rng(4)
    reference = rng.normal(size=(12, 2)) + np.arange(12)[:, None]
    a = reference.mean(1) + rng.normal(size=12)
    b = reference.mean(1) + 3 * rng.normal(size=12)
    single = rs.paired_bootstrap_difference(a, b, reference, rs.kendall_tau_b, iterations=300, seed=2)
    assert rs.pooled_paired_difference([(a, b, reference)], rs.kendall_tau_b, iterations=300, seed=2) == single
    twice = rs.pooled_paired_difference([(a, b, reference), (b, a, reference)], rs.kendall_tau_b, iterations=300)
    assert twice['difference'] == pytest.approx(0.0)
