"""Train a searched architecture from scratch on CIFAR-10 or CIFAR-100 (the DARTS/EvNAS recipe).

Examples:
    # EvNAS-A as in the paper (600 epochs; 2.40 % CIFAR-10 test error)
    python train.py --arch EvNASA --auxiliary --cutout
    # what that takes on this device: memory per phase, time per epoch and in all, disk
    python train.py --arch EvNASA --auxiliary --cutout --plan
    # the result of a search run, CIFAR-100
    python train.py --dir search-EXP --dataset cifar100 --auxiliary --cutout
    # four GPUs: --batch_size stays the global batch (see docs/several-gpus.md)
    torchrun --nproc_per_node=4 train.py --arch EvNASA --auxiliary --cutout
    # continue an interrupted run after its last completed epoch
    python train.py --resume eval-EXP-20260101-120000
    # a CPU smoke run on generated data
    python train.py --arch EvNASA --dataset synthetic --init_channels 4 --layers 5 --epochs 2 --device cpu

RUN_DIR holds log.txt, args.json, genotype.json, weights.pt (a bare state_dict: `test_cifar.py --model_path
RUN_DIR/weights.pt` evaluates it), checkpoint.pt (for --resume) and summary.json (best and last test error).
"""
import argparse
import os
import shlex
import sys
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

import speed
import utils
from cli import arguments
from cost import describe_cost, network_cost
from engine import Monitor, OptimizerStep
from genotypes import Genotype, save_genotype
from inputs.augmentation import training_augment
from inputs.data import DATASETS, ImageArray, load_dataset, random_images, save_dataset_info
from inputs.data import at_hand as data_at_hand
from inputs.loaders import TensorLoader, make_loader
from model import NetworkCIFAR
from runtime import devices, logs, memory, stopping
from runtime import plan as run_plan
from runtime.checkpoint import atomic_save, load_run_checkpoint, restore_run
from runtime.run_dirs import save_args
from training import EpochPlan, SchedulerLR, TrainingRun, finish, plan_training, train_epochs

CHECKPOINT_FORMAT = 'evnas-train/1'
RESUME_MAY_CHANGE = {'device', 'report_freq', 'num_workers', 'data', 'resume', 'dir', 'run_dir', 'save',
                     'cudnn_benchmark', 'plan'}


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser('train', description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    arch = parser.add_argument_group('architecture (one of --arch, --dir, --genotype)')
    arch.add_argument('--arch', type=str, default=None, help='published architecture name, e.g. EvNASA')
    arch.add_argument('--dir', type=str, default=None,
                      help='a search run directory: trains its genotype.json (or a legacy genotype.pickle); the '
                           'run directory goes inside it')
    arch.add_argument('--genotype', type=str, default=None, help='a genotype JSON file')
    arch.add_argument('--init_channels', type=int, default=36, help='num of init channels (default: 36)')
    arch.add_argument('--layers', type=int, default=20, help='total number of layers (default: 20)')
    arch.add_argument('--auxiliary', action='store_true', help='use auxiliary tower')
    arch.add_argument('--auxiliary_weight', type=float, default=0.4, help='weight for auxiliary loss (default: 0.4)')

    data = parser.add_argument_group('data')
    data.add_argument('--data', type=str, default='../data', help='location of the data corpus (default: ../data)')
    data.add_argument('--dataset', choices=DATASETS, default='cifar10',
                      help='(default: cifar10; folder = your images in --data DIR as DIR/train/<class>/* and '
                           'DIR/val/<class>/*)')
    data.add_argument('--image_size', type=int, default=32,
                      help='folder and synthetic images are resized to this (default: 32)')
    data.add_argument('--synthetic_size', type=int, default=2000, help='training images of the generated set')
    arguments.add_augment_arguments(data, cutout_help='use cutout')
    data.add_argument('--loader', choices=('tensor', 'torchvision'), default='tensor',
                      help='tensor: batch-wise augmentation on the device; torchvision: the original per-image '
                           'pipeline (default: tensor)')
    data.add_argument('--num_workers', type=int, default=2, help='worker processes of --loader torchvision')

    optim = parser.add_argument_group('optimisation')
    optim.add_argument('--epochs', type=int, default=600, help='num of training epochs (default: 600)')
    optim.add_argument('--batch_size', type=int, default=96,
                       help='batch size; with torchrun, the global batch over all processes (default: 96)')
    optim.add_argument('--learning_rate', type=float, default=0.025,
                       help='init learning rate, cosine-annealed to 0 (default: 0.025)')
    optim.add_argument('--momentum', type=float, default=0.9, help='momentum (default: 0.9)')
    optim.add_argument('--weight_decay', type=float, default=3e-4, help='weight decay (default: 3e-4)')
    optim.add_argument('--grad_clip', type=float, default=5, help='gradient clipping (default: 5)')
    optim.add_argument('--drop_path_prob', type=float, default=0.2,
                       help='drop path probability, grown linearly from 0 over the epochs (default: 0.2)')
    optim.add_argument('--amp', action='store_true',
                       help='mixed precision: bf16 autocast where supported, else fp16 with a gradient scaler '
                            '(default: fp32, as in the paper)')
    optim.add_argument('--sync_bn', action='store_true',
                       help='with torchrun, BatchNorm statistics over the global batch (default: per process)')
    speed.add_paper_exact_argument(optim)
    optim.add_argument('--compile', action='store_true', help='torch.compile the network')

    run = parser.add_argument_group('run')
    arguments.add_run_arguments(run, 18, 'eval-NAME-YYYYMMDD-HHMMSS', report_freq=50)
    arguments.add_cudnn_argument(run)
    arguments.add_plan_argument(run, 'epoch')
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    arguments.resume_after_restart(parser, args)
    if args.resume is not None:
        args = arguments.resumed_args(parser, argv, args, 'train', RESUME_MAY_CHANGE)
    else:
        arguments.check_architecture_arguments(parser, args)
    if args.auxiliary and args.image_size < 32:
        parser.error(f"--auxiliary needs images of at least 32x32 (its head pools an 8x8 map); got --image_size "
                     f"{args.image_size}")
    arguments.check_args(parser, args,
                     at_least_one=('epochs', 'batch_size', 'init_channels', 'layers', 'report_freq', 'synthetic_size',
                                   'image_size'),
                     positive=('learning_rate', 'grad_clip'),
                     non_negative=('momentum', 'weight_decay', 'cutout_length', 'crop_padding', 'num_workers',
                                   'auxiliary_weight'))
    if not 0. <= args.drop_path_prob < 1.:
        parser.error(f"--drop_path_prob must be in [0, 1) (got {args.drop_path_prob})")
    return args


def main(args: argparse.Namespace) -> Dict:
    genotype, arch_name = arguments.training_genotype(args)
    if args.plan:
        return plan(args, genotype, arch_name)

    def body(data, run_dir, dist, device, stop):
        return train(args, data, run_dir, dist, device, stop, genotype, arch_name)
    return devices.run(arguments.run_settings(args), f"eval-{args.save}", 'train',
                       lambda device: load_train_test(args), body)


def load_train_test(args: argparse.Namespace) -> Tuple[ImageArray, ImageArray]:
    """The training and test images, read before the run directory exists; the test set is normalised with
    the training set's statistics."""
    utils.seed_everything(args.seed)
    train_data = load_dataset(args.dataset, args.data, train=True, synthetic_size=args.synthetic_size,
                              image_size=args.image_size)
    test_data = load_dataset(args.dataset, args.data, train=False, synthetic_size=args.synthetic_size,
                             image_size=args.image_size, stats=(train_data.mean, train_data.std))
    return train_data, test_data


def train(args: argparse.Namespace, data: Tuple[ImageArray, ImageArray], run_dir: str,
          dist: devices.Distributed, device: torch.device, stop: stopping.StopSignals, genotype: Genotype,
          arch_name: str) -> Dict:
    logger = logs.setup_logger('train', run_dir if dist.is_main else None, enabled=dist.is_main)
    devices.configure_cudnn(device, args.cudnn_benchmark)
    if dist.is_main and not args.resume:
        save_args(run_dir, 'train', vars(args))
        save_genotype(genotype, os.path.join(run_dir, 'genotype.json'))
    logger.info(f"{'resuming' if args.resume else 'training'} {arch_name} in {run_dir} on {device}"
                + (f" x {dist.world_size} processes" if dist.enabled else ''))
    logger.info(f"args = {vars(args)}")

    train_data, test_data = data
    if dist.is_main and not args.resume:
        save_dataset_info(run_dir, train_data, args.dataset, args.data)
    run, scheduler, data_generator, setting = build_run(args, train_data, test_data, genotype, dist, device)
    model = run.model
    logger.info(f"genotype = {genotype}")
    logger.info(f"param size = {utils.count_parameters_in_MB(model):.6f} MB (millions of parameters, as DARTS "
                f"reports them)")
    logger.info(describe_cost(network_cost(genotype, num_classes=train_data.num_classes,
                                           init_channels=args.init_channels, layers=args.layers,
                                           image_size=args.image_size), 'cost'))
    if args.resume:
        state = load_run_checkpoint(run_dir, CHECKPOINT_FORMAT, vars(args), RESUME_MAY_CHANGE)
        restore_run(state, dist.rank, model, run.optimize.optimizer, run.optimize.scaler, scheduler=scheduler,
                    data_generator=data_generator)
        run.epochs_done, run.history = state['epoch'], state['history']
        logger.info(f"resumed after epoch {run.epochs_done} of {args.epochs}")

    run.net = devices.wrap(model, dist, device, args.sync_bn)
    if args.compile:
        run.net = speed.compiled(run.net)
    monitor = Monitor(logger, args.report_freq, stop, dist.all_reduce if dist.enabled else None)
    logger.info(f"speed: {setting}; {len(train_data)} training images, {len(test_data)} test images, "
                f"batch {args.batch_size}"
                + (f" ({args.batch_size // dist.world_size} per process)" if dist.enabled else ''))

    plan = epoch_plan(args)
    train_epochs(run, plan, monitor, logger, dist, device, run_dir,
                 partial(save_checkpoint, run_dir, args, run, scheduler, data_generator))
    return finish(run, plan, logger, dist, run_dir,
                  partial(summarize, arch_name=arch_name, params_mb=utils.count_parameters_in_MB(model),
                          test_images=len(test_data), run_dir=run_dir))


def build_run(args: argparse.Namespace, train_data: ImageArray, test_data: ImageArray, genotype: Genotype,
              dist: devices.Distributed, device: torch.device
              ) -> Tuple[TrainingRun, torch.optim.lr_scheduler.LRScheduler, torch.Generator, str]:
    """The network of `genotype` at the run's sizes on `device`, its optimiser and schedule, and the loaders, as
    a TrainingRun that calls the bare network (the caller wraps it for torchrun or compile after a resume);
    with the scheduler and the data generator a checkpoint holds, and the speed setting and precision."""
    config = speed.config_for(device, args.paper_exact)
    speed.configure_process(config)
    model = NetworkCIFAR(args.init_channels, train_data.num_classes, args.layers, args.auxiliary, genotype,
                         impl=speed.layers(config)).to(device, memory_format=config.memory_format)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(args.epochs))
    autocast, scaler, precision = devices.mixed_precision(device, args.amp)
    precision = speed.float32_policy(config, device) if precision == 'fp32' else precision
    data_generator = utils.make_generator(args.seed + 1)
    augment = training_augment(args.cutout, args.cutout_length, args.crop_padding, flip=not args.no_flip)
    train_loader = make_loader(args.loader, train_data, args.batch_size, device, shuffle=True, augment=augment,
                               generator=data_generator, num_workers=args.num_workers, rank=dist.rank,
                               world_size=dist.world_size, memory_format=config.memory_format)
    test_loader = TensorLoader(test_data.to(device), args.batch_size, rank=dist.rank, world_size=dist.world_size,
                               memory_format=config.memory_format)
    run = TrainingRun(model, model, OptimizerStep(optimizer, args.grad_clip, scaler), SchedulerLR(scheduler),
                      train_batches=lambda epoch: train_loader,  # one loader; its generator moves on every epoch
                      criterion=criterion, eval_loader=test_loader, eval_criterion=criterion, autocast=autocast,
                      history=[])
    setting = f"{config.describe()}{', compiled' if args.compile else ''}; precision {precision}"
    return run, scheduler, data_generator, setting


def epoch_plan(args: argparse.Namespace) -> EpochPlan:
    return EpochPlan(args.epochs, args.drop_path_prob, args.auxiliary_weight if args.auxiliary else 0.,
                     eval_name='test', script='train.py', records_drop_path=True, batch_size=args.batch_size,
                     processes=args.plan or 1,
                     lower=(() if args.amp else ('--amp',)) + (('without --auxiliary',) if args.auxiliary else ()))


# The training and test images of CIFAR, for --plan before they are at hand: (training, test) images, classes.
STAND_INS = {'cifar10': (50000, 10000, 10), 'cifar100': (50000, 10000, 100)}


def plan(args: argparse.Namespace, genotype: Genotype, arch_name: str) -> Dict:
    """--plan: build the network at the run's sizes on its device, time a few real training steps and test
    batches, measure each phase's peak memory, and print what the whole training will take. No file is written."""
    device = devices.resolve_device(args.device)
    utils.seed_everything(args.seed)
    if args.dataset in STAND_INS and not data_at_hand(args.dataset, args.data):
        train_size, test_size, classes = STAND_INS[args.dataset]
        train_data = random_images(train_size, classes, args.image_size, args.seed)
        test_data = random_images(test_size, classes, args.image_size, args.seed + 1)
        data_note = (f"{args.dataset} is not under {args.data} yet: random images of its shape stand in "
                     f"({train_size} training, {test_size} test)")
    else:
        train_data, test_data = load_train_test(args)
        data_note = f"{args.dataset}: {len(train_data)} training images, {len(test_data)} test images"
    baseline = memory.resident_mb()
    one_share = argparse.Namespace(**{**vars(args), 'batch_size': args.batch_size // args.plan})
    run, *_ = run_plan.checked_build(
        lambda: build_run(one_share, train_data, test_data, genotype, devices.Distributed(), device), 'the network')
    cost = network_cost(genotype, num_classes=train_data.num_classes, init_channels=args.init_channels,
                        layers=args.layers, image_size=args.image_size)
    if args.compile:
        run.net = speed.compiled(run.net)

    def checkpoint_mb() -> float:  # checkpoint.pt and weights.pt
        state = {'model': run.model.state_dict(), 'optimizer': run.optimize.optimizer.state_dict()}
        return run_plan.serialized_mb(state) + run_plan.serialized_mb(state['model'])
    return plan_training('train.py', run, epoch_plan(args), device, data_note,
                         f"{arch_name}, C={args.init_channels}, {args.layers} layers"
                         f"{', auxiliary' if args.auxiliary else ''}", cost, baseline, checkpoint_mb,
                         'the checkpoint is checkpoint.pt and weights.pt')


def save_checkpoint(run_dir: str, args: argparse.Namespace, run: TrainingRun,
                    scheduler: torch.optim.lr_scheduler.LRScheduler,
                    data_generator: torch.Generator, epoch: int, rng: list) -> None:
    """RUN_DIR/weights.pt (the bare state_dict) and RUN_DIR/checkpoint.pt (what --resume needs)."""
    model, optimize = run.model, run.optimize
    atomic_save(model.state_dict(), os.path.join(run_dir, 'weights.pt'), with_checksum=False)
    atomic_save({
        'format': CHECKPOINT_FORMAT, 'args': vars(args), 'epoch': epoch, 'model': model.state_dict(),
        'optimizer': optimize.optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
        'scaler': optimize.scaler.state_dict() if optimize.scaler is not None else None,
        'data_generator': data_generator.get_state(), 'rng': rng, 'history': run.history,
    }, os.path.join(run_dir, 'checkpoint.pt'), fault_tag=epoch)


def summarize(best: Dict, last: Dict, arch_name: str, params_mb: float, test_images: int,
              run_dir: str) -> Tuple[Dict, List[str]]:
    """summary.json (best and last test error) and the closing lines of the log."""
    summary = {'architecture': arch_name, 'epochs': last['epoch'],
               'best_epoch': best['epoch'], 'best_test_top1': best['test_top1'],
               'best_test_error': 100. - best['test_top1'], 'last_test_top1': last['test_top1'],
               'last_test_error': 100. - last['test_top1'], 'params_mb': params_mb, 'test_images': test_images}
    return summary, [f"done | best test error {summary['best_test_error']:.2f} % (epoch {best['epoch']}) "
                     f"| last test error {summary['last_test_error']:.2f} %",
                     f"weights of the last epoch: {os.path.join(run_dir, 'weights.pt')}; evaluate them with: "
                     f"python test_cifar.py --dir {shlex.quote(run_dir)}"]


if __name__ == '__main__':
    sys.exit(stopping.run_main(main, parse_args()))
