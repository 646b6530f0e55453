"""Evaluate a trained CIFAR network on the CIFAR-10/100 test set.

Examples:
    # the published EvNAS-A weights (CIFAR-10: 97.60 % top-1, 3.63 MB of parameters)
    python test_cifar.py --arch EvNASA --model_path EvNAS_A_cifar_weights.pt
    # CIFAR-100 (published EvNAS-A: 83.95 %)
    python test_cifar.py --dataset cifar100 --arch EvNASA --model_path EvNAS_A_cifar100_weights.pt
    # a train.py run: its genotype, sizes, dataset and weights.pt come from its directory
    python test_cifar.py --dir eval-EXP

Accepts a bare state_dict, a dict holding `state_dict` or `model`, and `module.`-prefixed keys; the
auxiliary head's keys are dropped unless --auxiliary. Any other mismatch is an error (exit status 2).
"""
import argparse
import sys
from typing import Optional, Sequence

import speed
import utils
from cli import arguments
from engine import test_model
from genotypes import resolve_genotype
from inputs.data import DATASETS, load_dataset, run_normalisation
from inputs.loaders import TensorLoader
from model import NetworkCIFAR
from runtime import devices, logs, stopping
from runtime.checkpoint import load_weights_file, read_weights_file

# What --dir RUN_DIR takes from a train.py run (args.json) unless the command line gives it.
RUN_SETTINGS = ('dataset', 'data', 'image_size', 'synthetic_size', 'init_channels', 'layers', 'auxiliary')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = arguments.ArgumentParser('test_cifar', description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dir', type=str, default=None, metavar='RUN_DIR',
                        help="a train.py run: its genotype, sizes, dataset, normalisation and weights.pt (flags "
                             "given explicitly still override)")
    parser.add_argument('--data', type=str, default='../data', help='location of the data corpus (default: ../data)')
    parser.add_argument('--dataset', choices=DATASETS, default='cifar10',
                        help='test set (default: cifar10; synthetic = the generated set, for tests; folder = '
                             'DIR/val/<class>/* or DIR/test/<class>/* of --data DIR, normalised with the statistics '
                             'of DIR/train as in training)')
    parser.add_argument('--image_size', type=int, default=32,
                        help='folder and synthetic images are resized to this (default: 32)')
    parser.add_argument('--synthetic_size', type=int, default=2000,
                        help='training-set size of the generated set; its test set is a fifth (default: 2000)')
    parser.add_argument('--batch_size', type=int, default=96, help='batch size (default: 96)')
    parser.add_argument('--report_freq', type=int, default=50, help='report every N batches (default: 50)')
    arguments.add_network_arguments(parser, init_channels=36, layers=20, weights='RUN_DIR/weights.pt with --dir')
    arguments.add_seed_and_device(parser, 0)
    speed.add_paper_exact_argument(parser)
    args = parser.parse_args(argv)
    args.stats = None
    if args.dir is not None:
        arguments.take_run_settings(parser, argv, args, 'train', RUN_SETTINGS)
        args.stats = run_normalisation(args.dir, args.dataset)
    arguments.check_args(parser, args, at_least_one=('batch_size', 'init_channels', 'layers', 'synthetic_size',
                                                 'image_size'))
    arguments.resolve_network_arguments(parser, args, 'weights.pt')
    return args


def main(args: argparse.Namespace) -> dict:
    logger = logs.setup_logger('test_cifar')
    device = devices.resolve_device(args.device)
    utils.seed_everything(args.seed)
    genotype, arch_name = resolve_genotype(args.arch, args.genotype)
    weights = read_weights_file(args.model_path)  # before the data: a wrong path costs no loading time
    test_data = load_dataset(args.dataset, args.data, train=False, synthetic_size=args.synthetic_size,
                             image_size=args.image_size, stats=args.stats)

    config = speed.config_for(device, args.paper_exact)
    speed.configure_process(config)
    model = NetworkCIFAR(args.init_channels, test_data.num_classes, args.layers, args.auxiliary, genotype,
                         impl=speed.layers(config))
    expected = (f"{arch_name} on {args.dataset} (C={args.init_channels}, layers={args.layers}, "
                f"classes={test_data.num_classes}, auxiliary {'on' if args.auxiliary else 'off'})")
    load_weights_file(model, weights, expected)
    model.to(device, memory_format=config.memory_format)
    logger.info(f"evaluating {args.model_path} as {expected} on {device}")

    loader = TensorLoader(test_data.to(device), args.batch_size, memory_format=config.memory_format)
    return test_model(model, loader, device, logger, args.report_freq)


if __name__ == '__main__':
    sys.exit(stopping.run_main(main, parse_args()))
