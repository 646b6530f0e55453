"""How training images are augmented and normalised: the batch-wise path on the device (random crops, flips
and cutout from draws made on the CPU, so that a seed gives the same augmentation everywhere) and the
original's per-image torchvision transforms."""
from typing import Callable, Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from inputs.data import IMAGENET_MEAN, IMAGENET_STD
from runtime.settings import Augment

# A dataset's per-channel mean or std: a sequence, or a float32 tensor already on the images' device.
ChannelStats = Union[Sequence[float], torch.Tensor]


def training_augment(cutout: bool, cutout_length: int, crop_padding: int = 4, flip: bool = True) -> Augment:
    """The Augment of --cutout, --cutout_length, --crop_padding and not --no_flip: DARTS's cutout with --cutout
    (runs recorded before the last two flags existed used their defaults, which --resume fills in)."""
    return Augment(padding=crop_padding, flip=flip, cutout_length=cutout_length if cutout else 0)


def normalize(images: torch.Tensor, mean: ChannelStats, std: ChannelStats,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
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

    def __init__(self, channels: int, height: int, width: int, mean: ChannelStats, std: ChannelStats,
                 augment: Augment, device: torch.device,
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


def apply_augment(padded: torch.Tensor, height: int, width: int, params: Dict[str, torch.Tensor],
                  mean: ChannelStats, std: ChannelStats, augment: Augment,
                  memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """One batch through a BatchAugmenter (a loader keeps its augmenter between batches)."""
    augmenter = BatchAugmenter(padded.shape[1], height, width, mean, std, augment, padded.device, memory_format)
    return augmenter(padded, params)


def augment_batch(images: torch.Tensor, mean: ChannelStats, std: ChannelStats, augment: Augment,
                  generator: torch.Generator,
                  memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Draw and apply the augmentation of one uint8 batch."""
    params = draw_augment(images.shape[0], images.shape[2], images.shape[3], augment, generator)
    return apply_augment(pad_images(images, augment.padding), images.shape[2], images.shape[3], params, mean, std,
                         augment, memory_format)


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


def cifar_transforms(mean: Sequence[float], std: Sequence[float], augment: Optional[Augment],
                     image_size: int = 32) -> Callable:
    """The original's per-image transforms of a PIL image (augment None: test images)."""
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


def imagenet_transforms(train: bool, image_size: int = 224) -> Callable:
    """P-DARTS's ImageNet transforms of a PIL image: random resized crops and colour jitter, or resize and
    centre crop."""
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
