"""train_search.py --strategy random: the EvNAS loop without selection (the same first generation, training steps
and fitness calls; every generation drawn afresh from the search's own generator), random search with weight
sharing at its end (every draw scored again), resume, budgets, both spaces, and report.py beside evolution."""
import json
import os
import shutil

import pytest
import torch

import report
import train_search
import trust
from architect_evolution import init_population, random_individual
from conftest import call_main, run_script, without_timings
from search_space import DARTS, NB201

# SEARCH_TINY without the GA's --tsize, which the random strategy refuses
RANDOM = ['--dataset', 'synthetic', '--synthetic_size', '192', '--init_channels', '4', '--layers', '3', '--pop_size',
          '3', '--batch_size', '32', '--valid_batch_size', '64', '--device', 'cpu', '--report_freq', '1',
          '--epochs', '2']


def records(run_dir):
    folder = os.path.join(run_dir, 'generations')
    return [without_timings(json.load(open(os.path.join(folder, name)))) for name in sorted(os.listdir(folder))]


def alphas_of(entry, space=DARTS):
    return [torch.tensor(entry['alphas'][cell]) for cell in space.cells]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """A random-strategy run and the evolution run of the same flags and seed."""
    root = tmp_path_factory.mktemp('strategies')
    assert call_main(train_search, RANDOM + ['--strategy', 'random', '--run_dir', root / 'random']) == 0
    assert call_main(train_search, RANDOM + ['--tsize', '2', '--run_dir', root / 'evolution']) == 0
    return str(root / 'random'), str(root / 'evolution')


class TestTheLoopWithoutSelection:
    def test_the_first_generation_is_the_gas(self, runs):
        random_run, evolution = runs
        assert records(random_run)[0] == records(evolution)[0], 'the same draws, training steps and fitness'

    def test_the_same_training_steps_and_fitness_calls_per_generation(self, runs):
        random_run, evolution = runs
        for ours, theirs in zip(records(random_run), records(evolution)):
            assert len(ours['population']) == len(theirs['population']) == 3
            assert sorted(p['index'] for p in ours['population']) == [0, 1, 2]
            assert all(p['fitness'] is not None and p['train_loss'] is not None for p in ours['population'])
        log = open(os.path.join(random_run, 'log.txt')).read()
        steps = [line for line in log.splitlines() if '| train ' in line and 'individual' in line]
        theirs = [line for line in open(os.path.join(evolution, 'log.txt')).read().splitlines()
                  if '| train ' in line and 'individual' in line]
        assert len(steps) == len(theirs) > 0

    def test_every_generation_is_drawn_afresh_from_the_searchs_own_generator(self, runs):
        random_run, _ = runs
        generator = torch.Generator().manual_seed(train_search.parse_args(RANDOM + ['--strategy', 'random']).seed)
        shapes = DARTS.alpha_shapes(None)
        for record in records(random_run):
            drawn = init_population(3, shapes, generator)
            by_index = sorted(record['population'], key=lambda p: p['index'])
            assert [alphas_of(p)[0].tolist() for p in by_index] == [d.alphas[0].tolist() for d in drawn]
            assert [alphas_of(p)[1].tolist() for p in by_index] == [d.alphas[1].tolist() for d in drawn]

    def test_no_individual_is_carried_to_the_next_generation(self, runs):
        random_run, evolution = runs
        for before, after in zip(records(random_run), records(random_run)[1:]):
            kept = {json.dumps(p['alphas']) for p in before['population']}
            assert not kept & {json.dumps(p['alphas']) for p in after['population']}
        # where the GA keeps its elite
        ga = records(evolution)
        assert ga[0]['population'][0]['alphas'] in [p['alphas'] for p in ga[1]['population']]


class TestWeightSharing:
    def test_every_architecture_drawn_is_scored_once_and_the_best_is_the_pick(self, runs):
        random_run, _ = runs
        result = json.load(open(os.path.join(random_run, 'weight_sharing.json')))
        drawn = {DARTS.key(alphas_of(p)) for record in records(random_run) for p in record['population']}
        scored = [DARTS.key(alphas_of(s)) for s in result['scored']]
        assert sorted(scored) == sorted(drawn) and result['architectures'] == result['fitness_calls'] == len(drawn)
        best = max(result['scored'], key=lambda s: s['fitness'])
        assert result['pick']['alphas'] == best['alphas']
        saved = json.load(open(os.path.join(random_run, 'genotype_weight_sharing.json')))
        assert saved == best['genotype']

    def test_each_score_is_the_final_supernets_fitness_with_its_seed(self, runs):
        random_run, _ = runs
        result = json.load(open(os.path.join(random_run, 'weight_sharing.json')))
        side = trust.SupernetSide(random_run, trust.search_run_args(random_run), torch.device('cpu'))
        measured = side.score(side.settings.fitness, [alphas_of(s) for s in result['scored']],
                              [s['fitness_seed'] for s in result['scored']])
        assert measured == [s['fitness'] for s in result['scored']]

    def test_the_report_shows_it_and_the_strategies_side_by_side_without_comparing_fitness(self, runs, capsys):
        random_run, evolution = runs
        text = open(os.path.join(random_run, 'report.md')).read()
        assert 'Strategy: random' in text and '## Random search with weight sharing' in text
        assert 'genotype_weight_sharing.json' in text
        assert call_main(report, [random_run, evolution]) == 0
        out = capsys.readouterr().out
        assert 'strategy random (1 runs):' in out and 'strategy evolution (1 runs):' in out
        assert 'not compared across strategies' in out


class TestResume:
    # generation 2 is the last; its weight-sharing scoring counts as generation 3
    @pytest.mark.parametrize('fault', ['kill@eval:2:1', 'kill@eval:3:2'], ids=['generation-2', 'weight-sharing'])
    def test_killed_then_resumed_equals_uninterrupted(self, runs, fault, tmp_path):
        random_run, _ = runs
        killed = str(tmp_path / 'killed')
        died = run_script('train_search.py', *RANDOM, '--strategy', 'random', '--run_dir', killed,
                          env={'EVNAS_FAULT': fault})
        assert died.returncode == -9, died.stderr[-2000:]
        assert not os.path.exists(os.path.join(killed, 'weight_sharing.json'))
        assert call_main(train_search, ['--resume', killed]) == 0
        assert records(killed) == records(random_run)
        ours, theirs = (json.load(open(os.path.join(d, 'weight_sharing.json'))) for d in (killed, random_run))
        assert {**ours, 'seconds': 0, 'search_fitness_seconds': 0} == \
            {**theirs, 'seconds': 0, 'search_fitness_seconds': 0}
        assert 'Random search with weight sharing' in open(os.path.join(killed, 'report.md')).read()


class TestFlags:
    @pytest.mark.parametrize('flag', [['--tsize', '2'], ['--num_elites', '0'], ['--mutate_rate', '0.5']])
    def test_the_gas_flags_are_refused_in_one_line(self, flag, capsys):
        assert call_main(train_search, RANDOM + ['--strategy', 'random'] + flag) == 2
        err = capsys.readouterr().err
        assert flag[0] in err and 'does not run' in err and len(err.strip().splitlines()) == 1

    def test_a_run_recorded_before_the_flag_resumes_as_evolution(self, runs, tmp_path):
        old = str(tmp_path / 'old')
        shutil.copytree(runs[1], old)
        args = json.load(open(os.path.join(old, 'args.json')))
        del args['strategy']
        json.dump(args, open(os.path.join(old, 'args.json'), 'w'))
        assert train_search.parse_args(['--resume', old]).strategy == 'evolution'


class TestBudget:
    def test_every_draw_fits_and_the_weight_sharing_pick_too(self, tmp_path):
        run_dir = str(tmp_path / 'run')
        # about half the architectures fit 3 M parameters at the CIFAR size (tests/test_distributed_search.py)
        assert call_main(train_search, RANDOM + ['--strategy', 'random', '--max_params', '3', '--epochs', '2',
                                                 '--run_dir', run_dir]) == 0
        for record in records(run_dir):
            assert record['feasible'] == 3 and all(p['params'] <= 3e6 for p in record['population'])
        result = json.load(open(os.path.join(run_dir, 'weight_sharing.json')))
        assert all(s['feasible'] for s in result['scored'])

    def test_a_budget_nothing_random_fits_is_one_line(self, tmp_path, capsys, monkeypatch):
        monkeypatch.setattr(train_search, 'MAX_REJECTED', 5)  # each rejection builds a network: keep the test short
        assert call_main(train_search, RANDOM + ['--strategy', 'random', '--max_params', '0.0001',
                                                 '--run_dir', tmp_path / 'run']) == 2
        err = capsys.readouterr().err
        assert 'fits the budget' in err and len(err.strip().splitlines()) == 1


def test_nas_bench_201(tmp_path):
    run_dir = str(tmp_path / 'run')
    argv = ['--space', 'nb201', '--dataset', 'synthetic', '--synthetic_size', '128', '--init_channels', '4',
            '--num_cells', '1', '--batch_size', '32', '--valid_batch_size', '64', '--device', 'cpu', '--epochs', '2',
            '--pop_size', '4', '--strategy', 'random', '--run_dir', run_dir]
    assert call_main(train_search, argv) == 0
    result = json.load(open(os.path.join(run_dir, 'weight_sharing.json')))
    drawn = {NB201.key(alphas_of(p, NB201)) for record in records(run_dir) for p in record['population']}
    assert {s['arch'] for s in result['scored']} == drawn
    generator = torch.Generator().manual_seed(train_search.parse_args(argv).seed)
    first = sorted(records(run_dir)[0]['population'], key=lambda p: p['index'])
    assert [p['alphas']['cell'] for p in first] == \
        [random_individual([(6, 5)], generator).alphas[0].tolist() for _ in range(4)]
