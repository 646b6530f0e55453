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
from typing import Dict, List, Tuple

import numpy as np
import torch

from data import FOLDER, SYNTHETIC, ImageArray, SearchData, load_dataset
from utils import UserError, reason

SPLITS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'splits')
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
