"""Your own images (--dataset folder), cell diagrams, the search report and the cost counter."""
import json
import os
import shutil

import pytest
import torch
import torch.nn as nn
from PIL import Image

import genotypes
import report
import test_cifar
import train
import train_search
import visualize
from conftest import call_main
from cost import count_macs, network_cost
from inputs.data import load_folder, make_synthetic
from model import Cell


def make_tree(root, classes=3, size=24, per_class=(20, 6), seed=7):
    """A small image tree: root/train/<class>/*.png and root/val/<class>/*.png, with learnable classes."""
    for split, count, train_split in (('train', per_class[0], True), ('val', per_class[1], False)):
        array = make_synthetic(train_split, count * classes * 4, num_classes=classes, image_size=size, seed=seed)
        written = [0] * classes
        for image, label in zip(array.images, array.labels.tolist()):
            if written[label] == count:
                continue
            folder = root / split / f'class_{label}'
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f'{written[label]}.png')
            written[label] += 1
    return root


SEARCH = ['--dataset', 'folder', '--image_size', '24', '--init_channels', '4', '--layers', '3', '--pop_size', '3',
          '--tsize', '2', '--batch_size', '16', '--valid_batch_size', '32', '--epochs', '2', '--device', 'cpu',
          '--report_freq', '5']


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp('images'))


@pytest.fixture(scope='module')
def folder_search(tree, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp('folder_search') / 'run')
    train_search.main(train_search.parse_args(SEARCH + ['--data', str(tree), '--run_dir', run_dir]))
    return run_dir


class TestFolderDataset:
    def test_statistics_come_from_the_training_images(self, tree):
        train_array = load_folder(str(tree), True, 24)
        assert train_array.num_classes == 3 and len(train_array) == 60
        pixels = train_array.images.float().div(255)
        assert train_array.mean == pytest.approx(tuple(pixels.mean(dim=(0, 2, 3)).tolist()))
        val_array = load_folder(str(tree), False, 24)
        assert val_array.mean == train_array.mean and len(val_array) == 18
        assert sorted(torch.bincount(train_array.labels[:30]).tolist()) != [0, 0, 30], 'shuffled, not by class'

    def test_search_train_and_test_end_to_end(self, folder_search, tree, tmp_path):
        info = json.load(open(os.path.join(folder_search, 'dataset.json')))
        assert info['num_classes'] == 3 and info['image_size'] == 24 and len(info['mean']) == 3
        eval_dir = str(tmp_path / 'eval')
        result = train.main(train.parse_args([
            '--dir', folder_search, '--dataset', 'folder', '--data', str(tree), '--image_size', '24',
            '--init_channels', '4', '--layers', '3', '--batch_size', '16', '--epochs', '2', '--device', 'cpu',
            '--run_dir', eval_dir]))
        weights = torch.load(os.path.join(eval_dir, 'weights.pt'), weights_only=True)
        assert weights['classifier.weight'].shape[0] == 3, 'the class count flows into the network'
        evaluated = test_cifar.main(test_cifar.parse_args([
            '--dataset', 'folder', '--data', str(tree), '--image_size', '24', '--genotype',
            os.path.join(eval_dir, 'genotype.json'), '--init_channels', '4', '--layers', '3', '--batch_size', '16',
            '--device', 'cpu', '--model_path', os.path.join(eval_dir, 'weights.pt')]))
        assert evaluated['samples'] == 18
        assert evaluated['top1'] == result['history'][-1]['test_top1']
        # the same from the run directory alone: dataset, sizes, genotype, normalisation and weights
        by_dir = test_cifar.main(test_cifar.parse_args(['--dir', eval_dir, '--device', 'cpu']))
        assert by_dir['samples'] == 18 and by_dir['top1'] == result['history'][-1]['test_top1']
        assert by_dir['loss'] == pytest.approx(evaluated['loss'], rel=1e-6)

    def test_one_class_is_refused(self, tmp_path, capsys):
        make_tree(tmp_path, classes=1)
        assert call_main(train_search, SEARCH + ['--data', tmp_path, '--run_dir', tmp_path / 'run']) == 2
        assert 'a classifier needs at least two' in capsys.readouterr().err

    def test_empty_class_is_named(self, tmp_path, capsys):
        make_tree(tmp_path)
        (tmp_path / 'train' / 'class_9').mkdir()
        assert call_main(train_search, SEARCH + ['--data', tmp_path, '--run_dir', tmp_path / 'run']) == 2
        assert 'class_9' in capsys.readouterr().err

    def test_unreadable_image_is_named(self, tmp_path, capsys):
        make_tree(tmp_path)
        (tmp_path / 'train' / 'class_1' / 'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
        assert call_main(train_search, SEARCH + ['--data', tmp_path, '--run_dir', tmp_path / 'run']) == 2
        err = capsys.readouterr().err
        assert 'cannot read image' in err and 'broken.jpg' in err and err.count('\n') == 1

    def test_missing_tree_explains_the_layout(self, tmp_path, capsys):
        assert call_main(train_search, SEARCH + ['--data', tmp_path, '--run_dir', tmp_path / 'run']) == 2
        assert 'DIR/train/<class>' in capsys.readouterr().err.replace(str(tmp_path), 'DIR')

    def test_auxiliary_head_needs_32_pixels(self, tmp_path, capsys):
        assert call_main(train, ['--arch', 'EvNASA', '--dataset', 'folder', '--image_size', '24', '--auxiliary']) == 2
        assert '--auxiliary needs images of at least 32x32' in capsys.readouterr().err


class TestSearchReport:
    def test_report_numbers_are_the_records(self, folder_search):
        text = open(os.path.join(folder_search, 'report.md')).read()
        record = json.load(open(os.path.join(folder_search, 'generations', 'gen_002.json')))
        row = f"| 2 | {record['best']:.2f} | {record['mean']:.2f} | {record['worst']:.2f} | " \
              f"{record['distinct_genotypes']} / 3 |"
        assert row in text
        counts = report.operation_counts(record)
        assert sum(counts['normal'].values()) == 3 * 8
        assert f"| sep_conv_3x3 | {counts['normal']['sep_conv_3x3']} | {counts['reduce']['sep_conv_3x3']} |" in text
        assert 'multiply-accumulates' in text and 'node 0 =' in text

    def test_writes_plots_when_matplotlib_is_installed(self, folder_search):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            assert not os.path.exists(os.path.join(folder_search, 'fitness.png'))
            return
        for name in ('fitness.png', 'diversity.png', 'operations.png'):
            assert os.path.getsize(os.path.join(folder_search, name)) > 0

    def test_search_writes_the_best_cell_diagram(self, folder_search):
        for name in ('genotype_normal.dot', 'genotype_reduction.dot', 'genotype.txt'):
            assert os.path.exists(os.path.join(folder_search, name))

    def test_report_on_demand_and_on_a_directory_without_records(self, folder_search, tmp_path, capsys):
        copy = str(tmp_path / 'copy')
        shutil.copytree(folder_search, copy)
        os.remove(os.path.join(copy, 'report.md'))
        assert call_main(report, [copy]) == 0 and os.path.exists(os.path.join(copy, 'report.md'))
        assert call_main(report, [str(tmp_path)]) == 2
        assert 'holds no generations' in capsys.readouterr().err


class TestVisualize:
    def test_evnas_a_with_whatever_this_machine_has(self, tmp_path):
        result = visualize.main(visualize.parse_args(['EvNASA', '--out', str(tmp_path)]))
        files = set(os.listdir(tmp_path))
        assert {'EvNASA_normal.dot', 'EvNASA_reduction.dot', 'EvNASA.txt'} <= files
        if shutil.which('dot'):
            assert {'EvNASA_normal.png', 'EvNASA_reduction.png'} <= files and not result['missing']
        else:
            assert len(result['missing']) == 2 and 'apt-get install graphviz' in result['missing'][0]

    def test_fallback_without_graphviz(self, tmp_path, monkeypatch):
        monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
        result = visualize.main(visualize.parse_args(['EvNASA', '--out', str(tmp_path)]))
        assert not any(name.endswith('.png') for name in os.listdir(tmp_path))
        assert len(result['missing']) == 2
        text = (tmp_path / 'EvNASA.txt').read_text()
        assert 'node 0 = sep_conv_3x3(c_{k-2}) + sep_conv_3x3(c_{k-1})' in text
        assert 'node 3 = dil_conv_5x5(1) + sep_conv_3x3(c_{k-1})' in text
        dot = (tmp_path / 'EvNASA_normal.dot').read_text()
        assert dot.count('->') == 8 + 4 and '"c_{k-1}" -> "0" [label="sep_conv_3x3"' in dot

    def test_from_a_genotype_file_and_a_run_directory(self, tmp_path, folder_search):
        genotypes.save_genotype(genotypes.EvNASB, str(tmp_path / 'cell.json'))
        visualize.main(visualize.parse_args([str(tmp_path / 'cell.json'), '--out', str(tmp_path)]))
        assert (tmp_path / 'cell.txt').exists()
        visualize.main(visualize.parse_args([folder_search, '--out', str(tmp_path / 'run')]))
        assert (tmp_path / 'run' / 'genotype.txt').exists()

    def test_unknown_name(self, capsys):
        assert call_main(visualize, ['EvNASQ']) == 2
        assert "unknown architecture 'EvNASQ'" in capsys.readouterr().err


class TestCost:
    def test_matches_a_hand_count_of_plain_layers(self):
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Flatten(),
                            nn.Linear(4 * 8 * 8, 10))
        # conv: 8*8*4 outputs x 3*3*3 taps; depthwise: 8*8*4 x 9; linear: 256 x 10
        assert count_macs(net, (1, 3, 8, 8)) == 8 * 8 * 4 * 27 + 8 * 8 * 4 * 9 + 256 * 10

    def test_matches_a_hand_count_of_a_cell(self):
        genotype = genotypes.Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)] * 4, normal_concat=[2, 3, 4, 5],
                                      reduce=[], reduce_concat=[])

        class OneCell(nn.Module):
            def __init__(self):
                super().__init__()
                self.cell = Cell(genotype, 6, 6, 4, reduction=False, reduction_prev=False)

            def forward(self, x):
                return self.cell(x, x, 0.)

        H = W = 8
        C, C_in = 4, 6
        preprocess = 2 * H * W * C * C_in                      # two 1x1 ReLUConvBN
        sep_conv = 2 * (H * W * C * 9 + H * W * C * C)          # two (depthwise 3x3 + pointwise) blocks
        assert count_macs(OneCell(), (1, C_in, H, W)) == preprocess + 8 * sep_conv

    def test_published_cells_at_their_training_size(self):
        cifar = network_cost(genotypes.EvNASA)
        assert cifar['params'] == 3_626_470 and cifar['image_size'] == 32
        imagenet = network_cost(genotypes.EvNASA, 'imagenet')
        assert imagenet['params'] == 5_136_640
        assert 400e6 < imagenet['macs'] < 700e6, 'mobile setting: DARTS-family cells cost about 600 M at 224x224'

    def test_training_prints_the_cost_at_the_start(self, tmp_path):
        run_dir = tmp_path / 'run'
        train.main(train.parse_args(['--arch', 'EvNASA', '--dataset', 'synthetic', '--synthetic_size', '32',
                                     '--init_channels', '4', '--layers', '3', '--epochs', '1', '--batch_size', '16',
                                     '--device', 'cpu', '--run_dir', str(run_dir)]))
        log = (run_dir / 'log.txt').read_text()
        assert log.index('multiply-accumulates') < log.index('epoch   1')
