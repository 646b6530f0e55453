"""Write scikit-learn's digits (1,797 scanned 8x8 handwritten digits, shipped with the package) as an image
folder that every script reads with --dataset folder: DIR/train/<digit>/*.png and DIR/test/<digit>/*.png.

Real images at a size a CPU affords, for measurements that must mean something (docs/trust.md). Needs
scikit-learn (pip install scikit-learn); nothing else in the project does.

    python examples/digits.py data/digits   # 1,438 training and 359 test images (a fifth of each digit), seed 0
    python train_search.py --dataset folder --data data/digits --image_size 8 --no_flip --crop_padding 1 ...
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out', help='the folder to write (DIR/train, DIR/test)')
    parser.add_argument('--test_size', type=int, default=360,
                        help='about this many test images, the same share of every digit (default: 360, gives 359)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the split (default: 0)')
    return parser.parse_args(argv)


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
        Image.fromarray(pixels, mode='L').save(os.path.join(folder, f"{i:04d}.png"))
    print(f"wrote {len(digits.target) - len(test)} training and {len(test)} test images to {args.out}")


if __name__ == '__main__':
    main(parse_args())
