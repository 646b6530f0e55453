"""trust.py: the sample, the supernet side (the run's own fitness, again), the stand-alone reference (train.py's
number), resuming after a kill, old runs, bad input, NAS-Bench-201's reference, and the opt-in fitness estimators
in a search."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import fitness
import train
import train_search
import trust
from conftest import ROOT, call_main, run_script, without_flag, without_timings
from genotypes import Genotype
from search import records
from search_space import DARTS, NB201
from stats import comparison

SEARCH = ['--dataset', 'synthetic', '--synthetic_size', '128', '--init_channels', '4', '--layers', '3', '--pop_size',
          '4', '--tsize', '2', '--batch_size', '32', '--valid_batch_size', '64', '--device', 'cpu', '--epochs', '3']
REFERENCE = ['--seeds', '2', '--epochs', '2', '--init_channels', '4', '--layers', '3', '--batch_size', '32',
             '--device', 'cpu', '--iterations', '200']


@pytest.fixture(scope='module')
def search_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp('search') / 'run')
    assert call_main(train_search, SEARCH + ['--run_dir', run_dir]) == 0
    return run_dir


@pytest.fixture(scope='module')
def trusted(search_run, tmp_path_factory):
    """trust.py over 4 architectures of the run, uninterrupted: (its copy of the run, trust.json)."""
    run_dir = str(tmp_path_factory.mktemp('trusted') / 'run')
    shutil.copytree(search_run, run_dir)
    assert call_main(trust, ['--dir', run_dir, '--archs', '4', '--estimators', 'original,shared'] + REFERENCE) == 0
    return run_dir, json.load(open(os.path.join(run_dir, 'trust', 'trust.json')))


def _records(run_dir):
    folder = os.path.join(run_dir, 'generations')
    return [json.load(open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))]


def _table(result):
    """trust.json without what no two runs share (training times)."""
    return {**result, 'architectures': [{k: v for k, v in a.items() if k != 'train_seconds'}
                                        for a in result['architectures']],
            'baselines': {name: {k: v for k, v in b.items() if k != 'train_seconds'}
                          for name, b in result.get('baselines', {}).items()}}


class TestSample:
    def test_the_same_architecture_whatever_order_a_nodes_edges_are_listed_in(self):
        edges = [('sep_conv_3x3', 0), ('skip_connect', 1)] * 4
        genotype = Genotype(edges, [2, 3, 4, 5], edges, [2, 3, 4, 5])
        reordered = [e for pair in zip(edges[1::2], edges[::2]) for e in pair]  # each node's two edges swapped
        swapped = Genotype(reordered, [2, 3, 4, 5], edges, [2, 3, 4, 5])
        other = Genotype([('sep_conv_5x5', 0), ('skip_connect', 1)] * 4, [2, 3, 4, 5], edges, [2, 3, 4, 5])
        assert swapped.normal != genotype.normal
        assert DARTS.genotype_key(swapped) == DARTS.genotype_key(genotype) != DARTS.genotype_key(other)
        assert NB201.genotype_key(' |nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|') == \
            '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|'

    def test_distinct_architectures_are_counted_once_where_first_seen(self, search_run):
        candidates = trust.distinct_architectures(_records(search_run), DARTS)
        keys = {DARTS.key([torch.tensor(p['alphas'][c]) for c in DARTS.cells])
                for record in _records(search_run) for p in record['population']}
        assert len(candidates) == len(keys) == len({c.key for c in candidates})
        assert sum(c.pick for c in candidates) == 1
        assert [c.generation for c in candidates] == sorted(c.generation for c in candidates)

    def test_stratified_and_seeded(self, search_run):
        candidates = trust.distinct_architectures(_records(search_run), DARTS)
        cells = {(c.generation, c.stratum) for c in candidates if not c.pick}
        k = len(cells) + 1
        sample = trust.choose(candidates, str(k), 5, DARTS)
        assert sample[0].pick and len({c.key for c in sample}) == k
        # one from every (generation, fitness-rank stratum) cell before any cell gives a second
        assert {(c.generation, c.stratum) for c in sample[1:]} == cells
        assert [c.key for c in trust.choose(candidates, str(k), 5, DARTS)] == [c.key for c in sample]
        draws = {tuple(c.key for c in trust.choose(candidates, '3', seed, DARTS)) for seed in range(10)}
        assert len(draws) > 1, 'the seed decides the sample'

    def test_a_file_of_genotypes(self, search_run, tmp_path):
        candidates = trust.distinct_architectures(_records(search_run), DARTS)
        others = [c for c in candidates if not c.pick][:2]
        path = tmp_path / 'archs.json'
        path.write_text(json.dumps([DARTS.record(c.alphas)['genotype'] for c in others]))
        chosen = trust.choose(candidates, str(path), 0, DARTS)
        assert chosen[0].pick and [c.key for c in chosen[1:]] == [c.key for c in others]


class TestSupernetSide:
    def test_rescoring_the_last_generation_gives_its_recorded_fitness_exactly(self, search_run):
        run_args = trust.search_run_args(search_run)
        side = trust.SupernetSide(search_run, run_args, torch.device('cpu'))
        last = _records(search_run)[-1]['population']
        alphas = [[torch.tensor(p['alphas'][c]) for c in DARTS.cells] for p in last]
        measured = side.score(side.settings.fitness, alphas, [p['fitness_seed'] for p in last])
        assert measured == [p['fitness'] for p in last]
        # and another seed gives other values: the seed is what makes it exact
        other = side.score(side.settings.fitness, alphas, [p['fitness_seed'] + 1 for p in last])
        assert other != measured


class TestTrust:
    def test_trust_json_holds_every_figure(self, trusted):
        run_dir, result = trusted
        assert result['archs'] == 4 and result['exact_fitness_check']['status'] == 'equal'
        for arch in result['architectures']:
            assert len(arch['fitness']['original']) == 2 and len(arch['reference']) == 2
        agreement = result['agreement']['original']
        for key in ('kendall_tau_b', 'spearman_rho', 'permutation_p', 'reliability_reference',
                    'reliability_reference_interval', 'perfect_supernet', 'top_stratum', 'top_k_overlap', 'pick',
                    'seed_spread', 'test_sampling_error'):
            assert key in agreement
        assert {'interval', 'critical_tau'} <= set(agreement['top_stratum'])
        assert {'regret_held_out', 'regret_all_seeds', 'percentile'} <= set(agreement['pick'])
        text = open(os.path.join(run_dir, 'trust', 'trust.md')).read()
        assert 'stand-alone reference at 2 epochs' in text and '**Warning:** only 4 architectures' in text
        assert 'trust/trust.md' in open(os.path.join(run_dir, 'report.md')).read()

    def test_estimators_are_compared_on_the_same_sample_and_pooled_over_runs(self, trusted, capsys):
        run_dir, result = trusted
        for arch in result['architectures']:
            assert len(arch['fitness']['shared']) == 2
        versus = result['versus_first']['shared']
        assert versus['low'] <= versus['difference'] <= versus['high']
        assert 'tau minus original' in open(os.path.join(run_dir, 'trust', 'trust.md')).read()
        pooled = trust.main(trust.parse_args(['--pool', run_dir, run_dir, '--iterations', '200']))
        assert pooled['estimators']['shared']['versus_first']['difference'] == pytest.approx(versus['difference'])
        tau = result['agreement']['original']['kendall_tau_b']
        assert pooled['estimators']['original']['kendall_tau_b'] == [tau, tau]
        assert '| shared |' in capsys.readouterr().out

    def test_a_reference_is_train_pys_last_epoch_top1_for_the_same_flags_and_seed(self, trusted, tmp_path):
        run_dir, result = trusted
        arch = result['architectures'][1]
        genotype = tmp_path / 'genotype.json'
        genotype.write_text(json.dumps(arch_genotype(run_dir, 1)))
        done = train.main(train.parse_args(['--genotype', str(genotype), '--dataset', 'synthetic', '--synthetic_size',
                                            '128', '--epochs', '2', '--init_channels', '4', '--layers', '3',
                                            '--batch_size', '32', '--seed', '1', '--device', 'cpu',
                                            '--run_dir', str(tmp_path / 'train')]))
        assert arch['reference'][1] == done['history'][-1]['test_top1']

    def test_the_published_cells_are_trained_with_the_samples_recipe_and_seeds(self, trusted, tmp_path):
        run_dir, result = trusted
        assert list(result['baselines']) == ['EvNASA', 'EvNASB', 'EvNASC', 'DARTS_V2']
        done = train.main(train.parse_args(['--arch', 'EvNASC', '--dataset', 'synthetic', '--synthetic_size', '128',
                                            '--epochs', '2', '--init_channels', '4', '--layers', '3',
                                            '--batch_size', '32', '--seed', '1', '--device', 'cpu',
                                            '--run_dir', str(tmp_path / 'train')]))
        assert result['baselines']['EvNASC']['reference'][1] == done['history'][-1]['test_top1']
        pick = next(a for a in result['architectures'] if a['pick'])
        versus = result['baselines']['EvNASC']['pick_minus_this']
        assert versus['mean'] == pytest.approx(sum(pick['reference']) / 2 - sum(result['baselines']['EvNASC']
                                                                                ['reference']) / 2)
        assert '| EvNASC |' in open(os.path.join(run_dir, 'trust', 'trust.md')).read()

    def test_runs_that_share_a_cache_train_each_network_once(self, trusted, search_run, tmp_path):
        run_dir, result = trusted
        cache = os.path.join(run_dir, 'trust', 'reference')
        again = str(tmp_path / 'again')
        shutil.copytree(search_run, again)
        before = sorted(os.listdir(cache))
        assert call_main(trust, ['--dir', again, '--archs', '4', '--estimators', 'original,shared',
                                 '--reference_cache', cache] + REFERENCE) == 0
        assert sorted(os.listdir(cache)) == before, 'nothing trained again'
        assert not os.path.exists(os.path.join(again, 'trust', 'reference'))
        ours = json.load(open(os.path.join(again, 'trust', 'trust.json')))
        assert _table(ours) == {**_table(result), 'run': os.path.abspath(again)}

    def test_killed_during_a_training_then_run_again_ends_with_the_same_table(self, trusted, search_run, tmp_path):
        run_dir = str(tmp_path / 'run')
        shutil.copytree(search_run, run_dir)
        # the sample's trainings alone (the published cells' go through the same code, in the same job list)
        argv = ['--dir', run_dir, '--archs', '4', '--estimators', 'original,shared', '--baselines', 'none'] + REFERENCE
        killed = run_script('trust.py', *argv, env={'EVNAS_FAULT': 'kill@train:2:1'})
        assert killed.returncode == -9, killed.stderr[-2000:]
        reference = os.path.join(run_dir, 'trust', 'reference')
        assert any(os.path.isfile(os.path.join(reference, name, 'checkpoint.pt')) for name in os.listdir(reference))
        assert call_main(trust, argv) == 0
        ours = _table(json.load(open(os.path.join(run_dir, 'trust', 'trust.json'))))
        expected = _table(trusted[1])
        assert ours.pop('baselines') == {} and expected.pop('baselines')
        assert ours == {**expected, 'run': os.path.abspath(run_dir)}

    def test_a_run_recorded_before_fitness_seeds_still_works(self, search_run, tmp_path):
        run_dir = tmp_path / 'old'
        shutil.copytree(search_run, run_dir)
        args = json.loads((run_dir / 'args.json').read_text())
        for flag in ('fitness_data', 'fitness_bn', 'fitness_bn_batches', 'fitness_augment', 'fitness_dtype',
                     'strategy'):
            del args[flag]
        (run_dir / 'args.json').write_text(json.dumps(args))
        for path in (run_dir / 'generations').iterdir():
            record = json.loads(path.read_text())
            for individual in record['population']:
                del individual['fitness_seed']
            path.write_text(json.dumps(record))
        assert call_main(trust, ['--dir', run_dir, '--archs', '3', '--no_reference', '--fitness_seeds', '1',
                                 '--device', 'cpu']) == 0
        result = json.load(open(run_dir / 'trust' / 'trust.json'))
        assert result['exact_fitness_check']['status'].startswith('not possible') and result['agreement'] is None

    @pytest.mark.parametrize('argv, message', [
        (['--archs', '99'], 'the run saw only'),
        (['--estimators', 'original,magic'], 'unknown estimator magic'),
        (['--archs', 'missing.json'], '--archs missing.json'),
    ])
    def test_bad_input_is_one_line(self, search_run, argv, message, capsys):
        assert call_main(trust, ['--dir', search_run, '--no_reference'] + argv) == 2
        err = capsys.readouterr().err
        assert message in err and 'Traceback' not in err

    def test_a_directory_that_is_not_a_search_run(self, tmp_path, capsys):
        assert call_main(trust, ['--dir', tmp_path]) == 2
        err = capsys.readouterr().err
        assert 'is not a train_search.py run directory' in err and len(err.strip().splitlines()) == 1

    def test_a_search_without_a_completed_generation(self, search_run, tmp_path, capsys):
        run_dir = tmp_path / 'started'
        shutil.copytree(search_run, run_dir)
        shutil.rmtree(run_dir / 'generations')
        (run_dir / 'checkpoint.pt').unlink()
        assert call_main(trust, ['--dir', run_dir]) == 2
        err = capsys.readouterr().err
        assert 'stopped before its first generation' in err and 'needs a train_search.py run' in err
        assert len(err.strip().splitlines()) == 1


class TestAgainstRandom:
    """A random-strategy run of the search's seed, measured with the same recipe, and the comparison."""

    @pytest.fixture(scope='class')
    @classmethod
    def random_run(cls, trusted, tmp_path_factory):
        run_dir = str(tmp_path_factory.mktemp('random') / 'run')
        argv = without_flag(SEARCH, '--tsize') + ['--strategy', 'random', '--run_dir', run_dir]
        assert call_main(train_search, argv) == 0
        cache = os.path.join(trusted[0], 'trust', 'reference')  # the published cells are trained already
        assert call_main(trust, ['--dir', run_dir, '--archs', '5', '--reference_cache', cache] + REFERENCE) == 0
        return run_dir, json.load(open(os.path.join(run_dir, 'trust', 'trust.json')))

    def test_both_picks_and_a_uniform_sample(self, random_run):
        run_dir, result = random_run
        archs = result['architectures']
        assert archs[0]['pick'] and result['strategy'] == 'random'
        shared = json.load(open(os.path.join(run_dir, 'weight_sharing.json')))['pick']
        assert [a['describe'] for a in archs if a['weight_sharing_pick']] == \
            [DARTS.describe([torch.tensor(shared['alphas'][c]) for c in DARTS.cells])]
        candidates = trust.distinct_architectures(_records(run_dir), DARTS, {'pick': shared})
        others = [c for c in candidates if not (c.pick or c.weight_sharing_pick)]
        # uniform: a seeded permutation of every other architecture the run drew, whatever its generation or rank
        order = torch.randperm(len(others), generator=torch.Generator().manual_seed(0)).tolist()
        assert [a['key'] for a in archs if not (a['pick'] or a['weight_sharing_pick'])] == \
            [others[i].key for i in order[:len(archs) - 2 + (archs[0]['weight_sharing_pick'])]]
        draws = {tuple(c.key for c in trust.choose(candidates, '5', seed, DARTS, uniform=True)[-3:])
                 for seed in range(20)}
        assert len(draws) > 1 and all(set(d) <= {c.key for c in others} for d in draws)
        assert 'a uniformly random architecture (the mean of' in open(os.path.join(run_dir, 'trust',
                                                                                     'trust.md')).read()

    def test_compare_pairs_the_seeds_and_differences_each_comparator(self, trusted, random_run, tmp_path, capsys):
        (search, ours), (random_dir, theirs) = trusted, random_run
        result = trust.main(trust.parse_args(['--compare', search, '--against', random_dir, '--out', str(tmp_path)]))
        (row,) = result['per_seed']

        def mean(values):
            return sum(values) / len(values)

        assert row['seed'] == 18 and row['pick'] == mean(ours['architectures'][0]['reference'])
        assert row['random'] == mean(theirs['architectures'][0]['reference'])
        assert row['uniform'] == mean([mean(a['reference']) for a in theirs['architectures']
                                       if not (a['pick'] or a['weight_sharing_pick'])])
        assert result['differences']['uniform']['mean'] == pytest.approx(row['pick'] - row['uniform'])
        published = result['published_cell']
        assert row['published'] == max(mean(b['reference']) for b in ours['baselines'].values()) == \
            mean(ours['baselines'][published]['reference'])
        assert '| random search with weight sharing |' in capsys.readouterr().out
        assert json.load(open(tmp_path / 'compare.json'))['per_seed'][0]['seed'] == 18

    @pytest.mark.parametrize('case, message', [('swapped', 'is a --strategy random run, not evolution'),
                                               ('other seed', 'differ: each search needs the random run of its seed'),
                                               ('other flags', 'differ in --epochs (3 and 4)')])
    def test_unpaired_runs_are_one_line(self, trusted, random_run, case, message, tmp_path, capsys):
        search, random_dir = trusted[0], random_run[0]
        other = str(tmp_path / 'other')
        shutil.copytree(random_dir, other)
        if case == 'other seed':
            data = json.load(open(os.path.join(other, 'trust', 'trust.json')))
            json.dump({**data, 'search_seed': 99}, open(os.path.join(other, 'trust', 'trust.json'), 'w'))
        if case == 'other flags':
            data = json.load(open(os.path.join(other, 'args.json')))
            json.dump({**data, 'epochs': 4}, open(os.path.join(other, 'args.json'), 'w'))
        argv = ['--compare', random_dir, '--against', search] if case == 'swapped' else \
            ['--compare', search, '--against', other]
        assert call_main(trust, argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def _fake_trust(run_dir, strategy, seed, references, baselines=None):
    """A run directory with an args.json and the trust.json trust.py would write, its architectures' references
    given: the first is the pick, in a random run the second its weight-sharing pick."""
    (run_dir / 'trust').mkdir(parents=True)
    (run_dir / 'args.json').write_text(json.dumps({'strategy': strategy, 'seed': seed, 'epochs': 3}))
    archs = [{'pick': k == 0, 'weight_sharing_pick': strategy == 'random' and k == 1, 'reference': r}
             for k, r in enumerate(references)]
    (run_dir / 'trust' / 'trust.json').write_text(json.dumps({
        'run': str(run_dir), 'strategy': strategy, 'search_seed': seed, 'estimators': ['original'],
        'reference': {'kind': 'stand-alone', 'metric': 'top-1', 'seeds': [0, 1]}, 'agreement': None,
        'training': {'epochs': 2, 'init_channels': 4, 'layers': 3, 'batch_size': 32}, 'architectures': archs,
        'baselines': {name: {'reference': r} for name, r in (baselines or {}).items()}}))
    return str(run_dir)


def test_compare_over_three_seeds_against_values_worked_out_by_hand(tmp_path, capsys):
    # per seed: the pick; the random pick, the weight-sharing pick and two uniform draws; cells A and B
    picks = [[80, 82], [70, 72], [75, 75]]
    randoms = [[[78, 78], [80, 80], [70, 72], [74, 74]],
               [[70, 70], [69, 71], [60, 60], [64, 66]],
               [[73, 73], [76, 76], [70, 70], [66, 66]]]
    cells = {'A': [77, 77], 'B': [79, 81]}  # B is the better published cell
    searches = [_fake_trust(tmp_path / f"evo{s}", 'evolution', s, [picks[s]], cells) for s in range(3)]
    against = [_fake_trust(tmp_path / f"rand{s}", 'random', s, randoms[s]) for s in range(3)]
    result = trust.main(trust.parse_args(['--compare', *searches, '--against', *against[::-1]]))
    assert [r['seed'] for r in result['per_seed']] == [0, 1, 2] and result['published_cell'] == 'B'
    # pick - random: 81 - 78, 71 - 70, 75 - 73 = 3, 1, 2; pick - weight sharing: 1, 1, -1
    # pick - uniform: 81 - (71 + 74) / 2 = 8.5, 71 - (60 + 65) / 2 = 8.5, 75 - 68 = 7; pick - B (80): 1, -9, -5
    expected = {'random': [3, 1, 2], 'weight_sharing': [1, 1, -1], 'uniform': [8.5, 8.5, 7], 'published': [1, -9, -5]}
    for name, differences in expected.items():
        d = result['differences'][name]
        assert d['mean'] == pytest.approx(sum(differences) / 3)
        assert d['low'] < d['mean'] < d['high'] and d['n'] == 3
    # all three positive: the sign-flip p is 2 / 8; the t interval of [3, 1, 2] is 2 +- 4.303 * 1 / sqrt(3)
    assert result['differences']['random']['p'] == pytest.approx(0.25)
    assert result['differences']['random']['high'] == pytest.approx(2 + 4.3027 / 3 ** 0.5, abs=1e-3)
    assert result['differences']['uniform']['low'] > 0  # 8, +- 4.303 * 0.866 / sqrt(3)
    # three seeds cannot carry a verdict: the sign-flip p is at least 2 / 8 whatever the differences
    assert 'the t interval excludes 0 but the sign-flip test does not (p 0.250)' in capsys.readouterr().out
    assert comparison._p(0.0002) == '< 0.001' and comparison._p(0.0312) == '0.031'


def test_a_low_perfect_tau_blames_the_noisier_side_with_the_reliabilities_the_report_states():
    noisy_fitness = trust._noisier_side({'reliability_reference': 0.92, 'reliability_supernet': 0.30})
    assert 'fitness draws disagree' in noisy_fitness and '0.30' in noisy_fitness and '0.92' in noisy_fitness
    noisy_reference = trust._noisier_side({'reliability_reference': 0.25, 'reliability_supernet': 0.80})
    assert 'reference is mostly noise' in noisy_reference and '0.25' in noisy_reference
    # one fitness draw: no supernet reliability, so only the reference can be blamed
    assert 'reference is mostly noise' in trust._noisier_side({'reliability_reference': 0.9,
                                                                'reliability_supernet': None})


def test_pooling_averages_the_runs_with_a_tau(tmp_path, capsys):
    # A constant side leaves a run's tau undefined (null): the mean is over the runs that have one, not a 0 for it.
    runs = []
    for k, tau in enumerate((0.4, None, 0.2)):
        run_dir = tmp_path / f"run{k}"
        (run_dir / 'trust').mkdir(parents=True)
        pick = {'regret_held_out': 0.1, 'regret_all_seeds': 0.5, 'percentile': 50.0}
        (run_dir / 'trust' / 'trust.json').write_text(json.dumps(
            {'estimators': ['original'], 'architectures': [],
             'agreement': {'original': {'kendall_tau_b': tau, 'pick': pick}}}))
        runs.append(str(run_dir))
    pooled = trust.main(trust.parse_args(['--pool'] + runs))
    assert pooled['estimators']['original']['mean'] == pytest.approx(0.3)
    assert trust.main(trust.parse_args(['--pool', runs[1]]))['estimators']['original']['mean'] is None
    assert '[0.10, 0.50]' in capsys.readouterr().out


class TestTorchrun:
    def test_two_processes_give_the_table_of_one(self, search_run, tmp_path):
        argv = ['--archs', '3', '--seeds', '2', '--epochs', '1', '--fitness_seeds', '1', '--init_channels', '4',
                '--layers', '3', '--batch_size', '32', '--device', 'cpu', '--iterations', '100', '--baselines', 'none']
        one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
        shutil.copytree(search_run, one)
        shutil.copytree(search_run, two)
        single = run_script('trust.py', '--dir', one, *argv, env={'OMP_NUM_THREADS': '1'})
        assert single.returncode == 0, single.stderr[-2000:]
        command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                   os.path.join(ROOT, 'trust.py'), '--dir', two, *argv]
        double = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT,
                                env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert double.returncode == 0, double.stderr[-2000:]
        ours, theirs = (json.load(open(os.path.join(d, 'trust', 'trust.json'))) for d in (two, one))
        assert _table(ours) == {**_table(theirs), 'run': os.path.abspath(two)}
        log = open(os.path.join(two, 'trust', 'log.txt')).read()
        assert 'over 2 processes' in log


def arch_genotype(run_dir, k):
    return json.load(open(os.path.join(run_dir, 'trust', 'trust.json')))['architectures'][k]['genotype']


class TestEstimatorsInASearch:
    # Two runs hold the four flags (they combine); each pair still draws, recalibrates and casts in its own way.
    @pytest.mark.parametrize('flags', [['--fitness_data', 'shared', '--fitness_dtype', 'bf16'],
                                       ['--fitness_bn', 'recalibrate', '--fitness_augment', 'none']])
    def test_killed_then_resumed_equals_uninterrupted(self, flags, tmp_path):
        argv = SEARCH[:-1] + ['2'] + flags
        whole, killed = str(tmp_path / 'whole'), str(tmp_path / 'killed')
        assert call_main(train_search, argv + ['--run_dir', whole]) == 0
        died = run_script('train_search.py', *argv, '--run_dir', killed, env={'EVNAS_FAULT': 'kill@eval:2:1'})
        assert died.returncode == -9, died.stderr[-2000:]
        assert call_main(train_search, ['--resume', killed]) == 0
        assert [without_timings(r) for r in _records(killed)] == [without_timings(r) for r in _records(whole)]
        if flags[0] == '--fitness_data':
            for record in _records(whole):
                assert len({p['fitness_seed'] for p in record['population']}) == 1

    def test_the_default_draws_the_originals_seeds(self):
        own = fitness.draw_seeds(fitness.ESTIMATORS['original'], torch.Generator().manual_seed(3), 4)
        assert own == torch.randint(0, 2 ** 62, (4,), generator=torch.Generator().manual_seed(3)).tolist()
        shared = fitness.draw_seeds(fitness.ESTIMATORS['shared'], torch.Generator().manual_seed(3), 4)
        assert shared == [own[0]] * 4

    def test_recalibration_sets_cumulative_statistics_and_restores_the_supernets(self):
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
        batches = [torch.randn(8, 3, 4, 4) + i for i in range(3)]
        fitness.recalibrate_batchnorm(model, batches)
        features = torch.cat([model[0](x) for x in batches])
        bn = model[1]
        assert not model.training and bn.momentum == 0.1
        assert torch.allclose(bn.running_mean, features.mean((0, 2, 3)), atol=1e-5)
        # the cumulative average of the per-batch unbiased variances
        variances = torch.stack([model[0](x).var((0, 2, 3), unbiased=True) for x in batches]).mean(0)
        assert torch.allclose(bn.running_var, variances, atol=1e-4)


@pytest.fixture(scope='module')
def nb201_run(tmp_path_factory):
    """A tiny NAS-Bench-201 search on ImageNet16-120 in its real format, with a benchmark of every architecture."""
    pytest.importorskip('nas_201_api', reason='the optional extra: pip install nas-bench-201')
    from genotypes_nb201 import NB201_OPS, arch_string
    from nb201_files import SEARCH as NB201_SEARCH
    from nb201_files import write_benchmark, write_imagenet16
    root = tmp_path_factory.mktemp('nb201')
    write_imagenet16(root / 'data')
    every = [arch_string([NB201_OPS[(k // 5 ** e) % 5] for e in range(6)]) for k in range(5 ** 6)]
    write_benchmark(root / 'all.pth', every, datasets=('ImageNet16-120',))
    run_dir = root / 'run'
    assert call_main(train_search, NB201_SEARCH + ['--pop_size', '6', '--data', root / 'data', '--epochs', '2',
                                                   '--run_dir', run_dir, '--api_path', root / 'all.pth']) == 0
    return run_dir, root / 'all.pth', every


class TestNB201:
    """The benchmark as the reference, through the nas-bench-201 package's own classes on a file the test writes."""

    def test_each_generation_records_its_populations_tau_with_the_benchmark(self, nb201_run):
        run_dir, _, _ = nb201_run
        # This tiny run scores every individual alike (chance on 120 classes), so its tau is undefined (null):
        # the value itself is checked on a hand-made population below.
        assert all('benchmark_tau' in record for record in _records(run_dir))
        assert '| tau with the benchmark |' in open(run_dir / 'report.md').read()
        assert "population's Kendall tau with the benchmark" in open(run_dir / 'log.txt').read()

    def test_the_populations_tau_against_values_worked_out_by_hand(self, tmp_path):
        from architect_evolution import Individual
        from genotypes_nb201 import NB201_OPS, arch_string
        from inputs.nb201 import Benchmark
        from nb201_files import write_benchmark
        archs = [arch_string([NB201_OPS[k]] * 6) for k in range(5)]
        write_benchmark(tmp_path / 'b.pth', archs, datasets=('cifar10', 'cifar10-valid'))
        benchmark = Benchmark.open(str(tmp_path / 'b.pth'), 'cifar10')
        # The benchmark's accuracy rises with the index; one-hot rows decode to architecture k.
        population = [Individual([torch.nn.functional.one_hot(torch.full((6,), k), 5).float()], fitness=f)
                      for k, f in zip(range(4), (10., 30., 20., 40.))]
        # pairs (0,1) (0,2) (0,3) (1,3) (2,3) concordant, (1,2) discordant: (5 - 1) / 6
        assert records.population_tau(population, benchmark, NB201) == pytest.approx(4 / 6)
        # architecture 4, the benchmark's best, with the best fitness: 4 more concordant pairs, (9 - 1) / 10
        population.append(Individual([torch.nn.functional.one_hot(torch.full((6,), 4), 5).float()], fitness=50.))
        assert records.population_tau(population, benchmark, NB201) == pytest.approx(8 / 10)

    def test_trust_takes_the_benchmarks_accuracies_without_training(self, nb201_run):
        from nb201_files import accuracy_of
        run_dir, api_path, every = nb201_run
        assert call_main(trust, ['--dir', run_dir, '--archs', '3', '--api_path', api_path, '--fitness_seeds', '2',
                                 '--device', 'cpu', '--iterations', '100']) == 0
        result = json.load(open(run_dir / 'trust' / 'trust.json'))
        assert result['reference']['kind'] == 'NAS-Bench-201'
        assert result['reference']['metric'] == 'x-test accuracy of ImageNet16-120 after 200 epochs'
        for arch in result['architectures']:
            assert arch['reference'] == [accuracy_of(every.index(arch['describe']), 'ImageNet16-120', 'x-test', 200)]
        assert not os.path.exists(run_dir / 'trust' / 'reference')
        assert result['exact_fitness_check']['status'] == 'equal'

    def test_the_pick_is_placed_among_every_architecture_of_the_benchmark(self, nb201_run):
        from nb201_files import accuracy_of
        run_dir, api_path, every = nb201_run
        assert call_main(trust, ['--dir', run_dir, '--archs', '2', '--api_path', api_path, '--fitness_seeds', '1',
                                 '--device', 'cpu', '--iterations', '50']) == 0
        result = json.load(open(run_dir / 'trust' / 'trust.json'))
        placement = result['placement']['pick']
        pick = next(a for a in result['architectures'] if a['pick'])['describe']
        test = [accuracy_of(i, 'ImageNet16-120', 'x-test', 200) for i in range(len(every))]
        ours = test[every.index(pick)]
        assert placement['architectures'] == 5 ** 6 and placement['test'] == pytest.approx(ours)
        assert placement['gap'] == pytest.approx(max(test) - ours)
        assert placement['percentile'] == pytest.approx(100 * sum(t < ours for t in test) / len(test))
        assert 'among all 15625 architectures of NAS-Bench-201' in open(run_dir / 'trust' / 'trust.md').read()
        assert result['baselines'] == {}

    def test_a_nb201_run_needs_the_benchmark_or_no_reference(self, nb201_run, capsys):
        assert call_main(trust, ['--dir', nb201_run[0], '--archs', '3', '--device', 'cpu']) == 2
        assert '--api_path' in capsys.readouterr().err

    @pytest.mark.parametrize('width, batch', [(4, 7), (8, 32)])
    def test_recalibrated_eval_mode_fitness_with_the_cpu_defaults_equals_paper_exact(self, width, batch):
        # The DARTS supernet runs in eval mode only under --fitness_bn recalibrate; the shape grid covers train mode.
        import speed
        import utils
        from architect_evolution import darts_shapes, decode, random_individual
        from model_search import Network
        torch.manual_seed(0)
        nets = {}
        for name, config in (('exact', speed.PAPER_EXACT), ('fast', speed.default_config(torch.device('cpu')))):
            torch.manual_seed(0)
            net = Network(width, 10, 4, impl=speed.layers(config)).to(memory_format=config.memory_format)
            net.set_arch_parameters(decode(random_individual(darts_shapes(4), utils.make_generator(1)).alphas))
            nets[name] = (net, config.memory_format)
        nets['fast'][0].load_state_dict(nets['exact'][0].state_dict())
        batches = [torch.randn(batch, 3, 16, 16) for _ in range(3)]
        x = torch.randn(batch, 3, 16, 16)
        logits = {}
        for name, (net, memory_format) in nets.items():
            fitness.recalibrate_batchnorm(net, [b.contiguous(memory_format=memory_format) for b in batches])
            with torch.no_grad():
                logits[name] = net(x.contiguous(memory_format=memory_format))
        assert (logits['fast'] - logits['exact']).abs().max().item() < 1e-4
        assert logits['exact'].std().item() > 1e-3
