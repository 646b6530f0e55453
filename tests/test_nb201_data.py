"""NAS-Bench-201's data (inputs/nb201.py): the split files, the ImageNet16-120 reader, and the benchmark's
look-up."""
import os
import pickle

import numpy as np
import pytest
import torch

import utils
from conftest import FIXTURES
from genotypes_nb201 import arch_string
from inputs import nb201
from nb201_files import ARCH, MANIFEST, accuracy_of, write_benchmark, write_imagenet16


class TestSplits:
    @pytest.mark.parametrize('file_name, sizes, of', [
        ('cifar-split.txt', {'train': 25000, 'valid': 25000}, 50000),
        ('cifar100-test-split.txt', {'xvalid': 5000, 'xtest': 5000}, 10000),
        ('imagenet-16-120-test-split.txt', {'xvalid': 3000, 'xtest': 3000}, 6000),
    ])
    def test_sizes_and_disjointness(self, file_name, sizes, of):
        split = nb201.read_split(file_name)
        assert {k: len(v) for k, v in split.items()} == sizes
        a, b = (set(v) for v in split.values())
        assert not a & b and a | b == set(range(of)), 'two disjoint halves that cover the set'

    def test_the_repository_copies_are_the_shared_fixtures(self):
        shared = os.path.join(os.path.dirname(os.path.dirname(FIXTURES)), '..', 'shared', 'fixtures', 'nb201')
        if not os.path.isdir(shared):
            pytest.skip('no shared/ beside the repository')
        ours = [os.path.join(nb201.SPLITS_DIR, name) for name in sorted(os.listdir(nb201.SPLITS_DIR))]
        assert len(ours) == 3
        for path in ours + [MANIFEST]:
            assert open(os.path.join(shared, os.path.basename(path))).read() == open(path).read(), path

    def test_cifar10_trains_on_train_and_measures_fitness_on_valid_of_the_training_set(self, monkeypatch):
        arrays = {True: _labelled_array(50000, 10), False: _labelled_array(10000, 10)}
        monkeypatch.setattr(nb201, 'load_dataset', lambda name, root, train: arrays[train])
        search = nb201.load_search_data('cifar10', 'ROOT')
        split = nb201.read_split('cifar-split.txt')
        assert search.valid is search.train and search.valid_augment is None
        assert search.train_indices.tolist() == split['train'] and search.valid_indices.tolist() == split['valid']
        assert search.train.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
        assert search.train.std == pytest.approx((63.0 / 255, 62.1 / 255, 66.7 / 255))

    def test_cifar100_trains_on_all_and_measures_fitness_on_xvalid_of_the_test_set(self, monkeypatch):
        arrays = {True: _labelled_array(50000, 100), False: _labelled_array(10000, 100)}
        monkeypatch.setattr(nb201, 'load_dataset', lambda name, root, train: arrays[train])
        search = nb201.load_search_data('cifar100', 'ROOT')
        assert search.train_indices.tolist() == list(range(50000))
        assert search.valid.labels is arrays[False].labels
        assert search.valid_indices.tolist() == nb201.read_split('cifar100-test-split.txt')['xvalid']
        assert search.valid.mean == pytest.approx((129.3 / 255, 124.1 / 255, 112.4 / 255))

    def test_a_test_set_smaller_than_the_split_is_refused(self, monkeypatch):
        arrays = {True: _labelled_array(500, 100), False: _labelled_array(100, 100)}
        monkeypatch.setattr(nb201, 'load_dataset', lambda name, root, train: arrays[train])
        with pytest.raises(utils.UserError, match='is it the whole dataset'):
            nb201.load_search_data('cifar100', 'ROOT')


def _labelled_array(n, classes):
    from inputs.data import ImageArray
    return ImageArray(torch.zeros(n, 3, 1, 1, dtype=torch.uint8), torch.arange(n) % classes, classes, (0.,) * 3,
                      (1.,) * 3)




class TestImageNet16:
    @pytest.mark.parametrize('protocol', [2, pickle.HIGHEST_PROTOCOL])
    def test_reads_the_120_classes_in_file_order(self, tmp_path, protocol):
        written = write_imagenet16(tmp_path, val_images=50, protocol=protocol)
        train = nb201.load_imagenet16(str(tmp_path), True)
        data = np.concatenate([written[f'train_data_batch_{i}'][0] for i in range(1, 11)])
        labels = np.concatenate([written[f'train_data_batch_{i}'][1] for i in range(1, 11)])
        keep = labels <= 120
        assert train.images.shape == (keep.sum(), 3, 16, 16) and train.num_classes == 120
        assert torch.equal(train.images, torch.from_numpy(data[keep].reshape(-1, 3, 16, 16)))
        assert train.labels.tolist() == (labels[keep] - 1).tolist()
        assert train.mean == pytest.approx((122.68 / 255, 116.66 / 255, 104.01 / 255))
        val = nb201.load_imagenet16(str(tmp_path / '..' / tmp_path.name), False)
        assert len(val) == (written['val_data'][1] <= 120).sum()

    def test_finds_an_imagenet16_subfolder_and_says_where_to_get_it(self, tmp_path):
        write_imagenet16(tmp_path / 'ImageNet16', train_per_file=2, val_images=5)
        assert len(nb201.load_imagenet16(str(tmp_path), False)) == 5 - 1
        with pytest.raises(utils.UserError, match='image-net.org'):
            nb201.load_imagenet16(str(tmp_path / 'elsewhere'), False)

    def test_a_pickle_with_code_in_it_is_refused_without_running_it(self, tmp_path):
        write_imagenet16(tmp_path, train_per_file=2, val_images=5)
        marker = tmp_path / 'ran'

        class Hostile:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))
        with open(tmp_path / 'val_data', 'wb') as f:
            pickle.dump({'data': Hostile(), 'labels': [1]}, f, protocol=2)
        with pytest.raises(utils.UserError, match="refusing to load 'posix.system'|refusing to load 'os.system'"):
            nb201.load_imagenet16(str(tmp_path), False)
        assert not marker.exists()

    def test_rows_of_the_wrong_size_are_refused(self, tmp_path):
        write_imagenet16(tmp_path, train_per_file=2, val_images=5)
        with open(tmp_path / 'val_data', 'wb') as f:
            pickle.dump({'data': np.zeros((2, 100), np.uint8), 'labels': [1, 2]}, f)
        with pytest.raises(utils.UserError, match='uint8 rows of 768'):
            nb201.load_imagenet16(str(tmp_path), False)


# ----------------------------------------------------------------------------------------------------------
# A tiny search on ImageNet16-120 in its real format, with the benchmark's split


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
        from inputs.nb201 import Benchmark
        archs = [ARCH, arch_string(['none'] * 6), arch_string(['nor_conv_3x3'] * 6)]
        write_benchmark(tmp_path / 'tiny.pth', archs)
        benchmark = Benchmark.open(str(tmp_path / 'tiny.pth'), dataset)
        for i, arch in enumerate(archs):
            assert benchmark.lookup(arch) == {'index': i, 'test': accuracy_of(i, *test, 200),
                                              'valid': accuracy_of(i, *valid, 200)}
        assert benchmark.lookup(arch_string(['skip_connect'] * 6)) is None

    def test_a_file_that_is_not_a_benchmark_is_one_line(self, tmp_path):
        from inputs.nb201 import Benchmark
        (tmp_path / 'x.pth').write_bytes(b'not a benchmark')
        with pytest.raises(utils.UserError, match='cannot read the NAS-Bench-201 file'):
            Benchmark.open(str(tmp_path / 'x.pth'), 'cifar10')
