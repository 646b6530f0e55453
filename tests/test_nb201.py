"""The NAS-Bench-201 space: the supernet against the original's state_dict, decoding, arch strings, the GA, the
data (split files, the ImageNet16 reader), the benchmark look-up, and a tiny search end to end, killed and
resumed."""
import json
import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import data_nb201
import train_search
import utils
import visualize
from architect_evolution import Individual, evolve, init_population
from conftest import FIXTURES, call_main, run_script, without_timings
from genotypes_nb201 import NB201_OPS, ArchError, arch_string, edge_names, parse_arch
from model_search_nb201 import Network, SearchCell
from search_space import DARTS, NB201

MANIFEST = os.path.join(FIXTURES, 'nb201', 'state_dict_manifest.json')
ARCH = '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|'


class TestSupernet:
    @pytest.mark.parametrize('name', sorted(json.load(open(MANIFEST))))
    def test_state_dict_is_the_originals_and_loads_strictly(self, name):
        manifest = json.load(open(MANIFEST))[name]
        C, N, classes, track = name.split('_')  # e.g. C16_N5_classes10_track0
        model = Network(int(C[1:]), int(N[1:]), int(classes[7:]), track_running_stats=track == 'track1')
        assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == list(map(tuple, manifest.items()))
        original = {k: torch.full(shape, 0.5) if shape else torch.tensor(3) for k, shape in manifest.items()}
        model.load_state_dict(original, strict=True)
        assert 'alphas' not in model.state_dict() and model.arch_parameters()[0].shape == (6, 5)

    def test_forward_applies_softmax_to_the_decoded_alphas(self):
        """An edge's output is the sum of its five ops weighted e/(e+4) for the chosen one, 1/(e+4) for the others."""
        torch.manual_seed(0)
        cell = SearchCell(4, 4, track_running_stats=False).eval()
        alphas = torch.rand(6, 5)
        alphas[1] = torch.tensor([.9, .1, .2, .3, .4])  # `none` wins edge 2<-0
        (decoded,) = NB201.decode([alphas])
        weights = F.softmax(decoded, dim=-1)
        x = torch.randn(2, 4, 8, 8)
        nodes = [x]
        for i in range(1, 4):
            nodes.append(sum(sum(w * op(nodes[j]) for w, op in zip(weights[edge_names().index(f'{i}<-{j}')],
                                                                  cell.edges[f'{i}<-{j}']))
                             for j in range(i)))
        assert torch.allclose(cell(x, weights), nodes[-1], atol=1e-6)
        chosen, other = math.e / (math.e + 4), 1 / (math.e + 4)
        assert round(chosen, 3) == 0.405 and round(other, 3) == 0.149
        assert torch.allclose(weights.max(dim=1).values, torch.full((6,), chosen))
        assert torch.allclose(weights[1], torch.tensor([chosen, other, other, other, other]))

    def test_the_network_gives_every_cell_the_softmax_of_its_alphas(self):
        model = Network(4, 2, 10)
        alphas = NB201.decode([torch.rand(6, 5)])
        model.set_arch_parameters(alphas)
        received = []
        for cell in model.cells:
            if isinstance(cell, SearchCell):
                cell.register_forward_hook(lambda module, inputs, output: received.append(inputs[1]))
        model(torch.randn(2, 3, 16, 16))
        assert len(received) == 6
        for weights in received:
            assert torch.equal(weights, F.softmax(alphas[0], dim=-1))

    def test_network_runs_on_16_pixel_images_with_120_classes(self):
        model = Network(4, 1, 120, track_running_stats=True)
        model.set_arch_parameters(NB201.decode([torch.rand(6, 5)]))
        assert model(torch.randn(3, 3, 16, 16)).shape == (3, 120)


class TestDecoding:
    def test_one_hot_of_each_rows_argmax_none_included(self):
        alphas = torch.tensor([[.9, .1, .2, .3, .4], [.1, .2, .3, .4, .5], [.1, .8, .3, .4, .5],
                               [.1, .2, .7, .4, .5], [.1, .2, .3, .6, .5], [.5, .2, .3, .4, .1]])
        (decoded,) = NB201.decode([alphas])
        assert decoded.argmax(dim=1).tolist() == [0, 4, 1, 2, 3, 0] and decoded.sum().item() == 6
        assert NB201.genotype([alphas]) == \
            '|none~0|+|avg_pool_3x3~0|skip_connect~1|+|nor_conv_1x1~0|nor_conv_3x3~1|none~2|'
        # the DARTS space never keeps `none`; NAS-Bench-201 does
        assert 'none' not in str(DARTS.genotype([torch.eye(14, 8), torch.eye(14, 8)]))

    def test_arch_string_round_trip(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(50):
            ops = [NB201_OPS[i] for i in torch.randint(0, 5, (6,), generator=g).tolist()]
            assert parse_arch(arch_string(ops)) == ops
        assert arch_string(parse_arch(ARCH)) == ARCH
        assert parse_arch(ARCH) == ['nor_conv_3x3', 'none', 'skip_connect', 'avg_pool_3x3', 'nor_conv_1x1',
                                    'nor_conv_3x3']

    @pytest.mark.parametrize('bad', ['|nor_conv_3x3~0|+|none~0|', '|conv~0|', '|none~1|', 'nor_conv_3x3~0',
                                     '|none~0|+|none~0|none~1|none~2|'])
    def test_malformed_arch_strings_are_refused(self, bad):
        with pytest.raises(ArchError):
            parse_arch(bad)


class TestGeneticAlgorithm:
    def test_population_is_uniform_6_by_5(self):
        settings = train_search.search_settings(train_search.parse_args(['--space', 'nb201']))
        population = init_population(4, NB201.alpha_shapes(settings.supernet), utils.make_generator(3))
        g = utils.make_generator(3)
        for ind in population:
            assert len(ind.alphas) == 1 and torch.equal(ind.alphas[0], torch.rand(6, 5, generator=g))

    def test_evolve_is_the_dart_spaces_ga_on_one_matrix(self):
        """Tournament without replacement, uniform row crossover, row mutation with fresh U(0,1) rows, elites,
        drawn exactly as documented in architect_evolution.py."""
        population = init_population(6, [(6, 5)], utils.make_generator(1))
        for k, ind in enumerate(population):
            ind.fitness = [50., 70., 60., 10., 90., 30.][k]
        children = evolve(population, 1, 3, 0.3, utils.make_generator(7))

        g = utils.make_generator(7)
        ranked = sorted(population, key=lambda ind: -ind.fitness)
        expected = [ranked[0].alphas[0]]
        crossed = []
        while len(crossed) < 5:
            parents = [max((ranked[i] for i in torch.randperm(6, generator=g)[:3].tolist()), key=lambda p: p.fitness)
                       for _ in range(2)]
            first = torch.rand(6, generator=g) >= 0.5
            crossed.append(torch.where(first[:, None], parents[0].alphas[0], parents[1].alphas[0]))
        for child in crossed:
            hit = torch.rand(6, generator=g) < 0.3
            expected.append(torch.where(hit[:, None], torch.rand(6, 5, generator=g), child))
        assert len(children) == 6
        for got, want in zip(children, expected):
            assert torch.equal(got.alphas[0], want)
        assert isinstance(children[0], Individual) and math.isnan(children[0].fitness)


# ----------------------------------------------------------------------------------------------------------
# Data

class TestSplits:
    @pytest.mark.parametrize('file_name, sizes, of', [
        ('cifar-split.txt', {'train': 25000, 'valid': 25000}, 50000),
        ('cifar100-test-split.txt', {'xvalid': 5000, 'xtest': 5000}, 10000),
        ('imagenet-16-120-test-split.txt', {'xvalid': 3000, 'xtest': 3000}, 6000),
    ])
    def test_sizes_and_disjointness(self, file_name, sizes, of):
        split = data_nb201.read_split(file_name)
        assert {k: len(v) for k, v in split.items()} == sizes
        a, b = (set(v) for v in split.values())
        assert not a & b and a | b == set(range(of)), 'two disjoint halves that cover the set'

    def test_the_repository_copies_are_the_shared_fixtures(self):
        shared = os.path.join(os.path.dirname(os.path.dirname(FIXTURES)), '..', 'shared', 'fixtures', 'nb201')
        if not os.path.isdir(shared):
            pytest.skip('no shared/ beside the repository')
        ours = [os.path.join(data_nb201.SPLITS_DIR, name) for name in sorted(os.listdir(data_nb201.SPLITS_DIR))]
        assert len(ours) == 3
        for path in ours + [MANIFEST]:
            assert open(os.path.join(shared, os.path.basename(path))).read() == open(path).read(), path

    def test_cifar10_trains_on_train_and_measures_fitness_on_valid_of_the_training_set(self, monkeypatch):
        arrays = {True: _labelled_array(50000, 10), False: _labelled_array(10000, 10)}
        monkeypatch.setattr(data_nb201, 'load_dataset', lambda name, root, train: arrays[train])
        search = data_nb201.load_search_data('cifar10', 'ROOT')
        split = data_nb201.read_split('cifar-split.txt')
        assert search.valid is search.train and search.valid_augment is None
        assert search.train_indices.tolist() == split['train'] and search.valid_indices.tolist() == split['valid']
        assert search.train.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
        assert search.train.std == pytest.approx((63.0 / 255, 62.1 / 255, 66.7 / 255))

    def test_cifar100_trains_on_all_and_measures_fitness_on_xvalid_of_the_test_set(self, monkeypatch):
        arrays = {True: _labelled_array(50000, 100), False: _labelled_array(10000, 100)}
        monkeypatch.setattr(data_nb201, 'load_dataset', lambda name, root, train: arrays[train])
        search = data_nb201.load_search_data('cifar100', 'ROOT')
        assert search.train_indices.tolist() == list(range(50000))
        assert search.valid.labels is arrays[False].labels
        assert search.valid_indices.tolist() == data_nb201.read_split('cifar100-test-split.txt')['xvalid']
        assert search.valid.mean == pytest.approx((129.3 / 255, 124.1 / 255, 112.4 / 255))

    def test_a_test_set_smaller_than_the_split_is_refused(self, monkeypatch):
        arrays = {True: _labelled_array(500, 100), False: _labelled_array(100, 100)}
        monkeypatch.setattr(data_nb201, 'load_dataset', lambda name, root, train: arrays[train])
        with pytest.raises(utils.UserError, match='is it the whole dataset'):
            data_nb201.load_search_data('cifar100', 'ROOT')


def _labelled_array(n, classes):
    from data import ImageArray
    return ImageArray(torch.zeros(n, 3, 1, 1, dtype=torch.uint8), torch.arange(n) % classes, classes, (0.,) * 3,
                      (1.,) * 3)


def write_imagenet16(folder, train_per_file=20, val_images=6010, seed=0, protocol=2):
    """The downsampled-ImageNet format: train_data_batch_1..10 and val_data, each a pickled dict of 'data'
    (uint8 rows of 3 x 16 x 16, channel-major) and 'labels' (a list of 1-based ints, classes 1..1000)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    files = {f'train_data_batch_{i}': train_per_file for i in range(1, 11)}
    files['val_data'] = val_images
    written = {}
    for name, n in files.items():
        labels = rng.integers(1, 121, n)
        dropped = rng.choice(n, min(10, n // 5), replace=False)
        labels[dropped] = rng.integers(121, 1001, len(dropped))  # classes the 120-class subset leaves out
        data = rng.integers(0, 256, (n, 768), dtype=np.uint8)
        entry = {'data': data, 'labels': labels.tolist()}
        if name != 'val_data':
            entry['mean'] = data.mean(axis=0)
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(entry, f, protocol=protocol)
        written[name] = (data, labels)
    return written


class TestImageNet16:
    @pytest.mark.parametrize('protocol', [2, pickle.HIGHEST_PROTOCOL])
    def test_reads_the_120_classes_in_file_order(self, tmp_path, protocol):
        written = write_imagenet16(tmp_path, val_images=50, protocol=protocol)
        train = data_nb201.load_imagenet16(str(tmp_path), True)
        data = np.concatenate([written[f'train_data_batch_{i}'][0] for i in range(1, 11)])
        labels = np.concatenate([written[f'train_data_batch_{i}'][1] for i in range(1, 11)])
        keep = labels <= 120
        assert train.images.shape == (keep.sum(), 3, 16, 16) and train.num_classes == 120
        assert torch.equal(train.images, torch.from_numpy(data[keep].reshape(-1, 3, 16, 16)))
        assert train.labels.tolist() == (labels[keep] - 1).tolist()
        assert train.mean == pytest.approx((122.68 / 255, 116.66 / 255, 104.01 / 255))
        val = data_nb201.load_imagenet16(str(tmp_path / '..' / tmp_path.name), False)
        assert len(val) == (written['val_data'][1] <= 120).sum()

    def test_finds_an_imagenet16_subfolder_and_says_where_to_get_it(self, tmp_path):
        write_imagenet16(tmp_path / 'ImageNet16', train_per_file=2, val_images=5)
        assert len(data_nb201.load_imagenet16(str(tmp_path), False)) == 5 - 1
        with pytest.raises(utils.UserError, match='image-net.org'):
            data_nb201.load_imagenet16(str(tmp_path / 'elsewhere'), False)

    def test_a_pickle_with_code_in_it_is_refused_without_running_it(self, tmp_path):
        write_imagenet16(tmp_path, train_per_file=2, val_images=5)
        marker = tmp_path / 'ran'

        class Hostile:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))
        with open(tmp_path / 'val_data', 'wb') as f:
            pickle.dump({'data': Hostile(), 'labels': [1]}, f, protocol=2)
        with pytest.raises(utils.UserError, match="refusing to load 'posix.system'|refusing to load 'os.system'"):
            data_nb201.load_imagenet16(str(tmp_path), False)
        assert not marker.exists()

    def test_rows_of_the_wrong_size_are_refused(self, tmp_path):
        write_imagenet16(tmp_path, train_per_file=2, val_images=5)
        with open(tmp_path / 'val_data', 'wb') as f:
            pickle.dump({'data': np.zeros((2, 100), np.uint8), 'labels': [1, 2]}, f)
        with pytest.raises(utils.UserError, match='uint8 rows of 768'):
            data_nb201.load_imagenet16(str(tmp_path), False)


# ----------------------------------------------------------------------------------------------------------
# A tiny search on ImageNet16-120 in its real format, with the benchmark's split

SEARCH = ['--space', 'nb201', '--dataset', 'ImageNet16-120', '--init_channels', '4', '--num_cells', '1',
          '--pop_size', '3', '--tsize', '2', '--batch_size', '32', '--valid_batch_size', '128', '--valid_size', '256',
          '--track_running_stats', '--device', 'cpu', '--report_freq', '1']
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
        from augmentation import normalize
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
EVALUATION_SETS = {'cifar10-valid': ('x-valid', 'ori-test'), 'cifar10': ('ori-test',),
                   'cifar100': ('x-valid', 'x-test', 'ori-test'), 'ImageNet16-120': ('x-valid', 'x-test', 'ori-test')}


def accuracy_of(index: int, dataset: str, setname: str, epochs: int) -> float:
    """The accuracy the tiny benchmark stores: different for every architecture, set and training length."""
    return round(10 + index * 0.01 + list(EVALUATION_SETS).index(dataset) * 10
                 + EVALUATION_SETS[dataset].index(setname) + (epochs == 200) * 5, 4)


def write_benchmark(path, archs, datasets=tuple(EVALUATION_SETS)):
    """A benchmark file in the package's format (torch.save of meta_archs, arch2infos with the 12-epoch 'less'
    and 200-epoch 'full' ArchResults, evaluated_indexes), one seed each, the last epoch's accuracies only."""
    from nas_201_api import ArchResults, ResultsCount

    def results(index, arch, epochs):
        archresults = ArchResults(index, arch)
        for dataset in datasets:
            config = {'name': 'infer.tiny', 'C': 16, 'N': 5, 'arch_str': arch, 'class_num': 10}
            count = ResultsCount(dataset, None, {0: 50.}, {0: 1.}, 0.1, 10., config, 777, 1, None)
            count.update_train_info({0: 50.}, {0: 80.}, {0: 1.}, {0: 1.})
            sets = EVALUATION_SETS[dataset]
            count.update_eval({f'{s}@0': accuracy_of(index, dataset, s, epochs) for s in sets},
                              {f'{s}@0': 1. for s in sets}, {f'{s}@0': 1. for s in sets})
            archresults.update(dataset, 777, count)
        return archresults.state_dict()

    torch.save({'meta_archs': list(archs), 'evaluated_indexes': list(range(len(archs))),
                'arch2infos': {i: {'less': results(i, a, 12), 'full': results(i, a, 200)}
                               for i, a in enumerate(archs)}},
               path)


class TestBenchmark:
    @pytest.fixture(autouse=True)
    def _package(self):
        pytest.importorskip('nas_201_api', reason='the optional extra: pip install nas-bench-201')

    @pytest.mark.parametrize('dataset, test, valid', [
        ('cifar10', ('cifar10', 'ori-test'), ('cifar10-valid', 'x-valid')),
        ('cifar100', ('cifar100', 'x-test'), ('cifar100', 'x-valid')),
        ('ImageNet16-120', ('ImageNet16-120', 'x-test'), ('ImageNet16-120', 'x-valid')),
    ])
    def test_200_epoch_accuracies_of_the_originals_sets(self, tmp_path, dataset, test, valid):
        from benchmark_nb201 import Benchmark
        archs = [ARCH, arch_string(['none'] * 6), arch_string(['nor_conv_3x3'] * 6)]
        write_benchmark(tmp_path / 'tiny.pth', archs)
        benchmark = Benchmark.open(str(tmp_path / 'tiny.pth'), dataset)
        for i, arch in enumerate(archs):
            assert benchmark.lookup(arch) == {'index': i, 'test': accuracy_of(i, *test, 200),
                                              'valid': accuracy_of(i, *valid, 200)}
        assert benchmark.lookup(arch_string(['skip_connect'] * 6)) is None

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

    def test_a_file_that_is_not_a_benchmark_is_one_line(self, tmp_path):
        from benchmark_nb201 import Benchmark
        (tmp_path / 'x.pth').write_bytes(b'not a benchmark')
        with pytest.raises(utils.UserError, match='cannot read the NAS-Bench-201 file'):
            Benchmark.open(str(tmp_path / 'x.pth'), 'cifar10')


def test_train_py_explains_that_a_nb201_result_is_not_a_darts_genotype(nb201_search, capsys):
    import train
    assert call_main(train, ['--dir', nb201_search[0], '--dataset', 'synthetic', '--device', 'cpu']) == 2
    assert 'is a NAS-Bench-201 architecture' in capsys.readouterr().err
