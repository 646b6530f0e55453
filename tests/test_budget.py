"""Budgeted search: constraint domination in the GA, costs in the records, the report's front, and a search
without a budget unchanged (bit for bit against a run recorded before budgets existed)."""
import json
import math
import os

import pytest
import torch

import report
import train_search
from architect_evolution import Individual, evolve, sort_population
from conftest import FIXTURES, call_main, numerics_fingerprint, without_timings
from cost import network_cost
from genotypes import load_genotype
from search.budget import Budget, pareto_front
from search_space import DARTS, NB201

REFERENCE = os.path.join(FIXTURES, 'search_before_budgets.json')
TINY = ['--dataset', 'synthetic', '--synthetic_size', '128', '--init_channels', '4', '--layers', '3',
        '--pop_size', '4', '--tsize', '2', '--batch_size', '32', '--valid_batch_size', '64', '--device', 'cpu']


def _individual(fitness, violation=0.):
    return Individual([torch.zeros(1, 1)], fitness=fitness, violation=violation)


def _records(run_dir):
    paths = sorted(os.listdir(os.path.join(run_dir, 'generations')))
    return [without_timings(json.load(open(os.path.join(run_dir, 'generations', p)))) for p in paths]


class TestConstraintDomination:
    def test_feasible_beat_infeasible_which_compare_by_violation(self):
        a, b, c, d, e = (_individual(60.), _individual(90., .5), _individual(95., .1), _individual(40.),
                         _individual(math.nan))
        assert sort_population([a, b, c, d, e]) == [a, d, e, c, b]
        # a NaN fitness ranks last among the feasible, above every infeasible one
        assert sort_population([b, e]) == [e, b]

    def test_ties_keep_population_order_and_no_budget_is_plain_fitness(self):
        a, b, c = _individual(50.), _individual(50.), _individual(70.)
        assert sort_population([a, b, c]) == [c, a, b]
        x, y = _individual(50., .2), _individual(80., .2)  # equal violations: by fitness
        assert sort_population([x, y]) == [y, x]

    def test_elites_are_the_best_feasible(self):
        population = [_individual(f, v) for f, v in ((99., .3), (10., 0.), (20., 0.), (98., .01))]
        for ind in population:
            ind.alphas = [torch.rand(14, 8)]
        elites = evolve(population, 2, 2, 0., torch.Generator().manual_seed(0))[:2]
        assert torch.equal(elites[0].alphas[0], population[2].alphas[0])
        assert torch.equal(elites[1].alphas[0], population[1].alphas[0])

    def test_violation_is_the_relative_excess_summed_over_the_limits(self):
        budget = Budget(DARTS, max_params=2., max_macs=100., size='cifar', num_classes=10)
        assert budget.violation({'params': 1e6, 'macs': 50e6}) == 0.
        assert budget.violation({'params': 3e6, 'macs': 50e6}) == pytest.approx(.5)
        assert budget.violation({'params': 3e6, 'macs': 150e6}) == pytest.approx(1.)

    def test_pareto_front_known_answer(self):
        points = [{'fitness': 80., 'macs': 300.}, {'fitness': 70., 'macs': 200.}, {'fitness': 60., 'macs': 250.},
                  {'fitness': 90., 'macs': 400.}, {'fitness': 70., 'macs': 200.}, {'fitness': math.nan, 'macs': 1.}]
        assert pareto_front(points) == [0, 1, 3, 4]

    def test_costs_are_the_evaluation_networks_and_cached(self):
        budget = Budget(DARTS, max_params=3., max_macs=None, size='cifar', num_classes=10)
        alphas = [torch.rand(14, 8), torch.rand(14, 8)]
        cost = budget.cost(alphas)
        reference = network_cost(DARTS.genotype(alphas), 'cifar10', num_classes=10)
        assert cost == {'params': reference['params'], 'macs': reference['macs']}
        assert budget.cost([a.clone() for a in alphas]) is cost
        nb201 = [torch.rand(6, 5)]
        small, large = NB201.cost(nb201, 'imagenet', 10), NB201.cost(nb201, 'cifar', 10)
        # 16x16 images: every feature map a quarter of 32x32's; 120 classes instead of 10 in the classifier
        assert small['macs'] - 120 * 64 == pytest.approx((large['macs'] - 10 * 64) / 4)
        assert small['params'] - large['params'] == 110 * 65
        darts = Budget(DARTS, 3., None, 'imagenet', 10).cost(alphas)
        assert darts['params'] == network_cost(DARTS.genotype(alphas), 'imagenet')['params']


@pytest.fixture(scope='module')
def budgeted(tmp_path_factory):
    """A loose run measures the first generation's costs; the budget is then set at their median, so that
    about half of the first generation fits."""
    root = tmp_path_factory.mktemp('budget')
    assert call_main(train_search, TINY + ['--epochs', '1', '--max_params', '1e6', '--run_dir', root / 'loose']) == 0
    params = sorted(p['params'] for p in _records(root / 'loose')[0]['population'])
    limit = (params[1] + params[2]) / 2 / 1e6
    run_dir = root / 'run'
    assert call_main(train_search, TINY + ['--epochs', '2', '--max_params', str(limit), '--run_dir', run_dir]) == 0
    return run_dir, limit


class TestBudgetedSearch:
    def test_every_elite_is_feasible_and_the_result_fits(self, budgeted):
        run_dir, limit = budgeted
        records = _records(run_dir)
        assert 0 < records[0]['feasible'] < 4
        for record in records:
            assert record['population'][0]['feasible'], record['generation']
            for individual in record['population']:
                assert individual['feasible'] == (individual['params'] <= limit * 1e6)
                assert individual['macs'] > 0
            feasible = [p['fitness'] for p in record['population'] if p['feasible']]
            assert record['population'][0]['fitness'] == max(feasible)
        genotype = load_genotype(os.path.join(run_dir, 'genotype.json'))
        assert network_cost(genotype, 'cifar10')['params'] <= limit * 1e6
        log = open(os.path.join(run_dir, 'log.txt')).read()
        assert 'selection by constraint domination' in log and 'it fits the budget' in log
        assert f"| feasible {records[-1]['feasible']:3d}/4 |" in log

    def test_report_shows_the_feasible_share_and_the_front(self, budgeted):
        run_dir, _ = budgeted
        text = open(os.path.join(run_dir, 'report.md')).read()
        last = _records(run_dir)[-1]
        assert '| generation | best | mean | worst | distinct genotypes | feasible |' in text
        assert f"{last['feasible']} of 4 individuals of the last generation fit" in text
        front = pareto_front([report._point(p) for p in last['population']])
        assert text.count('| yes |') + text.count('| no |') == len(front)

    def test_an_impossible_budget_says_so(self, tmp_path, caplog):
        assert call_main(train_search, TINY + ['--epochs', '1', '--max_macs', '0.001', '--run_dir', tmp_path]) == 0
        log = open(tmp_path / 'log.txt').read()
        assert 'no individual of the last generation fits the budget' in log
        assert 'no individual fits the budget' in open(tmp_path / 'report.md').read()

    def test_nb201_budget(self, tmp_path):
        argv = ['--space', 'nb201', '--dataset', 'synthetic', '--synthetic_size', '128', '--init_channels', '4',
                '--num_cells', '1', '--pop_size', '4', '--tsize', '2', '--batch_size', '32', '--device', 'cpu',
                '--epochs', '2', '--max_macs', '60', '--run_dir', tmp_path]
        assert call_main(train_search, argv) == 0
        for record in _records(tmp_path):
            for individual in record['population']:
                assert individual['feasible'] == (individual['macs'] <= 60e6)

    @pytest.mark.parametrize('argv, message', [(['--max_params', '0'], '--max_params must be positive'),
                                               (['--max_macs', '-1'], '--max_macs must be positive'),
                                               (['--budget_size', 'tiny'], "invalid choice: 'tiny'")])
    def test_bad_budgets_are_refused(self, argv, message, tmp_path, capsys):
        assert call_main(train_search, argv + ['--run_dir', tmp_path / 'run']) == 2
        assert message in capsys.readouterr().err and not (tmp_path / 'run').exists()


class TestWithoutBudget:
    def test_bit_identical_to_a_run_recorded_before_budgets(self, tmp_path):
        reference = json.load(open(REFERENCE))
        run_dir = tmp_path / 'run'
        assert call_main(train_search, reference['command'] + ['--run_dir', run_dir]) == 0
        records = _records(run_dir)
        for record in records:  # fields added to the records since (what they compute is unchanged)
            for individual in record['population']:
                assert isinstance(individual.pop('fitness_seed'), int)
        if not reference['recorded_with'].endswith(f"torch {torch.__version__}"):
            pytest.skip(f"recorded with {reference['recorded_with']}: another torch may compute other last bits")
        if numerics_fingerprint() != reference['numerics']:
            # Machines that report the same vector unit still round differently (oneDNN picks kernels by CPU
            # model; reductions split by thread count): losses differ in the last bits, so only what the random
            # streams alone decide (the first population) can be compared bit for bit.
            assert [p['alphas'] for p in records[0]['population']] == \
                [p['alphas'] for p in reference['records'][0]['population']]
            pytest.skip(f"recorded on a CPU ({reference['cpu_capability']}, {reference['threads']} threads) whose "
                        f"kernels round otherwise than this one's ({torch.backends.cpu.get_cpu_capability()}, "
                        f"{torch.get_num_threads()} threads): compared the first population only")
        assert records == reference['records']
        assert json.load(open(run_dir / 'genotype.json')) == reference['genotype']
        import hashlib
        state = torch.load(run_dir / 'checkpoint.pt', weights_only=True)['model']
        digest = hashlib.sha256(b''.join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
        assert digest == reference['model_sha256']

    def test_a_budget_everyone_fits_changes_nothing_but_the_records_costs(self, tmp_path):
        assert call_main(train_search, TINY + ['--epochs', '2', '--run_dir', tmp_path / 'plain']) == 0
        assert call_main(train_search, TINY + ['--epochs', '2', '--max_params', '1e6', '--max_macs', '1e6',
                                               '--run_dir', tmp_path / 'loose']) == 0
        plain, loose = _records(tmp_path / 'plain'), _records(tmp_path / 'loose')
        for a, b in zip(plain, loose):
            assert b.pop('feasible') == 4
            for individual in b['population']:
                assert individual.pop('feasible') is True
                assert individual.pop('params') > 0 and individual.pop('macs') > 0
            assert a == b


def test_a_budgeted_run_killed_and_resumed_equals_the_uninterrupted_one(budgeted, tmp_path):
    from conftest import run_script
    run_dir, limit = budgeted
    killed = str(tmp_path / 'run')
    done = run_script('train_search.py', *TINY, '--epochs', '2', '--max_params', str(limit), '--run_dir', killed,
                      env={'EVNAS_FAULT': 'kill@eval:2:1'})
    assert done.returncode == -9, done.stderr
    assert call_main(train_search, ['--resume', killed]) == 0
    assert _records(killed) == _records(run_dir)
    assert open(os.path.join(killed, 'genotype.json')).read() == open(os.path.join(run_dir, 'genotype.json')).read()
