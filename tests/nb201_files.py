"""Small NAS-Bench-201 files in their real formats for the tests (ImageNet16-120's pickles, a benchmark file
in the API's format) and the tiny search that reads them."""
import os
import pickle

import numpy as np
import torch

from conftest import FIXTURES

MANIFEST = os.path.join(FIXTURES, 'nb201', 'state_dict_manifest.json')
ARCH = '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|'

# A tiny search on ImageNet16-120 in its real format, with the benchmark's split
SEARCH = ['--space', 'nb201', '--dataset', 'ImageNet16-120', '--init_channels', '4', '--num_cells', '1',
          '--pop_size', '3', '--tsize', '2', '--batch_size', '32', '--valid_batch_size', '128', '--valid_size', '256',
          '--track_running_stats', '--device', 'cpu', '--report_freq', '1']


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
