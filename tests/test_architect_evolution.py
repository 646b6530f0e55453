"""Decoding and the genetic operators, against hand-made cases and statistically over many seeded draws."""
import math

import pytest
import torch

import architect_evolution as ae
from genotypes import PRIMITIVES


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _individual(fitness, seed):
    ind = ae.random_individual(ae.darts_shapes(4), _gen(seed))
    ind.fitness = fitness
    return ind


def _filled(fill: float) -> ae.Individual:
    """An individual every alpha of which is `fill`: its rows name their parent."""
    return ae.Individual([torch.full(shape, fill) for shape in ae.darts_shapes(4)])


class TestDecode:
    def test_two_edges_per_node_one_op_each_never_none(self):
        g = _gen(1)
        for _ in range(200):
            alphas = ae.random_individual(ae.darts_shapes(4), g).alphas
            for cell in ae.decode(alphas):
                assert set(cell.unique().tolist()) == {0., 1.}
                assert (cell.sum(1) <= 1).all(), 'one op per kept edge'
                assert (cell[:, PRIMITIVES.index('none')] == 0).all(), 'never none'
                offset = 0
                for node in range(4):
                    assert cell[offset:offset + node + 2].sum() == 2, 'exactly two inputs per node'
                    offset += node + 2

    def test_none_largest_takes_the_second_largest(self):
        row = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.5, 0.4, 0.0, 0.05])
        alphas = torch.rand(14, 8, generator=_gen(2)) * 0.01
        alphas[0] = row
        alphas[1] = row * 0.5  # node 0 keeps both of its edges whatever their strength
        decoded = ae.decode([alphas, alphas])[0]
        assert decoded[0].argmax().item() == PRIMITIVES.index('sep_conv_3x3')
        assert ae.derive_cell(alphas)[0][0] == 'sep_conv_3x3'

    def test_ties_go_to_the_lower_op_index(self):
        alphas = torch.zeros(14, 8)
        alphas[:, 2] = 1.
        alphas[:, 5] = 1.  # avg_pool_3x3 and sep_conv_5x5 tie
        assert {op for op, _ in ae.derive_cell(alphas)} == {'avg_pool_3x3'}

    def test_kept_edges_listed_in_ranked_order_with_stable_ties(self):
        alphas = torch.zeros(14, 8)
        alphas[2:5, 4] = torch.tensor([1., 3., 2.])  # node 1: inputs 0, 1, 2 with strengths 1 < 3 > 2
        cell = ae.derive_cell(alphas)
        assert cell[2:4] == [('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], 'strongest first, not by input index'
        # node 2 (rows 5..8) all equal: a stable sort keeps input order, so inputs 0 and 1 are kept
        assert [index for _, index in cell[4:6]] == [0, 1]

    def test_softmax_of_decoded_alphas(self):
        decoded = ae.decode(ae.random_individual(ae.darts_shapes(4), _gen(3)).alphas)[0]
        weights = torch.softmax(decoded, dim=-1)
        kept = decoded.sum(1) == 1
        assert torch.allclose(weights[decoded.bool()], torch.tensor(math.e / (math.e + 7)))
        assert torch.allclose(weights[kept][~decoded[kept].bool()], torch.tensor(1 / (math.e + 7)))
        assert torch.allclose(weights[~kept], torch.tensor(0.125))

    def test_decoded_architecture_is_the_derived_genotype(self):
        alphas = ae.random_individual(ae.darts_shapes(4), _gen(5)).alphas
        genotype = ae.derive_genotype(alphas)
        for cell, edges in zip(ae.decode(alphas), (genotype.normal, genotype.reduce)):
            rows = []
            offset = 0
            for node in range(4):
                rows += [(offset + index, PRIMITIVES.index(op)) for op, index in edges[2 * node:2 * node + 2]]
                offset += node + 2
            assert sorted(rows) == sorted(map(tuple, cell.nonzero().tolist()))

    def test_cells_of_other_sizes(self):
        # derive_genotype reads the node count from the rows: 3 nodes (9 edges), concat of the last 3.
        alphas = [torch.rand(9, 8, generator=_gen(7)) for _ in range(2)]
        genotype = ae.derive_genotype(alphas, multiplier=3)
        assert len(genotype.normal) == 6 and genotype.normal_concat == [2, 3, 4]
        with pytest.raises(ValueError, match='do not form a cell'):
            ae.derive_genotype([torch.rand(13, 8), torch.rand(13, 8)])


class TestSelection:
    def test_nan_fitness_ranks_last_and_is_never_an_elite(self):
        population = [_individual(f, i) for i, f in enumerate([math.nan, 50., 70., math.nan, 60.])]
        ranked = ae.sort_population(population)
        assert [ind.fitness for ind in ranked[:3]] == [70., 60., 50.]
        assert all(math.isnan(ind.fitness) for ind in ranked[3:])
        nxt = ae.evolve(population, 2, 2, 0.1, _gen(6))
        assert torch.equal(nxt[0].alphas[0], population[2].alphas[0])
        assert torch.equal(nxt[1].alphas[0], population[4].alphas[0])

    def test_stable_sort_keeps_population_order_on_ties(self):
        population = [_individual(50., i) for i in range(4)]
        assert ae.sort_population(population) == population

    def test_tournament_is_without_replacement(self):
        # Without replacement the worst of 6 can never win a tournament of 2; with replacement it would win
        # 1/36 of them.
        population = [_individual(float(f), f) for f in range(6)]
        g = _gen(7)
        wins = [ae.tournament_selection(population, 2, g).fitness for _ in range(3000)]
        assert 0. not in wins
        # P(rank r of 6 wins a tournament of 2) = (6 - r) / 15 for r = 1..6 (r = 1 the best)
        for fitness in range(1, 6):
            expected = fitness / 15
            observed = wins.count(float(fitness)) / len(wins)
            assert abs(observed - expected) < 4 * math.sqrt(expected * (1 - expected) / len(wins))

    def test_tournament_of_everyone_picks_the_best(self):
        population = [_individual(float(f), f) for f in (3, 9, 1, 7)]
        assert all(ae.tournament_selection(population, 4, _gen(s)).fitness == 9. for s in range(20))


class TestVariation:
    def test_crossover_takes_whole_rows_from_either_parent_half_the_time(self):
        g = _gen(8)
        from_first = 0
        rows = 0
        for _ in range(300):
            p1, p2 = ae.random_individual(ae.darts_shapes(4), g), ae.random_individual(ae.darts_shapes(4), g)
            child = ae.crossover(p1, p2, g)
            for c, a, b in zip(child.alphas, p1.alphas, p2.alphas):
                same_a = (c == a).all(1)
                same_b = (c == b).all(1)
                assert (same_a | same_b).all(), 'every child row is a whole row of one parent'
                from_first += same_a.sum().item()
                rows += c.shape[0]
        assert abs(from_first / rows - 0.5) < 4 * math.sqrt(0.25 / rows)

    @pytest.mark.parametrize('rate', [0.0, 0.1, 0.5, 1.0])
    def test_mutation_frequency_matches_the_rate(self, rate):
        g = _gen(9)
        hits = rows = 0
        for _ in range(300):
            parent = ae.random_individual(ae.darts_shapes(4), g)
            child = ae.mutate(parent, rate, g)
            for c, a in zip(child.alphas, parent.alphas):
                changed = (c != a).all(1)  # a fresh U(0,1) row differs from the old one everywhere
                assert ((c == a).all(1) | changed).all(), 'rows are replaced whole'
                assert ((c >= 0) & (c < 1)).all()
                hits += changed.sum().item()
                rows += c.shape[0]
        tolerance = 4 * math.sqrt(max(rate * (1 - rate), 1e-12) / rows)
        assert abs(hits / rows - rate) <= tolerance

    def test_evolve_keeps_elites_unchanged_and_fills_the_population(self):
        population = [_individual(float(f), f) for f in range(10)]
        for seed in range(20):
            nxt = ae.evolve(population, 3, 4, 1.0, _gen(seed))
            assert len(nxt) == 10
            for elite, best in zip(nxt[:3], ae.sort_population(population)[:3]):
                assert all(torch.equal(a, b) for a, b in zip(elite.alphas, best.alphas))
                assert elite.alphas[0] is not best.alphas[0], 'elites are copies'
            # mutate_rate 1 replaces every row of every child: none equals any parent row
            parents = torch.cat([ind.alphas[0] for ind in population])
            for child in nxt[3:]:
                assert not (child.alphas[0][:, None] == parents[None]).all(-1).any()

    def test_same_seed_same_next_generation(self):
        population = [_individual(float(f), f) for f in range(8)]
        a = ae.evolve(population, 1, 3, 0.2, _gen(11))
        b = ae.evolve(population, 1, 3, 0.2, _gen(11))
        assert all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p.alphas, q.alphas))


class TestDirection:
    """Which parent a row comes from, and that selection keeps the better individuals: known answers from the
    original's draws, with parents that can be told apart (a test symmetric in the parents cannot fail when
    they are swapped)."""

    def test_crossover_takes_a_row_from_the_first_parent_where_the_draw_is_at_least_a_half(self):
        # The original (ga.py, crossover_chromosomes): `if np.random.rand() >= 0.5: row of chromosome1, else of
        # chromosome2`, one draw per row, normal cell first. Here the draws are torch's, in the same order.
        p1, p2 = _filled(fill=1.), _filled(fill=2.)
        for seed in range(5):
            child = ae.crossover(p1, p2, _gen(seed))
            draws = _gen(seed)
            for cell in child.alphas:
                from_first = torch.rand(cell.shape[0], generator=draws) >= 0.5
                assert 0 < from_first.sum() < cell.shape[0], 'both parents give rows (the test can tell them apart)'
                assert torch.equal(cell[:, 0], torch.where(from_first, 1., 2.))

    def test_evolve_against_the_originals_recipe(self):
        """The next generation worked out step by step as the original does it (ga.py): the elites are the best,
        then per child two tournaments (a draw of tsize without replacement, its best wins, ties to the one drawn
        first) and a crossover of the first winner with the second, then every child is mutated."""
        fitness = [31., 75., 12., 58., 90., 44., 67., 23.]
        population = [_individual(f, seed) for seed, f in enumerate(fitness)]
        num_elites, tsize, rate = 2, 3, 0.3
        nxt = ae.evolve(population, num_elites, tsize, rate, _gen(12))

        draws = _gen(12)
        ranked = sorted(population, key=lambda ind: -ind.fitness)
        assert [ind.fitness for ind in ranked[:num_elites]] == [90., 75.]

        def tournament():
            drawn = [ranked[i] for i in torch.randperm(len(ranked), generator=draws)[:tsize].tolist()]
            return max(drawn, key=lambda ind: ind.fitness)  # max keeps the first of equal ones

        children = []
        for _ in range(len(population) - num_elites):
            first, second = tournament(), tournament()
            rows = [torch.where((torch.rand(a.shape[0], generator=draws) >= 0.5)[:, None], a, b)
                    for a, b in zip(first.alphas, second.alphas)]
            children.append(rows)
        for rows in children:
            for k, a in enumerate(rows):
                hit = torch.rand(a.shape[0], generator=draws) < rate
                rows[k] = torch.where(hit[:, None], torch.rand(a.shape, generator=draws), a)

        expected = [ind.alphas for ind in ranked[:num_elites]] + children
        assert len(nxt) == len(expected)
        for got, want in zip(nxt, expected):
            assert all(torch.equal(a, b) for a, b in zip(got.alphas, want))

    def test_a_tournament_returns_its_best_and_never_a_worse_one(self):
        population = [_individual(float(f), f) for f in (5, 1, 8, 3, 9, 2)]
        for seed in range(30):
            drawn = torch.randperm(6, generator=_gen(seed))[:3].tolist()
            winner = ae.tournament_selection(population, 3, _gen(seed))
            assert winner is max((population[i] for i in drawn), key=lambda ind: ind.fitness)
