"""The data of a NAS-Bench-201 search, as the original EvNAS (AutoDL's get_nas_search_loaders) builds it.

| dataset        | trains the supernet                  | measures fitness                                       |
| -------------- | ------------------------------------ | ------------------------------------------------------ |
| cifar10        | the 25,000 `train` indices of        | the 25,000 `valid` indices of the same file (of the    |
|                | splits/cifar-split.txt (train set)   | training set), with the test transform                 |
| cifar100       | the whole training set               | the 5,000 `xvalid` indices of the test set             |
|                |                                      | (splits/cifar100-test-split.txt), test transform       |
| ImageNet16-120 | the whole training set               | the 3,000 `xvalid` indices of the validation set       |
|                |                                      | (splits/imagenet-16-120-test-split.txt), test transform|
| synthetic,     | the first --train_portion of the     | the rest, with the test transform (search_space.py)    |
| folder         | training images                      |                                                        |

The split files are NAS-Bench-201's own; the benchmark's `x-valid` and `x-test` accuracies are measured on
these halves. Images are normalised with NAS-Bench-201's statistics, not DARTS's.
"""
import importlib
import io
import json
import os
import pickle
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from inputs.data import FOLDER, SYNTHETIC, ImageArray, SearchData, load_dataset
from inputs.data import at_hand as data_at_hand
from utils import UserError, reason

SPLITS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'splits')  # at the root
IMAGENET16 = 'ImageNet16-120'
DATASETS = ('cifar10', 'cifar100', IMAGENET16, SYNTHETIC, FOLDER)

# NOTE (faithful to EvNAS): NAS-Bench-201's normalisation (AutoDL's get_datasets), in 0-255 units, not DARTS's.
STATISTICS = {
    'cifar10': ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    'cifar100': ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
    IMAGENET16: ((122.68, 116.66, 104.01), (63.22, 61.26, 65.09)),
}
# NOTE (faithful to EvNAS): the benchmark's split files (splits/), as its search loaders read them. For each
# dataset: the file, the key of the images that train the supernet (None: all of them) and of those that
# measure fitness, and whether the latter come from the training set.
SPLITS = {
    'cifar10': ('cifar-split.txt', 'train', 'valid', True),
    'cifar100': ('cifar100-test-split.txt', None, 'xvalid', False),
    IMAGENET16: ('imagenet-16-120-test-split.txt', None, 'xvalid', False),
}
IMAGENET16_WHERE = ("ImageNet16 is the 16x16 downsampled ImageNet of Chrabaszcz et al. (2017): download "
                    "Imagenet16_train.zip and Imagenet16_val.zip from https://image-net.org/download-images "
                    "(\"Downsampled ImageNet\", 16x16), or the ImageNet16 folder that NAS-Bench-201's README links, "
                    "and pass --data DIR with DIR/train_data_batch_1..10 and DIR/val_data")


def read_split(file_name: str) -> Dict[str, List[int]]:
    """A NAS-Bench-201 split file ({"name": ["int", ["0", "5", ...]], ...}) as lists of indices."""
    path = os.path.join(SPLITS_DIR, file_name)
    try:
        with open(path) as f:
            raw = json.load(f)
        return {name: [int(i) for i in values] for name, (kind, values) in raw.items()}
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"cannot read the split file {path}: {reason(e)}") from None


def with_statistics(array: ImageArray, dataset: str) -> ImageArray:
    mean, std = STATISTICS[dataset]
    return replace(array, mean=tuple(m / 255 for m in mean), std=tuple(s / 255 for s in std))


def load_search_data(dataset: str, root: str) -> SearchData:
    """The two sides of a NAS-Bench-201 search on cifar10, cifar100 or ImageNet16-120 (the table above)."""
    if dataset == IMAGENET16:
        train, test = load_imagenet16(root, True), load_imagenet16(root, False)
    else:
        train, test = load_dataset(dataset, root, train=True), load_dataset(dataset, root, train=False)
    train, test = with_statistics(train, dataset), with_statistics(test, dataset)
    file_name, train_key, valid_key, valid_from_train = SPLITS[dataset]
    split = read_split(file_name)
    valid = train if valid_from_train else test
    train_indices = torch.arange(len(train)) if train_key is None else torch.tensor(split[train_key])
    valid_indices = torch.tensor(split[valid_key])
    for name, array, indices in (('training', train, train_indices), ('fitness', valid, valid_indices)):
        if int(indices.max()) >= len(array):
            raise UserError(f"{file_name} indexes {int(indices.max()) + 1} {name} images of {dataset}, but "
                            f"{len(array)} were read from {root}: is it the whole dataset?")
    return SearchData(train, train_indices, valid, valid_indices)


# ----------------------------------------------------------------------------------------------------------
# ImageNet16-120

class _ArrayUnpickler(pickle.Unpickler):
    """Admits what the downsampled-ImageNet pickles hold (dicts, lists, numbers, strings and numpy arrays)
    and nothing else, so a file cannot run code when it is read."""
    ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
               ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
               ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
               ('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode')}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load '{module}.{name}'")
        if module.startswith('numpy.core') and not hasattr(np, 'core'):
            module = module.replace('numpy.core', 'numpy._core')
        return getattr(importlib.import_module(module), name)


def read_imagenet16_file(path: str, image_size: int = 16) -> Tuple[np.ndarray, np.ndarray]:
    """One pickle of the downsampled-ImageNet format: (uint8 images (N, 3, S, S), 1-based int labels (N,))."""
    try:
        with open(path, 'rb') as f:
            entry = _ArrayUnpickler(io.BytesIO(f.read()), encoding='latin1').load()
        data, labels = entry['data'], np.asarray(entry['labels'], dtype=np.int64)
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape == (len(labels), 3 * image_size * image_size)):
            raise ValueError(f"expected 'data' as uint8 rows of {3 * image_size * image_size} values, one per label")
    except OSError as e:
        raise UserError(f"cannot read {path}: {reason(e)}") from None
    except Exception as e:  # a damaged or foreign pickle can raise almost anything; none of it runs code
        raise UserError(f"{path} is not a downsampled-ImageNet pickle: {reason(e)}") from None
    return data.reshape(-1, 3, image_size, image_size), labels


def _imagenet16_dir(root: str) -> str:
    for candidate in (root, os.path.join(root, 'ImageNet16')):
        if os.path.exists(os.path.join(candidate, 'val_data')):
            return candidate
    raise UserError(f"ImageNet16 not found under {root} (no val_data in it or in {os.path.join(root, 'ImageNet16')}); "
                    f"{IMAGENET16_WHERE}")


def at_hand(dataset: str, root: str) -> bool:
    """Whether a search's dataset can be read without downloading it (ImageNet16-120 never downloads)."""
    if dataset != IMAGENET16:
        return data_at_hand(dataset, root)
    try:
        return bool(_imagenet16_dir(root))
    except UserError:
        return False


def load_imagenet16(root: str, train: bool, num_classes: int = 120) -> ImageArray:
    """ImageNet16-120: the images of classes 1..num_classes of the downsampled ImageNet (train_data_batch_1..10,
    or val_data), in file order, labels 0-based (AutoDL's ImageNet16 with use_num_of_class_only)."""
    folder = _imagenet16_dir(root)
    names = [f'train_data_batch_{i}' for i in range(1, 11)] if train else ['val_data']
    missing = [n for n in names if not os.path.exists(os.path.join(folder, n))]
    if missing:
        raise UserError(f"{folder} lacks {', '.join(missing)}; {IMAGENET16_WHERE}")
    images, labels = [], []
    for name in names:
        data, target = read_imagenet16_file(os.path.join(folder, name))
        keep = (target >= 1) & (target <= num_classes)
        images.append(data[keep])
        labels.append(target[keep] - 1)
    images, labels = np.concatenate(images), np.concatenate(labels)
    if len(labels) == 0:
        raise UserError(f"{folder} holds no images of classes 1..{num_classes}")
    return with_statistics(ImageArray(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels),
                                      num_classes, (), ()), IMAGENET16)


WHERE = ("the NAS-Bench-201 file (NAS-Bench-201-v1_0-e61699.pth, 2.1 GB, or NAS-Bench-201-v1_1-096897.pth, "
         "4.7 GB) is linked from https://github.com/D-X-Y/NAS-Bench-201; read it with `pip install nas-bench-201`")
# The benchmark dataset and set name of the true test and validation accuracies of a search dataset.
METRICS = {
    'cifar10': {'test': ('cifar10', 'ori-test'), 'valid': ('cifar10-valid', 'x-valid')},
    'cifar100': {'test': ('cifar100', 'x-test'), 'valid': ('cifar100', 'x-valid')},
    'ImageNet16-120': {'test': ('ImageNet16-120', 'x-test'), 'valid': ('ImageNet16-120', 'x-valid')},
}


class Benchmark:
    """The 200-epoch accuracies of architectures of the benchmark, for one search dataset."""

    def __init__(self, api: Any, dataset: str):
        """`api`: nas_201_api's NASBench201API, or anything with its get_more_info and query_index_by_arch."""
        self.api, self.metrics = api, METRICS[dataset]

    @classmethod
    def open(cls, api_path: str, dataset: str) -> 'Benchmark':
        """Read the benchmark file (minutes and tens of GB of memory for the real ones)."""
        if dataset not in METRICS:
            raise UserError(f"NAS-Bench-201 has no accuracies for --dataset {dataset} (it has "
                            f"{', '.join(METRICS)}); leave out --api_path")
        if not os.path.isfile(api_path):
            raise UserError(f"--api_path {api_path} is not a file; {WHERE}")
        try:
            from nas_201_api import NASBench201API
        except ImportError:
            raise UserError(f"--api_path needs the benchmark's API: pip install nas-bench-201 ({WHERE})") from None
        try:
            api = NASBench201API(api_path, verbose=False)
        except Exception as e:  # a damaged or foreign file: whatever torch.load or the API raises
            if 'weights_only' not in str(e):
                raise UserError(f"cannot read the NAS-Bench-201 file {api_path}: {reason(e)}") from None
            # The API calls torch.load(path) as torch before 2.6 did, unpickling everything; since 2.6 torch.load
            # admits only tensors and plain containers. The file is the one the user named, so it is read the way
            # its API was written to read it, and handed over as a dict.
            import torch
            try:
                api = NASBench201API(torch.load(api_path, map_location='cpu', weights_only=False), verbose=False)
            except Exception as e:
                raise UserError(f"cannot read the NAS-Bench-201 file {api_path}: {reason(e)}") from None
        return cls(api, dataset)

    def _results(self, index: int):
        try:
            return self.api.query_meta_info_by_index(index, hp='200')
        except TypeError:  # nas-bench-201 1.x: no hp argument, and the 200-epoch results by default
            return self.api.query_meta_info_by_index(index)

    def per_seed(self, arch: str) -> Optional[Dict]:
        """{'index', 'accuracies': the 200-epoch test accuracy of each of the benchmark's seeds, 'metric'} of an
        architecture string, or None when the benchmark does not hold it: the seeds' spread is the noise ceiling
        of any ranking measured against the benchmark."""
        index = self.api.query_index_by_arch(arch)
        if index < 0:
            return None
        dataset, setname = self.metrics['test']
        results = self._results(index)
        seeds = results.get_dataset_seeds(dataset)
        return {'index': int(index), 'metric': f"{setname} accuracy of {dataset} after 200 epochs",
                'accuracies': [float(results.get_metrics(dataset, setname, is_random=seed)['accuracy'])
                               for seed in seeds]}

    def every_test_accuracy(self) -> List[float]:
        """The 200-epoch test accuracy (mean over the benchmark's seeds) of every architecture it holds, in its
        index order: what a pick's percentile among all of them is read from."""
        dataset, setname = self.metrics['test']
        return [float(self._query(index).get_metrics(dataset, setname)['accuracy']) for index in range(len(self.api))]

    def _query(self, index: int):
        try:
            return self.api.query_by_index(index, hp='200')
        except TypeError:  # nas-bench-201 1.x: no hp argument, and the 200-epoch results by default
            return self.api.query_by_index(index)

    def lookup(self, arch: str) -> Optional[Dict[str, float]]:
        """{'index', 'test', 'valid'} of an architecture string (200 epochs, mean over the benchmark's seeds),
        or None when the benchmark does not hold it."""
        index = self.api.query_index_by_arch(arch)
        if index < 0:
            return None
        results = self._query(index)
        found = {'index': int(index)}
        for key, (dataset, setname) in self.metrics.items():
            found[key] = float(results.get_metrics(dataset, setname)['accuracy'])
        return found
