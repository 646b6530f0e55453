"""A tiny NAS-Bench-201 search end to end (train_search.py on ImageNet16-120 in its real format): records,
killed and resumed, the report and its visualisation, the benchmark's true accuracies, and train.py's refusal."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

import train_search
import utils
import visualize
from conftest import call_main, run_script, without_timings
from genotypes_nb201 import NB201_OPS, arch_string
from model_search_nb201 import Network
from nb201_files import ARCH, SEARCH, accuracy_of, write_benchmark, write_imagenet16
from search_space import NB201

GENERATIONS = 3


@pytest.fixture(scope='module')
def imagenet16(tmp_path_factory):
    folder = tmp_path_factory.mktemp('ImageNet16')
    write_imagenet16(folder)
    return str(folder)


@pytest.fixture(scope='module')
def nb201_search(imagenet16, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp('nb201') / 'run')
    result = train_search.main(train_search.parse_args(SEARCH + ['--data', imagenet16, '--epochs', str(GENERATIONS),
                                                                 '--run_dir', run_dir]))
    return run_dir, result


def _records_of(run_dir, generations):
    return [without_timings(json.load(open(os.path.join(run_dir, 'generations', f'gen_{g:03d}.json'))))
            for g in range(1, generations + 1)]


def _records(run_dir):
    return _records_of(run_dir, GENERATIONS)


class TestSearch:
    def test_records_hold_alphas_and_arch_strings(self, nb201_search):
        run_dir, result = nb201_search
        last = _records(run_dir)[-1]
        for individual in last['population']:
            alphas = torch.tensor(individual['alphas']['cell'])
            assert alphas.shape == (6, 5) and individual['arch'] == NB201.genotype([alphas])
        assert json.load(open(os.path.join(run_dir, 'genotype.json'))) == \
            {'space': 'nb201', 'arch': last['population'][0]['arch']}
        log = open(os.path.join(run_dir, 'log.txt')).read()
        assert 'ImageNet16-120: ' in log and ' measure fitness (test transform; fitness estimator: the original' in log
        assert '256 measure fitness' in log and 'no --api_path' in log and 'NAS-Bench-201-v1_0' in log
        text = open(os.path.join(run_dir, 'report.md')).read()
        assert last['population'][0]['arch'] in text and '| avg_pool_3x3 |' in text and 'node 3 =' in text
        assert os.path.exists(os.path.join(run_dir, 'genotype_cell.dot'))

    def test_fitness_is_measured_in_eval_mode_on_unaugmented_images(self, nb201_search, imagenet16):
        """Every individual's fitness again, by hand, from the final weights: eval mode, test transform."""
        run_dir, result = nb201_search
        args = train_search.parse_args(SEARCH + ['--data', imagenet16])
        state = torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)
        model = Network(4, 1, 120, track_running_stats=True)
        model.load_state_dict(state['model'])
        model.eval()
        settings = train_search.search_settings(args)
        search = NB201.search_data(settings.data, settings.augment)
        chosen = torch.randperm(3000, generator=utils.make_generator(args.seed + 2))[:256].sort().values
        indices = search.valid_indices[chosen]
        from inputs.augmentation import normalize
        x = normalize(search.valid.images[indices], search.valid.mean, search.valid.std)
        y = search.valid.labels[indices]
        # With running statistics in every BatchNorm, eval mode makes the batch order irrelevant. Top-1 alone
        # cannot tell the individuals of this tiny run apart (they all score alike); their losses differ.
        losses = []
        for individual in result['population']:
            model.set_arch_parameters(NB201.decode(individual.alphas))
            with torch.no_grad():
                logits = model(x)
            top1 = 100. * (logits.argmax(1) == y).float().mean().item()
            assert top1 == pytest.approx(individual.fitness, abs=1e-6)
            loss = F.cross_entropy(logits, y).item()
            assert loss == pytest.approx(individual.loss, rel=1e-5)
            losses.append(loss)
        assert max(losses) - min(losses) > 1e-3 * max(losses), 'the individuals must differ for this test to tell'

    def test_killed_during_fitness_then_resumed_equals_uninterrupted_bit_for_bit(self, nb201_search, imagenet16,
                                                                                 tmp_path):
        run_dir = str(tmp_path / 'run')
        killed = run_script('train_search.py', *SEARCH, '--data', imagenet16, '--epochs', str(GENERATIONS),
                            '--run_dir', run_dir, env={'EVNAS_FAULT': 'kill@eval:2:1'})
        assert killed.returncode == -9, killed.stderr
        assert call_main(train_search, ['--resume', run_dir]) == 0
        reference = nb201_search[0]
        assert _records(run_dir) == _records(reference)
        ours = torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=True)
        theirs = torch.load(os.path.join(reference, 'checkpoint.pt'), weights_only=True)
        assert all(torch.equal(ours['model'][k], v) for k, v in theirs['model'].items())

    @pytest.mark.parametrize('argv, message', [
        (['--space', 'nb201', '--layers', '5'], '--layers do(es) not apply to --space nb201'),
        (['--num_cells', '2'], '--num_cells do(es) not apply to --space darts'),
        (['--dataset', 'ImageNet16-120'], '--dataset ImageNet16-120 is a dataset of --space nb201'),
        (['--space', 'nb201', '--max_nodes', '1'], '--max_nodes must be at least 2'),
        (['--space', 'nb201', '--dataset', 'ImageNet16-120', '--api_path', 'missing.pth'], 'missing.pth is not a file'),
        (['--space', 'nb201', '--dataset', 'synthetic', '--api_path', __file__],
         'no accuracies for --dataset synthetic'),
        (['--space', 'nb201', '--dataset', 'ImageNet16-120', '--data', 'nowhere'], 'ImageNet16 not found under'),
    ])
    def test_refused_before_any_work(self, argv, message, tmp_path, capsys):
        assert call_main(train_search, argv + ['--run_dir', str(tmp_path / 'run')]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / 'run').exists()

    def test_benchmark_flags_belong_to_the_benchmarks_cell(self, nb201_search, tmp_path, capsys):
        argv = ['--space', 'nb201', '--dataset', 'ImageNet16-120', '--max_nodes', '5', '--api_path', __file__]
        assert call_main(train_search, argv + ['--run_dir', tmp_path / 'run']) == 2
        assert '--max_nodes 4' in capsys.readouterr().err
        darts = tmp_path / 'darts'
        from conftest import SEARCH_TINY
        assert call_main(train_search, SEARCH_TINY + ['--epochs', '1', '--run_dir', darts]) == 0
        assert call_main(train_search, ['--resume', darts, '--api_path', __file__]) == 2
        assert 'needs --space nb201' in capsys.readouterr().err
        assert train_search.parse_args(['--resume', nb201_search[0], '--api_path', '']).api_path is None

    def test_the_per_image_loader(self, imagenet16, tmp_path):
        argv = SEARCH + ['--data', imagenet16, '--epochs', '1', '--loader', 'torchvision', '--num_workers', '0']
        assert call_main(train_search, argv + ['--run_dir', tmp_path]) == 0
        record = _records_of(tmp_path, 1)[0]
        assert len(record['population']) == 3 and all(0 <= p['fitness'] <= 100 for p in record['population'])

    def test_report_over_several_runs_gives_mean_and_spread(self, nb201_search, tmp_path, capsys):
        import shutil

        import report
        copy = tmp_path / 'copy'
        shutil.copytree(nb201_search[0], copy)
        path = copy / 'generations' / f'gen_{GENERATIONS:03d}.json'
        record = json.load(open(path))
        original = record['population'][0]['fitness']
        record['population'][0]['fitness'] = original + 2.
        json.dump(record, open(path, 'w'))
        assert call_main(report, [nb201_search[0], copy]) == 0
        out = capsys.readouterr().out
        spread = math.sqrt(2.)  # the sample standard deviation of x and x + 2
        assert f"fitness: {original + 1:.2f} +- {spread:.2f} (std over 2 runs" in out

    def test_cutout_has_no_effect_unless_a_length_is_given(self):
        def augment(*argv):  # the training augmentation the search resolves from its command line
            return train_search.search_settings(train_search.parse_args(list(argv))).augment
        faithful = augment('--space', 'nb201', '--cutout')
        assert faithful.cutout_length == 0 and faithful.padding == 4
        assert augment('--space', 'nb201', '--cutout_length', '8').cutout_length == 8
        assert augment('--space', 'nb201', '--dataset', 'ImageNet16-120').padding == 2
        darts = augment('--cutout')
        assert darts.cutout_length == 16 and darts.padding == 4
        assert NB201.train_augment(True, 0, 4, flip=True).cutout_length == 0, 'the space ignores --cutout'

    def test_visualize_draws_an_arch_string_and_a_run(self, nb201_search, tmp_path):
        assert call_main(visualize, [ARCH, '--out', tmp_path]) == 0
        dot = open(tmp_path / 'nb201_cell.dot').read()
        assert '"0" -> "1" [label="nor_conv_3x3"]' in dot and '"0" -> "2"' not in dot  # none is no edge
        assert call_main(visualize, [nb201_search[0], '--out', tmp_path / 'run']) == 0
        assert os.path.exists(tmp_path / 'run' / 'genotype_cell.dot')
        assert call_main(visualize, ['|nor_conv_3x3~0|+|bad~0|']) == 2


# ----------------------------------------------------------------------------------------------------------
# The benchmark's ground truth, through the nas-bench-201 package's own classes and file format

# The benchmark's data sets and the evaluation sets each of them holds (as in NAS-Bench-201-v1_0/v1_1).


class TestBenchmarkInASearch:
    @pytest.fixture(autouse=True)
    def _package(self):
        pytest.importorskip('nas_201_api', reason='the optional extra: pip install nas-bench-201')

    def test_search_records_the_true_accuracy_of_every_generations_best(self, imagenet16, tmp_path):
        every = [arch_string([NB201_OPS[(k // 5 ** e) % 5] for e in range(6)]) for k in range(5 ** 6)]
        write_benchmark(tmp_path / 'all.pth', every, datasets=('ImageNet16-120',))
        run_dir = tmp_path / 'run'
        assert call_main(train_search, SEARCH + ['--data', imagenet16, '--epochs', '2', '--run_dir', run_dir,
                                                 '--api_path', tmp_path / 'all.pth']) == 0
        records = [json.load(open(run_dir / 'generations' / f'gen_{g:03d}.json')) for g in (1, 2)]
        for record in records:
            index = every.index(record['population'][0]['arch'])
            assert record['benchmark'] == {'index': index, 'test': accuracy_of(index, 'ImageNet16-120', 'x-test', 200),
                                           'valid': accuracy_of(index, 'ImageNet16-120', 'x-valid', 200)}
        log = open(run_dir / 'log.txt').read()
        assert f"NAS-Bench-201 #{records[-1]['benchmark']['index']}, test {records[-1]['benchmark']['test']:.2f}" in log
        text = open(run_dir / 'report.md').read()
        assert '| true test | true valid |' in text and f"**{records[-1]['benchmark']['test']:.2f} %** test" in text


def test_train_py_explains_that_a_nb201_result_is_not_a_darts_genotype(nb201_search, capsys):
    import train
    assert call_main(train, ['--dir', nb201_search[0], '--dataset', 'synthetic', '--device', 'cpu']) == 2
    assert 'is a NAS-Bench-201 architecture' in capsys.readouterr().err
