"""Evaluate a trained ImageNet network on the ImageNet validation set (top-1 and top-5).

Examples:
    # the published EvNAS-A ImageNet weights (75.6 % top-1, 92.6 % top-5; 5.14 MB of parameters)
    python test_imagenet.py --data /path/to/imagenet --arch EvNASA --model_path EvNAS_A_imagenet_model_best.pth.tar
    # model_best.pth.tar of a train_imagenet.py run
    python test_imagenet.py --data /path/to/imagenet --arch EvNASA --model_path eval-imagenet/model_best.pth.tar

--data holds `val/<class>/<image>` (ImageFolder layout). Images are resized to 256 and centre-cropped to 224,
then normalised with the ImageNet statistics. Checkpoints: a dict holding `state_dict` (DataParallel
`module.` prefixes are stripped), a bare state_dict, or this project's checkpoints; auxiliary-head keys are
dropped unless --auxiliary. Any other mismatch is an error (exit status 2).
"""
import argparse
import sys

import speed
import utils
from checkpoint import load_weights_file
from data import FolderLoader, image_folder, imagenet_transforms
from engine import test_model
from genotypes import resolve_genotype
from model import NetworkImageNet


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser('test_imagenet', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', type=str, default='../data/imagenet/',
                        help='ImageNet root holding val/ (default: ../data/imagenet/)')
    parser.add_argument('--batch_size', type=int, default=128, help='batch size (default: 128)')
    parser.add_argument('--report_freq', type=int, default=100, help='report every N batches (default: 100)')
    parser.add_argument('--init_channels', type=int, default=48, help='num of init channels (default: 48)')
    parser.add_argument('--layers', type=int, default=14, help='total number of layers (default: 14)')
    parser.add_argument('--num_classes', type=int, default=None,
                        help='classes of the network (default: the number of class folders in val/)')
    parser.add_argument('--model_path', type=str, default='../models/imagenet.pth.tar', help='checkpoint to evaluate')
    parser.add_argument('--auxiliary', action='store_true', help='build (and load) the auxiliary tower')
    parser.add_argument('--arch', type=str, default='EvNASA', help='published architecture name (default: EvNASA)')
    parser.add_argument('--genotype', type=str, default=None, help='genotype JSON file (overrides --arch)')
    parser.add_argument('--image_size', type=int, default=224,
                        help='centre-crop size; images are first resized to size*256/224 (default: 224)')
    parser.add_argument('--num_workers', type=int, default=4, help='data loading processes (default: 4)')
    utils.add_seed_and_device(parser, 0)
    speed.add_paper_exact_argument(parser)
    args = parser.parse_args(argv)
    utils.check_args(parser, args, at_least_one=('batch_size', 'init_channels', 'layers', 'image_size'),
                     non_negative=('num_workers',))
    return args


def main(args: argparse.Namespace) -> dict:
    logger = utils.setup_logger('test_imagenet')
    device = utils.resolve_device(args.device)
    utils.seed_everything(args.seed)
    genotype, arch_name = resolve_genotype(args.arch, args.genotype)
    valid_data = image_folder(args.data, 'val', imagenet_transforms(train=False, image_size=args.image_size))
    num_classes = args.num_classes or len(valid_data.classes)

    config = speed.config_for(device, args.paper_exact)
    speed.configure_process(config)
    model = NetworkImageNet(args.init_channels, num_classes, args.layers, args.auxiliary, genotype,
                            impl=speed.layers(config))
    expected = (f"{arch_name} on ImageNet (C={args.init_channels}, layers={args.layers}, classes={num_classes}, "
                f"auxiliary {'on' if args.auxiliary else 'off'})")
    load_weights_file(model, args.model_path, expected)
    model.to(device, memory_format=config.memory_format)
    logger.info(f"evaluating {args.model_path} as {expected} on {device}, {len(valid_data)} images")

    loader = FolderLoader(valid_data, args.batch_size, device, num_workers=args.num_workers)
    return test_model(model, loader, device, logger, args.report_freq, tag='valid')


if __name__ == '__main__':
    sys.exit(utils.run_main(main, parse_args()))
