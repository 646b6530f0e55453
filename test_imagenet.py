"""Evaluate a trained ImageNet network on the ImageNet validation set (top-1 and top-5).

Examples:
    # the published EvNAS-A ImageNet weights (75.6 % top-1, 92.6 % top-5; 5.14 MB of parameters)
    python test_imagenet.py --data /path/to/imagenet --arch EvNASA --model_path EvNAS_A_imagenet_model_best.pth.tar
    # a train_imagenet.py run, its last epoch: genotype, sizes, data and weights come from its directory
    python test_imagenet.py --dir eval-imagenet-EXP
    # the same run's best epoch
    python test_imagenet.py --dir eval-imagenet-EXP --model_path eval-imagenet-EXP/model_best.pth.tar

--data holds `val/<class>/<image>` (ImageFolder layout). Images are resized to 256 and centre-cropped to 224,
then normalised with the ImageNet statistics. Checkpoints: a dict holding `state_dict` (DataParallel
`module.` prefixes are stripped), a bare state_dict, or this project's checkpoints; auxiliary-head keys are
dropped unless --auxiliary. Any other mismatch is an error (exit status 2).
"""
import argparse
import sys
from typing import Optional, Sequence

import speed
import utils
from cli import arguments
from engine import test_model
from genotypes import resolve_genotype
from inputs.augmentation import imagenet_transforms
from inputs.loaders import FolderLoader, image_folder
from model import NetworkImageNet
from runtime import devices, logs, stopping
from runtime.checkpoint import load_weights_file, read_weights_file

# What --dir RUN_DIR takes from a train_imagenet.py run (args.json) unless the command line gives it.
RUN_SETTINGS = ('data', 'image_size', 'init_channels', 'layers', 'auxiliary')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = arguments.ArgumentParser('test_imagenet', description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dir', type=str, default=None, metavar='RUN_DIR',
                        help="a train_imagenet.py run: its genotype, sizes, data and last epoch's weights "
                             "(checkpoint.pth.tar); flags given explicitly still override")
    parser.add_argument('--data', type=str, default='../data/imagenet/',
                        help='ImageNet root holding val/ (default: ../data/imagenet/)')
    parser.add_argument('--batch_size', type=int, default=128, help='batch size (default: 128)')
    parser.add_argument('--report_freq', type=int, default=100, help='report every N batches (default: 100)')
    arguments.add_network_arguments(parser, init_channels=48, layers=14,
                                weights='RUN_DIR/checkpoint.pth.tar with --dir')
    parser.add_argument('--num_classes', type=int, default=None,
                        help='classes of the network (default: the number of class folders in val/)')
    parser.add_argument('--image_size', type=int, default=224,
                        help='centre-crop size; images are first resized to size*256/224 (default: 224)')
    parser.add_argument('--num_workers', type=int, default=4, help='data loading processes (default: 4)')
    arguments.add_seed_and_device(parser, 0)
    speed.add_paper_exact_argument(parser)
    args = parser.parse_args(argv)
    if args.dir is not None:
        arguments.take_run_settings(parser, argv, args, 'train_imagenet', RUN_SETTINGS)
    arguments.check_args(parser, args, at_least_one=('batch_size', 'init_channels', 'layers', 'image_size'),
                     non_negative=('num_workers',))
    arguments.resolve_network_arguments(parser, args, 'checkpoint.pth.tar')
    return args


def main(args: argparse.Namespace) -> dict:
    logger = logs.setup_logger('test_imagenet')
    device = devices.resolve_device(args.device)
    utils.seed_everything(args.seed)
    genotype, arch_name = resolve_genotype(args.arch, args.genotype)
    weights = read_weights_file(args.model_path)  # before the data: a wrong path costs no loading time
    valid_data = image_folder(args.data, 'val', imagenet_transforms(train=False, image_size=args.image_size))
    num_classes = args.num_classes or len(valid_data.classes)

    config = speed.config_for(device, args.paper_exact)
    speed.configure_process(config)
    model = NetworkImageNet(args.init_channels, num_classes, args.layers, args.auxiliary, genotype,
                            impl=speed.layers(config))
    expected = (f"{arch_name} on ImageNet (C={args.init_channels}, layers={args.layers}, classes={num_classes}, "
                f"auxiliary {'on' if args.auxiliary else 'off'})")
    load_weights_file(model, weights, expected)
    model.to(device, memory_format=config.memory_format)
    logger.info(f"evaluating {args.model_path} as {expected} on {device}, {len(valid_data)} images")

    loader = FolderLoader(valid_data, args.batch_size, device, num_workers=args.num_workers)
    return test_model(model, loader, device, logger, args.report_freq, tag='valid')


if __name__ == '__main__':
    sys.exit(stopping.run_main(main, parse_args()))
