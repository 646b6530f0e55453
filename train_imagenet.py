"""Train an architecture from scratch on ImageNet with the P-DARTS recipe that EvNAS used.

Recipe (defaults): 48 channels, 14 layers, batch 256, SGD lr 0.1 decayed linearly over 250 epochs (or
--lr_scheduler cosine), 5 warm-up epochs when the batch exceeds 256, momentum 0.9, weight decay 3e-5,
label smoothing 0.1, auxiliary weight 0.4, gradient clipping 5; RandomResizedCrop 224, flip and colour
jitter (0.4, 0.4, 0.4, 0.2). EvNAS-A reaches 24.4 % top-1 / 7.4 % top-5 error with it.

Examples:
    # EvNAS-A on 8 GPUs of one machine; --batch_size is the global batch (raise lr with it: 0.1 x batch/256)
    torchrun --nproc_per_node=8 train_imagenet.py --data /path/to/imagenet --arch EvNASA --auxiliary \\
        --batch_size 1024 --learning_rate 0.4
    # one GPU, mixed precision
    python train_imagenet.py --data /path/to/imagenet --arch EvNASA --auxiliary --amp
    # will it fit, and how long per epoch? (random images stand in until /path/to/imagenet is there)
    python train_imagenet.py --data /path/to/imagenet --arch EvNASA --auxiliary --amp --plan
    # continue after the last completed epoch
    python train_imagenet.py --resume eval-imagenet-EXP-20260101-120000

--data holds train/<class>/* and val/<class>/* (ImageFolder layout). RUN_DIR holds log.txt, args.json,
genotype.json, checkpoint.pth.tar (every epoch; --resume reads it) and model_best.pth.tar; both hold the
weights under `state_dict`, which `test_imagenet.py --model_path` loads.
"""
import argparse
import math
import os
import shlex
import sys
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

import speed
import utils
from cli import arguments
from cost import describe_cost, network_cost
from engine import Monitor, OptimizerStep, top5_text
from genotypes import Genotype, save_genotype
from inputs.augmentation import imagenet_transforms
from inputs.loaders import FolderLoader, Loader, image_folder
from model import NetworkImageNet
from runtime import devices, logs, memory, stopping
from runtime import plan as run_plan
from runtime.checkpoint import atomic_save, load_run_checkpoint, restore_run
from runtime.run_dirs import save_args
from training import EpochLR, EpochPlan, TrainingRun, best_epoch, finish, plan_training, train_epochs

CHECKPOINT_FORMAT = 'evnas-train-imagenet/1'
RESUME_MAY_CHANGE = {'device', 'report_freq', 'workers', 'data', 'resume', 'dir', 'run_dir', 'save', 'plan'}


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser('train_imagenet', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    arch = parser.add_argument_group('architecture (one of --arch, --dir, --genotype)')
    arch.add_argument('--arch', type=str, default=None, help='published architecture name, e.g. EvNASA')
    arch.add_argument('--dir', type=str, default=None, help='a search run directory: trains its genotype.json')
    arch.add_argument('--genotype', type=str, default=None, help='a genotype JSON file')
    arch.add_argument('--init_channels', type=int, default=48, help='num of init channels (default: 48)')
    arch.add_argument('--layers', type=int, default=14, help='total number of layers (default: 14)')
    arch.add_argument('--auxiliary', action='store_true', help='use auxiliary tower')
    arch.add_argument('--auxiliary_weight', type=float, default=0.4, help='weight for auxiliary loss (default: 0.4)')

    data = parser.add_argument_group('data')
    data.add_argument('--data', type=str, default='../data/imagenet/',
                      help='ImageNet root holding train/ and val/ (default: ../data/imagenet/)')
    data.add_argument('--image_size', type=int, default=224, help='training crop and validation crop (default: 224)')
    data.add_argument('--workers', '--num_workers', dest='workers', type=int, default=32,
                      help='data loading processes per training process (default: 32)')

    optim = parser.add_argument_group('optimisation')
    optim.add_argument('--epochs', type=int, default=250, help='num of training epochs (default: 250)')
    optim.add_argument('--batch_size', type=int, default=256,
                       help='batch size; with torchrun, the global batch over all processes (default: 256)')
    optim.add_argument('--learning_rate', type=float, default=0.1, help='init learning rate (default: 0.1)')
    optim.add_argument('--lr_scheduler', choices=('linear', 'cosine'), default='linear',
                       help='learning-rate decay (default: linear)')
    optim.add_argument('--momentum', type=float, default=0.9, help='momentum (default: 0.9)')
    optim.add_argument('--weight_decay', type=float, default=3e-5, help='weight decay (default: 3e-5)')
    optim.add_argument('--label_smooth', type=float, default=0.1, help='label smoothing (default: 0.1)')
    optim.add_argument('--grad_clip', type=float, default=5., help='gradient clipping (default: 5)')
    optim.add_argument('--drop_path_prob', type=float, default=0.,
                       help='drop path probability, grown linearly over the epochs (default: 0)')
    optim.add_argument('--amp', action='store_true',
                       help='mixed precision: bf16 autocast where supported, else fp16 with a gradient scaler')
    optim.add_argument('--sync_bn', action='store_true',
                       help='with torchrun on GPUs, BatchNorm statistics over the global batch')
    speed.add_paper_exact_argument(optim)

    parser.add_argument('--parallel', action='store_true', help="the original's DataParallel flag: use torchrun")
    run = parser.add_argument_group('run')
    arguments.add_run_arguments(run, 0, 'eval-imagenet-NAME-YYYYMMDD-HHMMSS', report_freq=100)
    arguments.add_plan_argument(run, 'epoch')
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.parallel:
        rest = ' '.join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv) if a != '--parallel')
        parser.error(f"--parallel (the original's DataParallel) is not needed: several GPUs train with torchrun, "
                     f"one process per GPU: torchrun --nproc_per_node=NUM_GPUS train_imagenet.py {rest}")
    arguments.resume_after_restart(parser, args, 'checkpoint.pth.tar')
    if args.resume is not None:
        args = arguments.resumed_args(parser, argv, args, 'train_imagenet', RESUME_MAY_CHANGE, 'checkpoint.pth.tar')
    else:
        arguments.check_architecture_arguments(parser, args)
    arguments.check_args(parser, args,
                     at_least_one=('epochs', 'batch_size', 'init_channels', 'layers', 'report_freq', 'image_size'),
                     positive=('learning_rate', 'grad_clip'),
                     non_negative=('momentum', 'weight_decay', 'workers', 'auxiliary_weight'))
    if not 0. <= args.label_smooth < 1. or not 0. <= args.drop_path_prob < 1.:
        parser.error("--label_smooth and --drop_path_prob must be in [0, 1)")
    return args


def learning_rate(args, epoch: int) -> float:
    """The learning rate of (0-based) `epoch`, warm-up included (P-DARTS's schedule)."""
    if args.lr_scheduler == 'cosine':
        # NOTE (faithful to P-DARTS/EvNAS): the scheduler is stepped before each epoch's training, so epoch e
        # already uses the cosine value of e + 1, and the last epoch trains at lr 0.
        lr = 0.5 * args.learning_rate * (1 + math.cos(math.pi * (epoch + 1) / args.epochs))
    elif args.epochs <= 5:
        lr = args.learning_rate * (args.epochs - epoch) / args.epochs  # P-DARTS's formula divides by epochs - 5
    elif args.epochs - epoch > 5:
        lr = args.learning_rate * (args.epochs - 5 - epoch) / (args.epochs - 5)
    else:
        # a smaller slope for the last 5 epochs, because lr / 250 is still relatively large
        lr = args.learning_rate * (args.epochs - epoch) / ((args.epochs - 5) * 5)
    if epoch < 5 and args.batch_size > 256:
        lr = lr * (epoch + 1) / 5.0
    return lr


def main(args: argparse.Namespace) -> Dict:
    genotype, arch_name = arguments.training_genotype(args)
    if args.plan:
        return plan(args, genotype, arch_name)

    def body(data, run_dir, dist, device, stop):
        return train(args, data, run_dir, dist, device, stop, genotype, arch_name)
    return devices.run(arguments.run_settings(args), f"eval-imagenet-{args.save}", 'train_imagenet',
                       lambda device: load_imagenet(args), body, checkpoint_name='checkpoint.pth.tar')


def load_imagenet(args) -> tuple:
    """The train/ and val/ image folders, found before the run directory exists."""
    train_data = image_folder(args.data, 'train', imagenet_transforms(True, args.image_size))
    valid_data = image_folder(args.data, 'val', imagenet_transforms(False, args.image_size))
    if train_data.classes != valid_data.classes:
        raise utils.UserError(f"train/ and val/ under {args.data} hold different class folders")
    return train_data, valid_data


def train(args, data: tuple, run_dir: str, dist: devices.Distributed, device: torch.device,
          stop: stopping.StopSignals, genotype, arch_name: str) -> Dict:
    logger = logs.setup_logger('train_imagenet', run_dir if dist.is_main else None, enabled=dist.is_main)
    # NOTE (faithful to EvNAS): its ImageNet training (P-DARTS's) sets cudnn.benchmark = True, unlike its
    # search and CIFAR training, which are deterministic.
    devices.configure_cudnn(device, benchmark=True)
    train_data, valid_data = data
    if dist.is_main and not args.resume:
        save_args(run_dir, 'train_imagenet', vars(args))
        save_genotype(genotype, os.path.join(run_dir, 'genotype.json'))
    logger.info(f"{'resuming' if args.resume else 'training'} {arch_name} in {run_dir} on {device}"
                + (f" x {dist.world_size} processes" if dist.enabled else ''))
    logger.info(f"args = {vars(args)}")

    utils.seed_everything(args.seed)
    num_classes = len(train_data.classes)
    per_process = args.batch_size // dist.world_size
    if per_process < 1:
        raise utils.UserError(f"--batch_size {args.batch_size} is smaller than the {dist.world_size} processes")
    valid_sampler = list(range(dist.rank, len(valid_data), dist.world_size))  # each image once over all ranks
    run, setting = build_run(args, num_classes, genotype, device,
                             lambda epoch: epoch_loader(args, train_data, dist, device, per_process, epoch - 1),
                             FolderLoader(valid_data, per_process, device, num_workers=args.workers,
                                          sampler=valid_sampler))
    model = run.model
    logger.info(f"genotype = {genotype}")
    logger.info(describe_cost(network_cost(genotype, 'imagenet', num_classes=num_classes,
                                           init_channels=args.init_channels, layers=args.layers,
                                           image_size=args.image_size), 'cost'))
    logger.info(f"param size = {utils.count_parameters_in_MB(model):.6f} MB (millions of parameters); "
                f"{len(train_data)} training and {len(valid_data)} validation images in {num_classes} classes")
    if args.resume:
        state = load_run_checkpoint(run_dir, CHECKPOINT_FORMAT, vars(args), RESUME_MAY_CHANGE,
                                    checkpoint_name='checkpoint.pth.tar')
        restore_run(state, dist.rank, model, run.optimize.optimizer, run.optimize.scaler, model_key='state_dict')
        run.epochs_done, run.history = state['epoch'], state['history']
        logger.info(f"resumed after epoch {run.epochs_done} of {args.epochs}")

    run.net = devices.wrap(model, dist, device, args.sync_bn)
    monitor = Monitor(logger, args.report_freq, stop, dist.all_reduce if dist.enabled else None)
    logger.info(f"speed: {setting}; batch {args.batch_size}"
                + (f" ({per_process} per process)" if dist.enabled else ''))

    plan = epoch_plan(args)
    train_epochs(run, plan, monitor, logger, dist, device, run_dir, partial(save_checkpoint, run_dir, args, run))
    return finish(run, plan, logger, dist, run_dir,
                  partial(summarize, arch_name=arch_name, params_mb=utils.count_parameters_in_MB(model),
                          run_dir=run_dir))


def build_run(args: argparse.Namespace, num_classes: int, genotype: Genotype, device: torch.device,
              train_batches: Callable[[int], Loader], valid_loader: Loader) -> Tuple[TrainingRun, str]:
    """The network of `genotype` at the run's sizes on `device`, its optimiser and P-DARTS's schedule, as a
    TrainingRun that calls the bare network (the caller wraps it for torchrun after a resume); with the speed
    setting and precision."""
    config = speed.config_for(device, args.paper_exact)
    speed.configure_process(config)
    model = NetworkImageNet(args.init_channels, num_classes, args.layers, args.auxiliary, genotype,
                            impl=speed.layers(config)).to(device, memory_format=config.memory_format)
    # Label smoothing as P-DARTS's CrossEntropyLabelSmooth: (1 - eps) * one-hot + eps / classes.
    criterion_smooth = nn.CrossEntropyLoss(label_smoothing=args.label_smooth)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    autocast, scaler, precision = devices.mixed_precision(device, args.amp)
    precision = speed.float32_policy(config, device) if precision == 'fp32' else precision
    run = TrainingRun(model, model, OptimizerStep(optimizer, args.grad_clip, scaler),
                      EpochLR(optimizer, lambda epoch: learning_rate(args, epoch - 1)), train_batches=train_batches,
                      criterion=criterion_smooth, eval_loader=valid_loader, eval_criterion=criterion,
                      autocast=autocast, history=[])
    return run, f"{config.describe()}; precision {precision}"


def epoch_plan(args: argparse.Namespace) -> EpochPlan:
    return EpochPlan(args.epochs, args.drop_path_prob, args.auxiliary_weight if args.auxiliary else 0.,
                     eval_name='valid', script='train_imagenet.py', records_drop_path=False,
                     batch_size=args.batch_size, processes=args.plan or 1, lower=(() if args.amp else ('--amp',)))


# ImageNet-1k, for --plan before it is at hand: training and validation images, classes.
IMAGENET = (1281167, 50000, 1000)


def plan(args: argparse.Namespace, genotype: Genotype, arch_name: str) -> Dict:
    """--plan: build the network at the run's sizes on its device, time a few real training steps and validation
    batches (on random images where the dataset is not at hand), measure each phase's peak memory, and print
    what the whole training will take. No file is written."""
    device = devices.resolve_device(args.device)
    per_process = args.batch_size // args.plan
    utils.seed_everything(args.seed)
    try:
        train_data, valid_data = load_imagenet(args)
        sizes = (len(train_data), len(valid_data), len(train_data.classes))
        data_note = f"{args.data}: {sizes[0]} training and {sizes[1]} validation images in {sizes[2]} classes"
    except utils.UserError:
        train_data = valid_data = None
        sizes = IMAGENET
        data_note = (f"ImageNet is not under {args.data} yet: random {args.image_size}x{args.image_size} images stand "
                     f"in ({sizes[0]} training, {sizes[1]} validation, {sizes[2]} classes; the folder loader's "
                     f"decoding is not measured)")
    baseline = memory.resident_mb()
    config = speed.config_for(device, args.paper_exact)
    if train_data is None:
        batches = [run_plan.RandomBatches(math.ceil(n / per_process), per_process, args.image_size, sizes[2],
                                          device, config.memory_format) for n in sizes[:2]]
        train_batches, valid_loader = (lambda epoch: batches[0]), batches[1]
    else:
        train_batches = lambda epoch: epoch_loader(args, train_data, devices.Distributed(), device,  # noqa: E731
                                                   per_process, epoch - 1)
        valid_loader = FolderLoader(valid_data, per_process, device, num_workers=args.workers)
    run, _ = run_plan.checked_build(lambda: build_run(args, sizes[2], genotype, device, train_batches, valid_loader),
                                    'the network')
    cost = network_cost(genotype, 'imagenet', num_classes=sizes[2], init_channels=args.init_channels,
                        layers=args.layers, image_size=args.image_size)

    def checkpoint_mb() -> float:  # checkpoint.pth.tar, and model_best.pth.tar as large
        return 2 * run_plan.serialized_mb({'state_dict': run.model.state_dict(),
                                           'optimizer': run.optimize.optimizer.state_dict()})
    return plan_training('train_imagenet.py', run, epoch_plan(args), device, data_note,
                         f"{arch_name}, C={args.init_channels}, {args.layers} layers"
                         f"{', auxiliary' if args.auxiliary else ''}", cost, baseline, checkpoint_mb,
                         'checkpoint.pth.tar, and model_best.pth.tar as large')


def epoch_loader(args, train_data, dist: devices.Distributed, device: torch.device, per_process: int,
                 epoch: int) -> FolderLoader:
    """The training batches of (0-based) `epoch`. Their order and augmentation depend only on (seed, epoch): a
    resumed run sees the same batches as an uninterrupted one."""
    generator = utils.make_generator(args.seed * 1000 + epoch)
    if dist.enabled:
        sampler = torch.utils.data.DistributedSampler(train_data, dist.world_size, dist.rank, seed=args.seed)
        sampler.set_epoch(epoch)
    else:
        sampler = torch.utils.data.RandomSampler(train_data, generator=generator)
    return FolderLoader(train_data, per_process, device, num_workers=args.workers, sampler=sampler,
                        generator=generator)


def save_checkpoint(run_dir: str, args, run: TrainingRun, epoch: int, rng: list) -> None:
    """RUN_DIR/checkpoint.pth.tar (what --resume needs), and a copy as model_best.pth.tar when `epoch` is the best
    so far."""
    optimize, best = run.optimize, best_epoch(run.history, 'valid')
    state = {'format': CHECKPOINT_FORMAT, 'args': vars(args), 'epoch': epoch,
             'state_dict': run.model.state_dict(), 'best_acc_top1': best['valid_top1'],
             'optimizer': optimize.optimizer.state_dict(),
             'scaler': optimize.scaler.state_dict() if optimize.scaler is not None else None, 'rng': rng,
             'history': run.history}
    atomic_save(state, os.path.join(run_dir, 'checkpoint.pth.tar'), fault_tag=epoch)
    if best['epoch'] == epoch:
        atomic_save(state, os.path.join(run_dir, 'model_best.pth.tar'))


def summarize(best: Dict, last: Dict, arch_name: str, params_mb: float, run_dir: str) -> Tuple[Dict, List[str]]:
    """summary.json (best and last top-1 and top-5) and the closing lines of the log."""
    summary = {'architecture': arch_name, 'epochs': last['epoch'], 'best_epoch': best['epoch'],
               'best_top1': best['valid_top1'], 'best_top5': best['valid_top5'],
               'last_top1': last['valid_top1'], 'last_top5': last['valid_top5'], 'params_mb': params_mb}
    return summary, [f"done | best top1 {summary['best_top1']:.2f}{top5_text(summary, 'top5', 'best_top5')} "
                     f"(epoch {best['epoch']})",
                     f"weights: {os.path.join(run_dir, 'checkpoint.pth.tar')} (last epoch), "
                     f"{os.path.join(run_dir, 'model_best.pth.tar')} (best); evaluate with: python test_imagenet.py "
                     f"--dir {shlex.quote(run_dir)}"]


if __name__ == '__main__':
    sys.exit(stopping.run_main(main, parse_args()))
