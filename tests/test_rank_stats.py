"""Rank-agreement statistics against hand-worked answers, published critical values and brute-force counts."""
import itertools
import math

import numpy as np
import pytest

from stats import rank_stats as rs

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

    def test_a_negative_rho_is_clipped_at_zero_before_stepping_up(self):
        # The formula alone divides by zero at r = -1 (n = 2) and leaves [-1, 1] below -1/(n-1): 3 seeds at -0.45
        # gave -13.5. A negative single-seed rho means no signal.
        assert rs.spearman_brown(-1.0, 2) == 0.0
        assert rs.spearman_brown(-0.45, 3) == 0.0
        reversed_columns = np.stack([np.arange(4.0), -np.arange(4.0)], axis=1)  # rho -1 between the two seeds
        assert rs.reliability(reversed_columns) == 0.0
        assert math.isnan(rs.spearman_brown(math.nan, 2))

    def test_its_interval_resamples_the_architectures(self):
        rng = np.random.default_rng(0)
        truth = np.arange(20.0)
        reliable = truth[:, None] + 2.0 * rng.standard_normal((20, 3))
        low, high = rs.reliability_interval(reliable, iterations=400, seed=1)
        assert low < rs.reliability(reliable) < high and 0.8 < low
        assert rs.reliability_interval(reliable, iterations=400, seed=1) == (low, high)
        noise = rng.standard_normal((20, 3))
        low, high = rs.reliability_interval(noise, iterations=400, seed=1)
        assert low == 0.0 and high < 0.8


class TestPerfectSupernetTau:
    def test_perfect_reliability_gives_one(self):
        column = np.arange(6.0)
        result = rs.perfect_supernet_tau(np.stack([column, column], axis=1), iterations=50)
        assert result['tau'] == pytest.approx(1.0) and result['supernet_reliability'] is None

    def test_spearman_reliability_is_converted_to_pearson_before_stepping_up(self):
        # Two seeds with Spearman rho 0.5 (TIED_X, TIED_Y): Pearson r = 2 sin(pi 0.5 / 6) = 0.5176, stepped up to
        # the mean of 2 seeds 2r / (1 + r) = 0.6822; a perfect supernet's latent correlation sqrt(0.6822), so
        # tau = 2/pi asin(0.8260) = 0.6188. Stepping the rank reliability up directly gave 2/3 and tau 0.6082.
        reference = np.stack([TIED_X, TIED_Y], axis=1)
        r = 2 * math.sin(math.pi * 0.5 / 6)
        stepped = 2 * r / (1 + r)
        result = rs.perfect_supernet_tau(reference, iterations=50)
        assert result['reference_reliability'] == pytest.approx(stepped)
        assert result['tau'] == pytest.approx(2 / math.pi * math.asin(math.sqrt(stepped)))
        assert result['tau'] == pytest.approx(0.6188, abs=1e-4)

    def test_fitness_draw_noise_attenuates_it_too(self):
        reference = np.stack([TIED_X, TIED_Y], axis=1)
        fitness = np.stack([TIED_Y, TIED_X], axis=1)  # the same reliability on the supernet side
        result = rs.perfect_supernet_tau(reference, fitness, iterations=50)
        r = 2 * math.sin(math.pi * 0.5 / 6)
        assert result['tau'] == pytest.approx(2 / math.pi * math.asin(2 * r / (1 + r)))
        one_draw = rs.perfect_supernet_tau(reference, fitness[:, :1], iterations=50)
        assert one_draw['supernet_reliability'] is None and one_draw['tau'] > result['tau']

    def test_negative_reliability_means_zero_and_the_interval_holds_the_estimate(self):
        reversed_columns = np.stack([np.arange(5.0), -np.arange(5.0)], axis=1)
        assert rs.perfect_supernet_tau(reversed_columns, iterations=50)['tau'] == 0.0
        _, reference = _correlated(k=20, seeds=2, seed=3)
        result = rs.perfect_supernet_tau(reference, iterations=400, seed=2)
        low, high = result['interval']
        assert low <= result['tau'] <= high and high - low > 0.02


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

    def test_ties_are_broken_at_random_so_a_tied_reference_overlaps_by_chance(self):
        # Fitness ranks the pick (index 0) first; the reference ties everything. Breaking ties by index put the
        # pick in the reference's top-k every time (overlap 2 of 2 here); at random the mean is k^2 / K = 0.4.
        fitness, tied = np.arange(10.0)[::-1], np.zeros(10)
        overlaps = [rs.top_k_overlap(fitness, tied, 2, seed=s)['overlap'] for s in range(400)]
        assert np.mean(overlaps) == pytest.approx(0.4, abs=0.1)
        assert rs.top_k_overlap(fitness, tied, 2, seed=7) == rs.top_k_overlap(fitness, tied, 2, seed=7)


class TestRegret:
    # all-seed mean: 90, 91.67, 88, 92 -> best 3
    # leaving out seed 0: means of seeds 1-2 90, 91.5, 88, 92.5 -> 3; on seed 0: 91 - 90 = 1
    # leaving out seed 1: means of seeds 0, 2 89.5, 91, 88, 92.5 -> 3; on seed 1: 91 - 91 = 0
    # leaving out seed 2: means of seeds 0-1 90.5, 92.5, 88, 91 -> 1; on seed 2: 90 - 89 = 1
    REFERENCE = np.array([[90.0, 91.0, 89.0],
                          [92.0, 93.0, 90.0],
                          [88.0, 88.0, 88.0],
                          [91.0, 91.0, 94.0]])

    def test_known_answer_a_bracket(self):
        result = rs.regret(0, self.REFERENCE)
        assert result['best'] == 3
        assert result['regret_held_out'] == pytest.approx(2 / 3)  # every seed left out in turn, not only the last
        assert result['regret_all_seeds'] == pytest.approx(2.0)  # 92 - 90
        assert result['percentile'] == pytest.approx(100 / 3)  # only arch 2 (88) of the other 3 is below 90

    def test_held_out_regret_can_be_negative_and_the_best_scores_100(self):
        result = rs.regret(3, self.REFERENCE)
        assert result['regret_held_out'] == pytest.approx(-4 / 3)  # (0 + 0 + (90 - 94)) / 3
        assert result['percentile'] == 100.0
        assert result['regret_all_seeds'] == 0.0

    def test_one_seed_has_no_held_out_regret(self):
        result = rs.regret(0, self.REFERENCE[:, :1])
        assert math.isnan(result['regret_held_out'])
        assert result['regret_all_seeds'] == pytest.approx(2.0)  # 92 - 90 on seed 0

    def test_a_tie_for_the_best_does_not_go_to_the_pick(self):
        # Leaving out seed 1, the pick (index 0) and index 1 tie on seed 0 (90 each): both count, so the gap on seed
        # 1 is (91 + 93) / 2 - 91 = 1, not 0 as argmax's first index (the pick) would make it. Leaving out seed 0,
        # index 1 is best on seed 1: 90 - 90 = 0.
        reference = np.array([[90.0, 91.0], [90.0, 93.0], [88.0, 88.0]])
        assert rs.regret(0, reference)['regret_held_out'] == pytest.approx(0.5)

    def test_the_bracket_holds_the_true_regret_on_average(self):
        # 12 architectures whose true accuracies are known, 3 seeds of noise each: averaged over many samples the
        # held-out regret lies below the true one and the all-seeds regret above it.
        rng = np.random.default_rng(5)
        truth = np.linspace(90.0, 92.0, 12)
        held, everything = [], []
        for _ in range(300):
            reference = truth[:, None] + rng.normal(0.0, 0.8, size=(12, 3))
            result = rs.regret(0, reference)
            held.append(result['regret_held_out'])
            everything.append(result['regret_all_seeds'])
        true_regret = truth.max() - truth[0]
        assert np.mean(held) < true_regret < np.mean(everything)


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


class TestPairedDifferences:
    def test_student_t_against_published_quantiles(self):
        # two-sided 95 % critical values of Student's t (any statistics table)
        for df, t in [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (19, 2.093), (30, 2.042)]:
            assert rs.student_t_quantile(0.975, df) == pytest.approx(t, abs=5e-4)
        assert rs.student_t_cdf(0.0, 7) == pytest.approx(0.5)
        assert rs.student_t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1) / pi
        assert rs.student_t_cdf(-1.0, 2) == pytest.approx(0.5 - 0.5 / math.sqrt(3))  # df 2: t / (2 sqrt(2 + t^2))

    def test_sign_flip_pvalue_by_hand(self):
        # 4 positive differences: only all-plus and all-minus of the 16 sign patterns reach |mean| 2.5
        assert rs.sign_flip_pvalue([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2 / 16)
        # [1, 1, -1]: patterns with |sum| >= 1 are all 8 (a sum of three +-1 is odd)
        assert rs.sign_flip_pvalue([1.0, 1.0, -1.0]) == 1.0
        # [3, 1]: +-3 +-1 gives 4, 2, -2, -4: all reach |mean| 1, and only +-4 reach 2
        assert rs.sign_flip_pvalue([3.0, 1.0]) == pytest.approx(2 / 4)

    def test_sign_flip_pvalue_matches_enumeration(self):
        d = np.array([0.5, 1.2, -0.3, 0.8, 0.9, 0.1, 0.4, 1.0])
        count = sum(abs(np.dot(signs, d)) >= abs(d.sum()) - 1e-9 for signs in itertools.product([-1, 1], repeat=8))
        assert rs.sign_flip_pvalue(d) == pytest.approx(count / 256)

    def test_known_answer(self):
        d = [1.0, 2.0, 3.0, 4.0]  # mean 2.5, sd sqrt(5/3), se sqrt(5/12)
        result = rs.paired_differences(d)
        se = math.sqrt(5 / 12)
        assert result['mean'] == 2.5 and result['n'] == 4
        assert result['low'] == pytest.approx(2.5 - 3.1824 * se, abs=1e-3)
        assert result['high'] == pytest.approx(2.5 + 3.1824 * se, abs=1e-3)
        assert result['equivalence'] == pytest.approx(2.5 + 2.3534 * se, abs=1e-3)  # t_0.95 with 3 df
        assert result['detectable'] == pytest.approx((3.1824 + 0.9785) * se, abs=1e-3)  # t_0.8 with 3 df
        assert result['p'] == pytest.approx(2 / 16)

    def test_one_difference_has_no_interval(self):
        result = rs.paired_differences([1.0])
        assert result['mean'] == 1.0 and math.isnan(result['low']) and math.isnan(result['detectable'])
