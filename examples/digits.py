"""Write scikit-learn's digits (1,797 scanned 8x8 handwritten digits, shipped with the package) as an image
folder that every script reads with --dataset folder: DIR/train/<digit>/*.png and DIR/test/<digit>/*.png.

Real images at a size a CPU affords, for measurements that must mean something (docs/trust.md). Needs
scikit-learn (pip install scikit-learn); nothing else in the project does.

    python examples/digits.py data/digits   # 1,438 training and 359 test images (a fifth of each digit), seed 0
    python train_search.py --dataset folder --data data/digits --image_size 8 --no_flip --crop_padding 1 ...

At 8x8 and 1,438 training images the digits are too easy to rank architectures by (stand-alone accuracies of
96-99.7 %, where one test image is 0.28 points). `--hard` builds the harder task docs/trust.md measures on:
every scan distorted once, with a fixed seed (a random rotation, scale and shift, then pixel noise), so that
the images stay the same for every script and run; `--test_size` moves images from training to test, which
makes the task harder still and each test accuracy less noisy.

    python examples/digits.py data/digits-hard --hard --test_size 1000   # 797 training, 1,000 test images
"""
import argparse
import math
import os
import sys

import numpy as np
from PIL import Image

# --hard: the range of each distortion (uniform), drawn once per image. Strong enough that the small networks of
# docs/trust.md's measurement reach 65-75 % (797 training images, 15 epochs), far from the ceiling, not so strong
# that a 6 looks like a 9 (rotations under 30 degrees).
ROTATION_DEG, SCALE, SHIFT_PX, NOISE_STD = 25., (0.8, 1.15), 1.0, 0.15
RENDER = 32  # distortions are applied at this resolution, then the image is brought back to its size


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out', help='the folder to write (DIR/train, DIR/test)')
    parser.add_argument('--test_size', type=int, default=360,
                        help='about this many test images, the same share of every digit (default: 360, gives 359)')
    parser.add_argument('--hard', action='store_true',
                        help='distort every scan once (rotation, scale, shift, pixel noise; fixed by --seed)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the split and the distortions (default: 0)')
    args = parser.parse_args(argv)
    if not 0 < args.test_size < 1797:
        parser.error(f"--test_size must be between 1 and 1796 (got {args.test_size})")
    return args


def distort(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One scan (8x8, 0..255) rotated, scaled and shifted at RENDER x RENDER, brought back to 8x8, with Gaussian
    pixel noise; the same 0..255 range."""
    size = pixels.shape[0]
    big = Image.fromarray(pixels).resize((RENDER, RENDER), Image.BILINEAR)
    angle = math.radians(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    scale = rng.uniform(*SCALE)
    shift = rng.uniform(-SHIFT_PX, SHIFT_PX, size=2) * RENDER / size
    # PIL's affine maps output to input coordinates: the inverse of rotate-and-scale about the centre, then shift.
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    centre = RENDER / 2
    matrix = (c, s, centre - c * (centre + shift[0]) - s * (centre + shift[1]),
              -s, c, centre + s * (centre + shift[0]) - c * (centre + shift[1]))
    moved = big.transform((RENDER, RENDER), Image.AFFINE, matrix, resample=Image.BILINEAR)
    small = np.asarray(moved.resize((size, size), Image.BOX), dtype=np.float64) / 255.
    noisy = small + rng.normal(0., NOISE_STD, size=small.shape)
    return np.round(np.clip(noisy, 0., 1.) * 255).astype(np.uint8)


def main(args: argparse.Namespace) -> None:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit('error: this example needs scikit-learn: pip install scikit-learn')
    digits = load_digits()
    rng = np.random.default_rng(args.seed)
    test = set()
    for digit in range(10):  # the same share of every digit in the test split
        members = np.flatnonzero(digits.target == digit)
        share = round(args.test_size * len(members) / len(digits.target))
        test.update(rng.choice(members, share, replace=False).tolist())
    for i, (image, digit) in enumerate(zip(digits.images, digits.target)):
        split = 'test' if i in test else 'train'
        folder = os.path.join(args.out, split, str(digit))
        os.makedirs(folder, exist_ok=True)
        pixels = np.round(image * 255 / 16).astype(np.uint8)  # the scans hold 0..16
        if args.hard:
            pixels = distort(pixels, np.random.default_rng([args.seed, i]))  # each image its own stream
        Image.fromarray(pixels, mode='L').save(os.path.join(folder, f"{i:04d}.png"))
    print(f"wrote {len(digits.target) - len(test)} training and {len(test)} test images to {args.out}"
          + (' (distorted)' if args.hard else ''))


if __name__ == '__main__':
    main(parse_args())
