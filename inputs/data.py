"""Datasets: CIFAR-10/100 (downloaded by torchvision, with a clear message offline), the generated set, and
your own images as a folder, each held whole as one uint8 tensor (`ImageArray`) with its normalisation; and
the search's split of one into the images that train the supernet and those that measure fitness.

The loaders (inputs/loaders.py) draw batches from an ImageArray, augmented as inputs/augmentation.py says;
`TensorLoader` shuffles, crops, flips, normalises and cuts out whole batches at once with the same
distributions as the per-image torchvision pipeline of DARTS/EvNAS, which `PerImageLoader` keeps available
(`--loader torchvision`). ImageNet goes through torchvision's ImageFolder.
"""
import json
import os
import socket
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from runtime.checkpoint import atomic_write_text
from runtime.settings import Augment
from utils import UserError, reason

CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CIFAR_DATASETS = ('cifar10', 'cifar100')
SYNTHETIC = 'synthetic'
FOLDER = 'folder'
DATASETS = CIFAR_DATASETS + (SYNTHETIC, FOLDER)
Stats = Tuple[Sequence[float], Sequence[float]]  # a dataset's per-channel mean and std


@dataclass
class ImageArray:
    """A whole image dataset in memory: uint8 images (N, 3, H, W), int64 labels (N,), and its statistics."""
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    classes: Optional[Tuple[str, ...]] = None  # class names, in label order, where the dataset has them

    def __len__(self) -> int:
        return self.labels.numel()

    def to(self, device: Union[str, torch.device]) -> 'ImageArray':
        return ImageArray(self.images.to(device), self.labels.to(device), self.num_classes, self.mean, self.std,
                          self.classes)


# ----------------------------------------------------------------------------------------------------------
# Loading

def _download_help(name: str, root: str) -> str:
    folder, url = {
        'cifar10': ('cifar-10-batches-py', 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'),
        'cifar100': ('cifar-100-python', 'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz'),
    }[name]
    return (f"expected {os.path.join(root, folder)}/ as unpacked from {url} "
            f"(download it elsewhere and unpack it into {root}, or pass --data DIR)")


def _download_failure(e: Exception) -> str:
    """Why a download failed, in words: urllib wraps the socket's error ("<urlopen error [Errno 101] Network
    is unreachable>"), whose number means nothing to a user."""
    import urllib.error
    if isinstance(e, socket.timeout):
        return 'no answer within 30 s: is this machine offline?'
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        cause = e.reason  # the socket's error underneath
        text = cause.strerror or str(cause) if isinstance(cause, OSError) else str(cause)
        return f"{text[:1].lower() + text[1:]}: is this machine offline?"
    text = reason(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _load_torchvision_cifar(name: str, root: str, train: bool, download: bool):
    import torchvision.datasets as dset  # imported here: torchvision adds seconds to every script's start
    cls = dset.CIFAR10 if name == 'cifar10' else dset.CIFAR100
    try:
        return cls(root, train=train, download=False)
    except RuntimeError:
        pass  # not there (or corrupted): try to fetch it
    if not download:
        raise UserError(f"{name} not found under {root}: {_download_help(name, root)}")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise UserError(f"{name} not found under {root}, and {root} cannot be created to download it into: "
                        f"{reason(e)}") from None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an offline machine must fail fast, not hang on a dead connection
    try:
        return cls(root, train=train, download=True)
    except Exception as e:
        raise UserError(f"{name} not found under {root} and the download failed ({_download_failure(e)}): "
                        f"{_download_help(name, root)}") from None
    finally:
        socket.setdefaulttimeout(previous)


def load_cifar(name: str, root: str, train: bool, download: bool = True) -> ImageArray:
    data = _load_torchvision_cifar(name, root, train, download)
    images = torch.from_numpy(np.ascontiguousarray(data.data.transpose(0, 3, 1, 2)))
    labels = torch.tensor(data.targets, dtype=torch.int64)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == 'cifar10' else (CIFAR100_MEAN, CIFAR100_STD)
    return ImageArray(images, labels, 100 if name == 'cifar100' else 10, mean, std, tuple(data.classes))


def make_synthetic(train: bool, size: int, num_classes: int = 10, image_size: int = 32, seed: int = 0) -> ImageArray:
    """A generated CIFAR-shaped dataset with learnable classes, the same for the same arguments.

    Each class is a smooth random colour pattern (a 4x4 grid upsampled to the image size); an image is its
    class pattern, shifted by up to 3 pixels, with a random brightness offset and pixel noise. The train and
    test splits share the class patterns and differ in their samples.
    """
    patterns_rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(patterns_rng.uniform(0, 1, (num_classes, 3, 4, 4)).astype(np.float32))
    patterns = F.interpolate(coarse, size=(image_size, image_size), mode='bilinear', align_corners=False)

    rng = np.random.default_rng([seed, 1 if train else 2])
    labels = torch.from_numpy(rng.integers(0, num_classes, size))
    shifts = rng.integers(-3, 4, (size, 2))
    brightness = torch.from_numpy(rng.normal(0, 0.1, (size, 1, 1, 1)).astype(np.float32))
    noise = torch.from_numpy(rng.normal(0, 0.15, (size, 3, image_size, image_size)).astype(np.float32))
    images = patterns[labels]
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            chosen = torch.from_numpy((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
            images[chosen] = torch.roll(images[chosen], shifts=(dy, dx), dims=(2, 3))
    images = ((images + brightness + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    # Normalised with CIFAR-10's statistics, so the generated set takes exactly the CIFAR code path.
    return ImageArray(images, labels, num_classes, CIFAR10_MEAN, CIFAR10_STD)


def _folder_split(root: str, train: bool) -> str:
    if train:
        return os.path.join(root, 'train')
    for name in ('val', 'test'):
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise UserError(f"{root} has no val/ or test/ folder to evaluate on (expected {root}/val/<class>/<image>)")


def load_folder(root: str, train: bool, image_size: int = 32, stats: Optional[Stats] = None) -> ImageArray:
    """An image-folder dataset (ROOT/train/<class>/*, ROOT/val or ROOT/test for evaluation), every image
    resized to image_size x image_size and held in memory as uint8.

    The per-channel mean and std come from the training images (pass `stats` = (mean, std) to reuse them).
    The images are put in a fixed random order, so a --train_portion split is not a split by class.
    """
    import torchvision.datasets as dset
    train_dir = _folder_split(root, True)
    if not os.path.isdir(train_dir):
        raise UserError(f"{train_dir} does not exist: expected your images as {root}/train/<class>/<image> "
                        f"(and {root}/val/<class>/<image> to evaluate)")
    try:
        classes = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
        folder = dset.ImageFolder(_folder_split(root, train), loader=read_rgb)
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"{_folder_split(root, train)}: {reason(e)}") from None
    if len(classes) < 2:
        raise UserError(f"{train_dir} holds {len(classes)} class folder(s); a classifier needs at least two")
    if folder.classes != classes:
        unknown = sorted(set(folder.classes) - set(classes))
        if unknown:
            raise UserError(f"{_folder_split(root, train)} has classes that train/ lacks: {', '.join(unknown[:5])}")
    index_of = {name: i for i, name in enumerate(classes)}
    images = torch.empty(len(folder.samples), 3, image_size, image_size, dtype=torch.uint8)
    labels = torch.empty(len(folder.samples), dtype=torch.int64)
    for i, (path, target) in enumerate(folder.samples):
        image = read_rgb(path).resize((image_size, image_size), Image.BILINEAR)
        images[i] = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        labels[i] = index_of[folder.classes[target]]
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    if stats is None:
        if train:
            pixels = images.float().div(255)
            stats = (tuple(pixels.mean(dim=(0, 2, 3)).tolist()), tuple(pixels.std(dim=(0, 2, 3)).tolist()))
        else:
            train_array = load_folder(root, True, image_size)
            stats = (train_array.mean, train_array.std)
    return ImageArray(images, labels, len(classes), tuple(stats[0]), tuple(stats[1]), tuple(classes))


def load_dataset(name: str, root: str, train: bool, synthetic_size: int = 2000, download: bool = True,
                 image_size: int = 32, stats: Optional[Stats] = None) -> ImageArray:
    """CIFAR-10, CIFAR-100, the generated set or an image folder, as an ImageArray on the CPU."""
    if name in CIFAR_DATASETS:
        if image_size != 32:
            raise UserError(f"{name} images are 32x32; --image_size {image_size} applies to folder and synthetic data")
        return load_cifar(name, root, train, download)
    if name == SYNTHETIC:
        return make_synthetic(train, synthetic_size if train else max(synthetic_size // 5, 1), image_size=image_size)
    if name == FOLDER:
        return load_folder(root, train, image_size, stats)
    raise UserError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})")


def at_hand(name: str, root: str) -> bool:
    """Whether a dataset can be read without downloading it (the generated set always can)."""
    if name not in CIFAR_DATASETS:
        return True
    import torchvision.datasets as dset  # as _load_torchvision_cifar: only where CIFAR is asked for
    # The folder torchvision extracts into, not its contents: the load that follows checks those (and names
    # a damaged file), and reading the images only to look would read them twice.
    return os.path.isdir(os.path.join(root, (dset.CIFAR10 if name == 'cifar10' else dset.CIFAR100).base_folder))


def random_images(size: int, num_classes: int, image_size: int, seed: int = 0) -> ImageArray:
    """`size` uniformly random images and labels of a dataset's shape: what --plan measures with before the
    dataset is at hand (memory and time do not depend on what the pixels show)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (size, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, num_classes, (size,), generator=generator)
    return ImageArray(images, labels, num_classes, (0.5,) * 3, (0.25,) * 3)


# ----------------------------------------------------------------------------------------------------------
# Batch-wise augmentation, the fast path


@dataclass
class SearchData:
    """The images that train the supernet and those that measure fitness (indices into each array), and the
    augmentation of the fitness images (None: the test transform)."""
    train: ImageArray
    train_indices: torch.Tensor
    valid: ImageArray
    valid_indices: torch.Tensor
    valid_augment: Optional[Augment] = None


# ----------------------------------------------------------------------------------------------------------
# The per-image torchvision pipeline, as DARTS and EvNAS run it


# ----------------------------------------------------------------------------------------------------------
# ImageNet

def read_rgb(path: str) -> Image.Image:
    try:
        with open(path, 'rb') as f:
            return Image.open(f).convert('RGB')
    except Exception as e:
        raise UserError(f"cannot read image {path}: {reason(e)}") from None


def save_dataset_info(run_dir: str, data: ImageArray, dataset: str, root: str) -> None:
    """RUN_DIR/dataset.json: what the networks of a run were built for (`data`: the training images of
    --dataset from --data `root`), and the normalisation its images used (for a folder dataset, computed from
    its training images)."""
    info = {'dataset': dataset, 'data': root, 'num_classes': data.num_classes,
            'image_size': int(data.images.shape[-1]), 'num_train': len(data), 'mean': list(data.mean),
            'std': list(data.std)}
    if getattr(data, 'classes', None) is not None:
        info['classes'] = list(data.classes)
    atomic_write_text(os.path.join(run_dir, 'dataset.json'), json.dumps(info, indent=1) + '\n')


def run_normalisation(run_dir: str, dataset: str) -> Optional[tuple]:
    """(mean, std) that a run's images were normalised with (its dataset.json), for a folder dataset, whose
    statistics were computed from its own training images; None where they are fixed (CIFAR, generated)."""
    if dataset != 'folder':
        return None
    path = os.path.join(run_dir, 'dataset.json')
    try:
        with open(path) as f:
            info = json.load(f)
        return tuple(info['mean']), tuple(info['std'])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # computed again from the training images, as for a run without the file
