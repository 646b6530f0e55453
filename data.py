"""Datasets and input pipelines.

Small-image datasets (CIFAR-10/100, the generated set) are held whole as one uint8 tensor, on the device
when there is room; `TensorLoader` shuffles, crops, flips, normalises and cuts out whole batches at once
with the same distributions as the per-image torchvision pipeline of DARTS/EvNAS, which `PerImageLoader`
keeps available (`--loader torchvision`). ImageNet goes through torchvision's ImageFolder.
"""
import os
import socket
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

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

    def to(self, device) -> 'ImageArray':
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


def load_folder(root: str, train: bool, image_size: int = 32, stats=None) -> ImageArray:
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
        folder = dset.ImageFolder(_folder_split(root, train), loader=_read_rgb)
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
        image = _read_rgb(path).resize((image_size, image_size), Image.BILINEAR)
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
                 image_size: int = 32, stats=None) -> ImageArray:
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


# ----------------------------------------------------------------------------------------------------------
# Batch-wise augmentation, the fast path

@dataclass
class Augment:
    """Random crop with zero padding, horizontal flip, and (when cutout_length > 0) cutout."""
    padding: int = 4
    flip: bool = True
    cutout_length: int = 0


@dataclass
class SearchData:
    """The images that train the supernet and those that measure fitness (indices into each array), and the
    augmentation of the fitness images (None: the test transform)."""
    train: ImageArray
    train_indices: torch.Tensor
    valid: ImageArray
    valid_indices: torch.Tensor
    valid_augment: Optional[Augment] = None


def training_augment(cutout: bool, cutout_length: int, crop_padding: int = 4, flip: bool = True) -> Augment:
    """The Augment of --cutout, --cutout_length, --crop_padding and not --no_flip: DARTS's cutout with --cutout
    (runs recorded before the last two flags existed used their defaults, which --resume fills in)."""
    return Augment(padding=crop_padding, flip=flip, cutout_length=cutout_length if cutout else 0)


def normalize(images: torch.Tensor, mean, std, memory_format: torch.memory_format = torch.contiguous_format
              ) -> torch.Tensor:
    """uint8 (B, C, H, W) -> (x / 255 - mean) / std in float32 and `memory_format`: ToTensor + Normalize up to
    float rounding, in two passes (the multiply also converts type and layout). mean and std: sequences, or
    float32 tensors already on the images' device (a loader's, made once: a list copied to a GPU for every batch
    would make the host wait each time)."""
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device, memory_format=memory_format)
    torch.mul(images, 1. / (255. * std_t), out=out)
    return out.sub_(mean_t / std_t)


def draw_augment(n: int, height: int, width: int, augment: Augment,
                 generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """The random choices for n images (crop offsets, flips, cutout centres), drawn on the CPU so that a seed
    gives the same augmentation on every device and with any number of processes."""
    span = 2 * augment.padding + 1
    params = {'dy': torch.randint(0, span, (n,), generator=generator),
              'dx': torch.randint(0, span, (n,), generator=generator),
              'flip': (torch.rand(n, generator=generator) < 0.5) if augment.flip else torch.zeros(n, dtype=torch.bool)}
    if augment.cutout_length > 0:
        params['cy'] = torch.randint(0, height, (n,), generator=generator)
        params['cx'] = torch.randint(0, width, (n,), generator=generator)
    return params


def pad_images(images: torch.Tensor, padding: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> zero-padded (N, C, (H + 2p) * (W + 2p)): padded once, so that the crops of a
    batch are one gather."""
    return F.pad(images, (padding,) * 4).flatten(2)


class BatchAugmenter:
    """Augments batches of padded uint8 images (from `pad_images`) the way RandomCrop(padding) +
    RandomHorizontalFlip + ToTensor + Normalize + Cutout do it image by image, with given random choices.

    Everything that does not change between batches (index ramps, the normalisation constants as whole
    (C, H, W) patterns, the cutout box of every possible centre) is built once here, so a batch costs a
    handful of passes: one gather, one multiply-add, one multiply, one layout conversion. The passes run in
    NCHW over whole-image patterns because broadcasting over small inner dimensions is several times slower
    on CPUs (measured with bench.py's augment)."""

    def __init__(self, channels: int, height: int, width: int, mean, std, augment: Augment, device,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.C, self.H, self.W = channels, height, width
        self.augment, self.memory_format = augment, memory_format
        f32 = dict(dtype=torch.float32, device=device)
        std_t, mean_t = torch.tensor(std, **f32).view(-1, 1, 1), torch.tensor(mean, **f32).view(-1, 1, 1)
        # ToTensor + Normalize, (x / 255 - mean) / std, as one multiply-add: x * (1 / (255 std)) + (-mean / std)
        self.scale = (1. / (255. * std_t)).expand(channels, height, width).contiguous()
        self.shift = (-mean_t / std_t).expand(channels, height, width).contiguous()
        self.row_offsets = torch.arange(height, device=device) * (width + 2 * augment.padding)
        self.cols = torch.arange(width, device=device)
        self.cols_flipped = torch.arange(width - 1, -1, -1, device=device)
        # in_box[c, i] = 1 when row (or column) i is in the cutout box of a centre at c: c - length // 2 <= i <
        # c + length // 2 (DeVries & Taylor; the clip at the border is implied by 0 <= i < size).
        half = augment.cutout_length // 2
        size = max(height, width)
        offset = torch.arange(size, device=device)[None, :] - torch.arange(size, device=device)[:, None]
        self.in_box = ((offset >= -half) & (offset < half)).float()

    def __call__(self, padded: torch.Tensor, params: Dict[str, torch.Tensor]) -> torch.Tensor:
        """padded: (B, C, (H + 2p) * (W + 2p)) uint8 -> float32 (B, C, H, W) in `memory_format`."""
        B, C, H, W = padded.shape[0], self.C, self.H, self.W
        params = {k: v.to(padded.device, non_blocking=True) for k, v in params.items()}
        # Crop and flip as one gather: output pixel (i, j) of image b reads padded pixel (dy_b + i, dx_b + j),
        # or (dy_b + i, dx_b + W - 1 - j) when b is flipped.
        rows = params['dy'][:, None] * (W + 2 * self.augment.padding) + self.row_offsets
        cols = params['dx'][:, None] + torch.where(params['flip'][:, None], self.cols_flipped, self.cols)
        index = (rows[:, :, None] + cols[:, None, :]).view(B, 1, H * W)
        crops = padded.gather(2, index.expand(B, C, H * W)).view(B, C, H, W)
        out = torch.addcmul(self.shift, crops.float(), self.scale)
        if self.augment.cutout_length > 0:
            # Cutout after normalisation, so the box is 0 in normalised units (as EvNAS's Cutout does it).
            box = self.in_box[params['cy'], :H][:, None, :, None] * self.in_box[params['cx'], :W][:, None, None, :]
            out.mul_(1. - box)
        return out.contiguous(memory_format=self.memory_format)


def apply_augment(padded: torch.Tensor, height: int, width: int, params: Dict[str, torch.Tensor], mean, std,
                  augment: Augment, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """One batch through a BatchAugmenter (a loader keeps its augmenter between batches)."""
    augmenter = BatchAugmenter(padded.shape[1], height, width, mean, std, augment, padded.device, memory_format)
    return augmenter(padded, params)


def augment_batch(images: torch.Tensor, mean, std, augment: Augment, generator: torch.Generator,
                  memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Draw and apply the augmentation of one uint8 batch."""
    params = draw_augment(images.shape[0], images.shape[2], images.shape[3], augment, generator)
    return apply_augment(pad_images(images, augment.padding), images.shape[2], images.shape[3], params, mean, std,
                         augment, memory_format)


class TensorLoader:
    """Batches of an ImageArray (best held on the compute device), shuffled and augmented batch-wise.

    Every pass draws a new order from `generator`, like a DataLoader with a RandomSampler; the last batch
    may be short unless drop_last. In a distributed run `batch_size` is the global batch: every rank draws
    the same order and augmentation and keeps its own slice of each batch, so the union over ranks is
    exactly the batch one process would see.
    """

    def __init__(self, array: ImageArray, batch_size: int, indices: Optional[torch.Tensor] = None,
                 shuffle: bool = False, augment: Optional[Augment] = None,
                 generator: Optional[torch.Generator] = None, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, memory_format: torch.memory_format = torch.contiguous_format):
        self.array = array
        self.memory_format = memory_format
        self.batch_size = batch_size
        self.indices = torch.arange(len(array)) if indices is None else indices.cpu()
        self.shuffle = shuffle
        self.augment = augment
        self.generator = generator
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        if (shuffle or augment is not None) and generator is None:
            raise ValueError("shuffling or augmenting needs a generator")
        if batch_size < world_size:
            raise ValueError(f"a batch of {batch_size} cannot be split over {world_size} processes")
        self._padded_images = self._augmenter = self._stats = None

    def __len__(self) -> int:
        full, rest = divmod(len(self.indices), self.batch_size)
        # A short last batch is kept if every rank gets at least one image of it.
        return full + int(rest >= self.world_size and not self.drop_last)

    @property
    def num_samples(self) -> int:
        return min(len(self) * self.batch_size, len(self.indices))

    def _statistics(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The normalisation's mean and std as tensors on the images' device, made on first use and kept."""
        if self._stats is None:
            device = self.array.images.device
            self._stats = (torch.tensor(self.array.mean, dtype=torch.float32, device=device),
                           torch.tensor(self.array.std, dtype=torch.float32, device=device))
        return self._stats

    def _augmentation(self) -> Tuple[torch.Tensor, BatchAugmenter]:
        """This loader's images zero-padded on their device, and its augmenter (built on first use, kept)."""
        if self._padded_images is None:
            images = self.array.images
            self._padded_images = pad_images(images[self.indices.to(images.device)], self.augment.padding)
            self._augmenter = BatchAugmenter(images.shape[1], images.shape[2], images.shape[3], self.array.mean,
                                             self.array.std, self.augment, images.device, self.memory_format)
        return self._padded_images, self._augmenter

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        # Positions into self.indices; the generator draws exactly as a DataLoader with a RandomSampler would.
        order = torch.randperm(len(self.indices), generator=self.generator) if self.shuffle \
            else torch.arange(len(self.indices))
        height, width = self.array.images.shape[2:]
        device = self.array.images.device
        for b in range(len(self)):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            params = None if self.augment is None else draw_augment(len(batch), height, width, self.augment,
                                                                     self.generator)
            if self.world_size > 1:
                mine = torch.tensor_split(torch.arange(len(batch)), self.world_size)[self.rank]
                batch = batch[mine]
                params = params and {k: v[mine] for k, v in params.items()}
            idx = self.indices[batch].to(device, non_blocking=True)
            if params is None:
                x = normalize(self.array.images[idx], *self._statistics(), self.memory_format)
            else:
                padded, augmenter = self._augmentation()
                x = augmenter(padded.index_select(0, batch.to(device, non_blocking=True)), params)
            yield x, self.array.labels[idx]


# ----------------------------------------------------------------------------------------------------------
# The per-image torchvision pipeline, as DARTS and EvNAS run it

class Cutout:
    """EvNAS's per-image Cutout on a normalised tensor (its np.random draws are torch draws here)."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.size(1), img.size(2)
        y = int(torch.randint(h, ()))
        x = int(torch.randint(w, ()))
        y1, y2 = max(y - self.length // 2, 0), min(y + self.length // 2, h)
        x1, x2 = max(x - self.length // 2, 0), min(x + self.length // 2, w)
        mask = torch.ones(h, w)
        mask[y1:y2, x1:x2] = 0.
        return img * mask.expand_as(img)


def cifar_transforms(mean, std, augment: Optional[Augment], image_size: int = 32):
    import torchvision.transforms as transforms
    steps = []
    if augment is not None:
        steps.append(transforms.RandomCrop(image_size, padding=augment.padding))
        if augment.flip:
            steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if augment is not None and augment.cutout_length > 0:
        steps.append(Cutout(augment.cutout_length))
    return transforms.Compose(steps)


class _PerImageDataset(torch.utils.data.Dataset):
    def __init__(self, array: ImageArray, transform):
        self.images = array.images.permute(0, 2, 3, 1).numpy()
        self.labels = array.labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


class PerImageLoader:
    """The original pipeline: PIL images through torchvision transforms in DataLoader worker processes."""

    def __init__(self, array: ImageArray, batch_size: int, indices: Optional[torch.Tensor] = None,
                 shuffle: bool = False, augment: Optional[Augment] = None,
                 generator: Optional[torch.Generator] = None, num_workers: int = 2, device=None,
                 memory_format: torch.memory_format = torch.contiguous_format):
        dataset = _PerImageDataset(array.to('cpu'), cifar_transforms(array.mean, array.std, augment,
                                                                     array.images.shape[-1]))
        indices = list(range(len(array))) if indices is None else indices.tolist()
        sampler = (torch.utils.data.SubsetRandomSampler(indices, generator=generator) if shuffle
                   else indices)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, generator=generator,
            pin_memory=device is not None and torch.device(device).type == 'cuda',
            # Fresh workers every pass, seeded from `generator` (as the original's): a run resumed from a
            # checkpoint then draws exactly the augmentations an uninterrupted run would have drawn.
            persistent_workers=False)
        self.device = device
        self.memory_format = memory_format
        self.generator = generator
        self.batch_size = batch_size
        self.num_samples = len(indices)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            yield x, y.to(self.device, non_blocking=True)


def make_loader(kind: str, array: ImageArray, batch_size: int, device, indices=None, shuffle=False,
                augment=None, generator=None, num_workers: int = 2, rank: int = 0, world_size: int = 1,
                memory_format: torch.memory_format = torch.contiguous_format):
    """`tensor`: the batch-wise pipeline on `device`; `torchvision`: the original per-image pipeline (one
    process only). `array` may already be on `device`; it is moved there once otherwise."""
    if kind == 'tensor':
        return TensorLoader(array.to(device), batch_size, indices, shuffle, augment, generator,
                            rank=rank, world_size=world_size, memory_format=memory_format)
    if kind == 'torchvision':
        if world_size > 1:
            raise UserError("--loader torchvision runs in a single process; use the default --loader tensor "
                            "with torchrun")
        return PerImageLoader(array, batch_size, indices, shuffle, augment, generator, num_workers, device,
                              memory_format)
    raise ValueError(f"unknown loader '{kind}'")


# ----------------------------------------------------------------------------------------------------------
# ImageNet

def _read_rgb(path: str) -> Image.Image:
    try:
        with open(path, 'rb') as f:
            return Image.open(f).convert('RGB')
    except Exception as e:
        raise UserError(f"cannot read image {path}: {reason(e)}") from None


def image_folder(root: str, split: str, transform, what: str = 'ImageNet'):
    """An ImageFolder at root/split with a clear message when it is not there or not a class tree."""
    import torchvision.datasets as dset
    folder = os.path.join(root, split)
    layout = f"expected {what} as one folder per class under {folder}/ (e.g. {folder}/<class>/<image>.jpg)"
    if not os.path.isdir(folder):
        raise UserError(f"{folder} does not exist: {layout}")
    try:
        return dset.ImageFolder(folder, transform, loader=_read_rgb)
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"{folder}: {reason(e)}; {layout}") from None


class FolderLoader:
    """A DataLoader over an image folder that moves batches to the device and reports an unreadable image
    as one UserError line (a worker's error arrives wrapped in its traceback)."""

    def __init__(self, dataset, batch_size: int, device, shuffle: bool = False, num_workers: int = 4,
                 sampler=None, generator: Optional[torch.Generator] = None):
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
            num_workers=num_workers, generator=generator, pin_memory=torch.device(device).type == 'cuda',
            persistent_workers=num_workers > 0)
        self.device = device
        self.num_samples = len(dataset)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        try:
            for x, y in self.loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        except UserError as e:
            lines = [line for line in str(e).strip().splitlines() if 'UserError: ' in line]
            raise UserError(lines[-1].split('UserError: ', 1)[1] if lines else str(e)) from None


def imagenet_transforms(train: bool, image_size: int = 224):
    import torchvision.transforms as transforms
    normalize_t = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        return transforms.Compose([
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2),
            transforms.ToTensor(),
            normalize_t,
        ])
    resize = round(image_size * 256 / 224)
    return transforms.Compose([
        transforms.Resize(resize),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        normalize_t,
    ])
