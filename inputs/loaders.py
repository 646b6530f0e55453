"""The loaders that feed the networks batches: the tensor loader (images held as one uint8 tensor, on the
device with --loader tensor, augmented batch-wise), the original's per-image pipeline in worker processes
(--loader torchvision), and ImageNet's folder loader; make_loader picks one."""
import os
from typing import Callable, Iterable, Iterator, Optional, Protocol, Tuple

import torch
from PIL import Image

from inputs.augmentation import BatchAugmenter, cifar_transforms, draw_augment, normalize, pad_images
from inputs.data import ImageArray, read_rgb
from runtime.settings import Augment
from utils import UserError, reason

Batch = Tuple[torch.Tensor, torch.Tensor]  # images and labels, on the loader's device


class Loader(Protocol):
    """What the loops (engine.py, training.py) and their callers need of a loader: a pass of batches, the
    number of batches and of images in a pass, and the batch size."""
    @property
    def batch_size(self) -> int: ...
    @property
    def num_samples(self) -> int: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Batch]: ...


class SeededLoader(Loader, Protocol):
    """A loader whose order and augmentation are drawn from one generator (make_loader's): fitness reseeds it
    for every individual (engine.evaluate_population)."""
    @property
    def generator(self) -> torch.Generator: ...


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

    def __iter__(self) -> Iterator[Batch]:
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


class _PerImageDataset(torch.utils.data.Dataset):
    def __init__(self, array: ImageArray, transform: Callable):
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
                 generator: Optional[torch.Generator] = None, num_workers: int = 2,
                 device: Optional[torch.device] = None,
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

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            yield x, y.to(self.device, non_blocking=True)


def make_loader(kind: str, array: ImageArray, batch_size: int, device: torch.device,
                indices: Optional[torch.Tensor] = None, shuffle: bool = False, augment: Optional[Augment] = None,
                generator: Optional[torch.Generator] = None, num_workers: int = 2, rank: int = 0,
                world_size: int = 1, memory_format: torch.memory_format = torch.contiguous_format
                ) -> SeededLoader:
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


def image_folder(root: str, split: str, transform: Callable, what: str = 'ImageNet'
                 ) -> torch.utils.data.Dataset:
    """An ImageFolder at root/split with a clear message when it is not there or not a class tree."""
    import torchvision.datasets as dset
    folder = os.path.join(root, split)
    layout = f"expected {what} as one folder per class under {folder}/ (e.g. {folder}/<class>/<image>.jpg)"
    if not os.path.isdir(folder):
        raise UserError(f"{folder} does not exist: {layout}")
    try:
        return dset.ImageFolder(folder, transform, loader=read_rgb)
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"{folder}: {reason(e)}; {layout}") from None


class FolderLoader:
    """A DataLoader over an image folder that moves batches to the device and reports an unreadable image
    as one UserError line (a worker's error arrives wrapped in its traceback)."""

    def __init__(self, dataset: torch.utils.data.Dataset, batch_size: int, device: torch.device,
                 shuffle: bool = False, num_workers: int = 4, sampler: Optional[Iterable[int]] = None,
                 generator: Optional[torch.Generator] = None):
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
            num_workers=num_workers, generator=generator, pin_memory=torch.device(device).type == 'cuda',
            persistent_workers=num_workers > 0)
        self.device = device
        self.batch_size = batch_size
        self.num_samples = len(dataset)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        try:
            for x, y in self.loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        except UserError as e:
            lines = [line for line in str(e).strip().splitlines() if 'UserError: ' in line]
            raise UserError(lines[-1].split('UserError: ', 1)[1] if lines else str(e)) from None
