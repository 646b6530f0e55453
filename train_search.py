"""EvNAS search: evolve a population of architectures that share the weights of one supernet, in the DARTS
cell space (--space darts, the default) or in NAS-Bench-201 (--space nb201).

Each generation (Sinha & Chen, GECCO 2021, Alg. 1):
  1. train the supernet for one epoch on the first half of the training set, step i using the decoded
     architecture of individual i mod pop_size;
  2. measure every individual's fitness (top-1 accuracy of its decoded architecture) on the held-out half;
  3. keep the elites, fill the rest with mutated crossover children of tournament winners.
The best individual of the last generation is the result: RUN_DIR/genotype.json, for train.py.

Examples:
    # the paper's search (CIFAR-10, 50 individuals, 50 generations)
    python train_search.py --cutout
    # a CPU quick-start on generated data (about a minute)
    python train_search.py --dataset synthetic --init_channels 4 --layers 5 --pop_size 4 --tsize 2 --epochs 3 \\
        --valid_batch_size 256 --device cpu --run_dir search-quick
    # continue an interrupted run where its last completed generation ended
    python train_search.py --resume search-quick
    # the original's NAS-Bench-201 search (searchNAS201.sh), with the benchmark's true accuracies
    python train_search.py --space nb201 --cutout --track_running_stats --dataset cifar10 \\
        --api_path NAS-Bench-201-v1_1-096897.pth

RUN_DIR holds log.txt, args.json, generations/gen_NNN.json (every individual's fitness, loss, genotype (or
NAS-Bench-201 arch string) and alphas), genotype.json (the best architecture), report.md and checkpoint.pt
(what --resume needs).
"""
import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

import distributed
import fitness
import rank_stats
import report
import speed
import utils
from architect_evolution import Individual, count_distinct, evolve, init_population, sort_population
from benchmark_nb201 import METRICS as BENCHMARK_METRICS
from benchmark_nb201 import WHERE as BENCHMARK_WHERE
from benchmark_nb201 import Benchmark
from budget import SIZES as BUDGET_SIZES
from budget import Budget, is_feasible
from checkpoint import (atomic_save, atomic_write_text, load_run_checkpoint, restore_run, resumed_args, rng_state,
                        save_args, save_dataset_info)
from cost import describe_cost
from data import SearchData, add_augment_arguments, make_loader
from engine import Monitor, OptimizerStep, train_generation
from faults import fault_point
from search_space import SPACES, get_space

CHECKPOINT_FORMAT = 'evnas-search/1'
# Flags that do not change what a run computes; only these may differ when a run is resumed.
RESUME_MAY_CHANGE = {'device', 'report_freq', 'num_workers', 'data', 'resume', 'dir', 'run_dir', 'cudnn_benchmark',
                     'api_path'}


def build_parser() -> argparse.ArgumentParser:
    parser = utils.ArgumentParser('train_search', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    space = parser.add_argument_group('search space')
    space.add_argument('--space', choices=tuple(SPACES), default='darts',
                       help='darts: the DARTS cell space (the paper\'s main search); nb201: NAS-Bench-201, the '
                            'original\'s second space (default: darts)')
    space.add_argument('--layers', type=int, default=8, help='darts: total number of layers (default: 8)')
    space.add_argument('--num_cells', type=int, default=5,
                       help='nb201: search cells per stage, N (default: 5, the benchmark\'s)')
    space.add_argument('--max_nodes', type=int, default=4, help='nb201: nodes of a cell (default: 4, the benchmark\'s)')
    space.add_argument('--track_running_stats', action='store_true',
                       help='nb201: the cells\' BatchNorms track running statistics, so that fitness (in eval '
                            'mode) uses them (the original\'s searchNAS201.sh passes it; default: off, as its parser)')
    space.add_argument('--api_path', type=str, default=None, metavar='FILE',
                       help='nb201: the NAS-Bench-201 file (v1_0 or v1_1; needs `pip install nas-bench-201`): look '
                            'up the true accuracy of every generation\'s best architecture')

    data = parser.add_argument_group('data')
    data.add_argument('--data', type=str, default='../data',
                      help='location of the data corpus (default: ../data); for ImageNet16-120 the folder of '
                           'train_data_batch_1..10 and val_data')
    data.add_argument('--dataset', choices=tuple(dict.fromkeys(SPACES['darts'].datasets + SPACES['nb201'].datasets)),
                      default='cifar10',
                      help='search data (default: cifar10; ImageNet16-120 with --space nb201; synthetic = the '
                           'generated set, for tests and quick starts; folder = your images in --data DIR as '
                           'DIR/train/<class>/*)')
    data.add_argument('--image_size', type=int, default=32,
                      help='folder and synthetic images are resized to this (default: 32)')
    data.add_argument('--synthetic_size', type=int, default=2000,
                      help='training images of the generated set (default: 2000)')
    data.add_argument('--train_portion', type=float, default=0.5,
                      help='share of the training set that trains the supernet; the rest measures fitness '
                           '(default: 0.5; nb201 on CIFAR and ImageNet16-120 uses the benchmark\'s split files)')
    add_augment_arguments(data, cutout_help='use cutout (darts: on training and fitness batches; nb201: no effect, '
                                            'as in the original)', per_space=True)
    data.add_argument('--loader', choices=('tensor', 'torchvision'), default='tensor',
                      help='tensor: batch-wise augmentation on the device (fast); torchvision: the original '
                           'per-image pipeline in worker processes (same distributions) (default: tensor)')
    data.add_argument('--num_workers', type=int, default=2, help='worker processes of --loader torchvision (default: 2)')

    supernet = parser.add_argument_group('supernet training')
    supernet.add_argument('--init_channels', type=int, default=16, help='num of init channels (default: 16)')
    supernet.add_argument('--batch_size', type=int, default=64, help='batch size (default: 64)')
    supernet.add_argument('--learning_rate', type=float, default=0.025, help='init learning rate (default: 0.025)')
    supernet.add_argument('--learning_rate_min', type=float, default=0.001, help='min learning rate (default: 0.001)')
    supernet.add_argument('--momentum', type=float, default=0.9, help='momentum (default: 0.9)')
    supernet.add_argument('--weight_decay', type=float, default=3e-4, help='weight decay (default: 3e-4)')
    supernet.add_argument('--grad_clip', type=float, default=5, help='gradient clipping (default: 5)')

    evolution = parser.add_argument_group('evolution')
    evolution.add_argument('--epochs', type=int, default=50, help='num of generations (default: 50)')
    evolution.add_argument('--pop_size', type=int, default=50, help='population size (default: 50)')
    evolution.add_argument('--tsize', type=int, default=10, help='tournament size (default: 10)')
    evolution.add_argument('--num_elites', type=int, default=1, help='number of elites (default: 1)')
    evolution.add_argument('--mutate_rate', type=float, default=0.1, help='mutation rate per edge row (default: 0.1)')
    evolution.add_argument('--valid_batch_size', type=int, default=1024,
                           help='fitness batch size; with BatchNorm in train mode it changes the fitness values '
                                '(default: 1024, as EvNAS)')
    fitness.add_estimator_arguments(evolution)
    evolution.add_argument('--valid_size', type=int, default=None,
                           help='measure fitness on a fixed random subset of this many held-out images, for a '
                                'cheaper search (default: the whole held-out half, as the paper)')

    budget = parser.add_argument_group('budget (constraint domination; default: none, as EvNAS)')
    budget.add_argument('--max_params', type=float, default=None, metavar='M',
                        help='at most M million parameters (auxiliary head excluded) at --budget_size')
    budget.add_argument('--max_macs', type=float, default=None, metavar='M',
                        help='at most M million multiply-accumulates per image at --budget_size')
    budget.add_argument('--budget_size', choices=BUDGET_SIZES, default='cifar',
                        help='the size the architecture is measured at: cifar (C=36, 20 layers, 32x32) or imagenet '
                             '(C=48, 14 layers, 224x224); nb201: the benchmark\'s network at 32x32 or ImageNet16-120\'s '
                             '16x16 (default: cifar)')

    fast = parser.add_argument_group('speed (see README, "Performance")')
    speed.add_paper_exact_argument(fast)
    fast.add_argument('--amp', action='store_true',
                      help='bf16 autocast (fp16 with a gradient scaler on GPUs without bf16); changes numerics')
    fast.add_argument('--compile', action='store_true',
                      help='torch.compile the supernet for training and fitness; every individual reuses the graphs')
    fast.add_argument('--compile_fitness', action='store_true',
                      help='torch.compile only the network fitness calls (no gradients: it compiles much sooner '
                           'than the training step), leaving the training step uncompiled')
    fast.add_argument('--sync_bn', action='store_true',
                      help='with torchrun on GPUs, BatchNorm statistics of a training step over the global batch')

    run = parser.add_argument_group('run')
    utils.add_seed_and_device(run, 18)
    utils.add_cudnn_argument(run)
    run.add_argument('--dir', type=str, default=None,
                     help='where new runs go, as search-YYYYMMDD-HHMMSS (default: the current directory)')
    run.add_argument('--run_dir', type=str, default=None, help='exact directory of a new run (overrides --dir)')
    run.add_argument('--resume', type=str, default=None, metavar='RUN_DIR',
                     help='continue the run in RUN_DIR after its last completed generation')
    run.add_argument('--report_freq', type=int, default=50, help='log every N training steps (default: 50)')
    return parser


def _check_ranges(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    utils.check_args(parser, args,
                     at_least_one=('epochs', 'pop_size', 'tsize', 'batch_size', 'valid_batch_size', 'init_channels',
                                   'layers', 'num_cells', 'report_freq', 'image_size', 'fitness_bn_batches'),
                     positive=('learning_rate', 'grad_clip'),
                     non_negative=('learning_rate_min', 'momentum', 'weight_decay', 'cutout_length', 'crop_padding',
                                   'num_workers'))
    if args.tsize > args.pop_size:
        parser.error(f"--tsize {args.tsize} is larger than --pop_size {args.pop_size}: a tournament draws "
                     f"without replacement")
    if not 0 <= args.num_elites < args.pop_size:
        parser.error(f"--num_elites must be in [0, --pop_size) = [0, {args.pop_size}) (got {args.num_elites})")
    if not 0. <= args.mutate_rate <= 1.:
        parser.error(f"--mutate_rate must be in [0, 1] (got {args.mutate_rate})")
    if not 0. < args.train_portion < 1.:
        parser.error(f"--train_portion must be in (0, 1) (got {args.train_portion})")
    if args.synthetic_size < 2:
        parser.error("--synthetic_size must be at least 2")
    if args.valid_size is not None and args.valid_size < 1:
        parser.error(f"--valid_size must be at least 1 (got {args.valid_size})")
    if args.max_nodes < 2:
        parser.error(f"--max_nodes must be at least 2 (got {args.max_nodes})")
    if args.budget_size != 'cifar' and args.max_params is None and args.max_macs is None:
        parser.error("--budget_size sets where a budget is measured: give --max_params or --max_macs too")
    for name in ('max_params', 'max_macs'):
        if getattr(args, name) is not None and not getattr(args, name) > 0:
            parser.error(f"--{name} must be positive (got {getattr(args, name)})")


def _check_space(parser: argparse.ArgumentParser, args: argparse.Namespace, explicit: set) -> None:
    """The dataset and the flags must belong to the space; the space resolves the defaults left to it."""
    space = get_space(args.space)
    if args.dataset not in space.datasets:
        other = next(s for s in SPACES.values() if args.dataset in s.datasets)
        parser.error(f"--dataset {args.dataset} is a dataset of --space {other.name} ({other.title}), not of "
                     f"--space {space.name}")
    foreign = sorted(f"--{name}" for s in SPACES.values() if s is not space for name in s.flags if name in explicit)
    if foreign:
        parser.error(f"{', '.join(foreign)} do(es) not apply to --space {space.name} ({space.title})")
    space.resolve_defaults(args)


def _check_benchmark(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--api_path (which --resume may add, change, or drop with --api_path ''): a NAS-Bench-201 search of the
    benchmark's cell on one of its datasets, and a file that is there."""
    if args.api_path == '':
        args.api_path = None
    if args.api_path is None:
        return
    if args.space != 'nb201' or args.max_nodes != 4:
        parser.error("--api_path looks architectures up in NAS-Bench-201: it needs --space nb201 with --max_nodes 4 "
                     "(the benchmark's cell)")
    if args.dataset not in BENCHMARK_METRICS:
        parser.error(f"NAS-Bench-201 has no accuracies for --dataset {args.dataset} (it has "
                     f"{', '.join(BENCHMARK_METRICS)}); leave out --api_path")
    if not os.path.isfile(args.api_path):
        parser.error(f"--api_path {args.api_path} is not a file; {BENCHMARK_WHERE}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    distributed.resume_after_restart(parser, args)
    if args.resume is not None:
        def resolve_defaults(namespace):
            get_space(namespace.space).resolve_defaults(namespace)
        args = resumed_args(parser, argv, args, 'train_search', RESUME_MAY_CHANGE, resolve_defaults=resolve_defaults)
        resolve_defaults(args)  # a run older than a flag used its default
    else:
        _check_space(parser, args, utils.explicit_options(parser, argv))
    _check_benchmark(parser, args)
    _check_ranges(parser, args)
    return args


# ----------------------------------------------------------------------------------------------------------
# The search

def main(args: argparse.Namespace) -> Dict:
    return distributed.run(args, 'search', 'train_search', lambda device: load_search_inputs(args),
                           lambda inputs, run_dir, dist, device, stop: search(args, inputs, run_dir, stop, dist, device))


def search(args: argparse.Namespace, inputs: 'SearchInputs', run_dir: str, stop: utils.StopSignals,
           dist: distributed.Distributed, device: torch.device) -> Dict:
    """EvNAS, Alg. 1: per generation decode -> train -> evaluate -> rank -> record -> evolve -> checkpoint."""
    logger = utils.setup_logger('train_search', run_dir if dist.is_main else None, enabled=dist.is_main)
    utils.configure_cudnn(device, args.cudnn_benchmark)
    run = set_up(args, inputs.data, run_dir, dist, device, logger)
    space = run.space
    monitor = Monitor(logger, args.report_freq, stop, dist.all_reduce if dist.enabled else None)
    records = Records(run_dir, dist.is_main, logger, args.epochs, run.generations_done, space)
    for generation in range(run.generations_done + 1, args.epochs + 1):
        lr = run.scheduler.get_last_lr()[0]
        # Decode each individual once per generation; the device copies are reused by every step.
        decoded = [[a.to(device) for a in space.decode(ind.alphas)] for ind in run.population]
        seeds = fitness.draw_seeds(run.measure.estimator, run.data_generator, len(run.population))
        with utils.note_on_stop(generation - 1, 'generation', run_dir, 'train_search.py', logger):
            started = time.time()
            train_stats = train_generation(run.model, decoded, run.train_loader, run.optimize, monitor,
                                           generation=generation, net=run.train_net, autocast=run.autocast)
            run.scheduler.step()
            dist.broadcast_buffers(run.model)  # every rank measures fitness with rank 0's BatchNorm statistics
            trained = time.time()
            run.measure(run.model, run.population, seeds, monitor, generation, decoded=decoded, rank=dist.rank,
                        world_size=dist.world_size, net=run.eval_net, autocast=run.autocast)
        ranked, order = rank_population(run.population, run.budget)
        summary = summarize(ranked, train_stats, generation, lr, space, train_seconds=trained - started,
                            fitness_seconds=time.time() - trained)
        if inputs.benchmark is not None:  # the true accuracies of the generation's best (NAS-Bench-201)
            summary['benchmark'] = inputs.benchmark.lookup(space.genotype(ranked[0].alphas))
            summary['benchmark_tau'] = population_tau(ranked, inputs.benchmark, space)
        run.history.append(summary)
        records.write(generation, ranked, train_stats, summary, order, seeds, run.elapsed_before)
        if generation == args.epochs:
            run.population = ranked
            records.best(ranked[0])
        else:
            run.population = evolve(ranked, args.num_elites, args.tsize, args.mutate_rate, run.ga_generator)
            check_agreement(run.population, dist)
        run.generations_done = generation
        save_checkpoint(run_dir, args, run, run.elapsed_before + records.timer.elapsed(), dist)
    return records.finish(run)


# ----------------------------------------------------------------------------------------------------------
# Set-up and checkpoints

@dataclass
class SearchInputs:
    """What a search reads before its run directory exists: its images, and the benchmark (NAS-Bench-201 with
    --api_path, on the process that writes the records; else None)."""
    data: SearchData
    benchmark: Optional[Benchmark] = None


@dataclass
class SearchRun:
    """What the generations read and change, and a checkpoint holds."""
    space: object         # search_space.DARTS or NB201
    model: nn.Module      # the space's supernet
    train_net: nn.Module  # what a training step calls: the model, or its DDP and/or torch.compile wrapper
    eval_net: nn.Module   # what fitness calls: the model, or its torch.compile wrapper (never DDP)
    optimize: OptimizerStep
    scheduler: torch.optim.lr_scheduler.LRScheduler
    autocast: Callable
    train_loader: object
    measure: fitness.FitnessMeasure  # the fitness estimator, its loader and BatchNorm mode
    ga_generator: torch.Generator
    data_generator: torch.Generator
    population: List[Individual]
    budget: Optional[Budget] = None  # --max_params / --max_macs
    history: List[Dict] = field(default_factory=list)
    generations_done: int = 0
    elapsed_before: float = 0.


def load_search_inputs(args) -> SearchInputs:
    """The search's images (split by its space) and the benchmark, read before the run directory exists."""
    utils.seed_everything(args.seed)
    data = get_space(args.space).search_data(args)
    # Only the process that writes the records reads the benchmark (tens of GB of memory for the real file).
    reads_benchmark = args.api_path is not None and int(os.environ.get('RANK', '0')) == 0
    return SearchInputs(data, Benchmark.open(args.api_path, args.dataset) if reads_benchmark else None)


def set_up(args, data: SearchData, run_dir: str, dist: distributed.Distributed, device: torch.device,
           logger) -> SearchRun:
    """The supernet of the space and its optimiser, the loaders, the first population; with --resume, the
    state of the run's last checkpoint."""
    if dist.is_main and not args.resume:
        save_args(run_dir, 'train_search', args)
        os.makedirs(os.path.join(run_dir, 'generations'), exist_ok=True)
    space = get_space(args.space)
    logger.info(f"{'resuming' if args.resume else 'starting'} EvNAS search ({space.title}) in {run_dir} on {device}"
                + (f" x {dist.world_size} processes" if dist.enabled else ''))
    logger.info(f"args = {vars(args)}")
    if space.name == 'nb201' and args.api_path is None:
        logger.info(f"no --api_path: the true accuracies of NAS-Bench-201 are not looked up ({BENCHMARK_WHERE})")

    if dist.is_main and not args.resume:
        save_dataset_info(run_dir, data.train, args)
    config = speed.config_for(device, args.paper_exact)
    speed.configure_process(config)
    model = space.build_supernet(args, data.train.num_classes, speed.layers(config))
    model = model.to(device, memory_format=config.memory_format)
    # With several processes each step still trains one individual on a global batch of --batch_size
    # images: every rank takes its share of the batch, and DistributedDataParallel averages the gradients.
    train_net = distributed.wrap(model, dist, device, args.sync_bn)
    if (args.compile or args.compile_fitness) and device.type == 'cpu':
        # Measured on a 2-core CPU (README, "Performance"): compiling a C=8, 5-layer supernet's fitness forward
        # took 638 s for a 5 % faster forward, and its training step did not compile within 30 minutes.
        logger.warning("--compile on a CPU: compiling can take tens of minutes before the first step, "
                       "for a small gain; leave it off for CPU searches")
    autocast, scaler, precision = utils.mixed_precision(device, args.amp)
    precision = speed.float32_policy(config, device) if precision == 'fp32' else precision
    optimizer = space.optimizer(model.parameters(), args)

    # One set of images trains the supernet, the other measures fitness (augmented as the space says), each
    # pass in a fresh random order (EvNAS's two SubsetRandomSamplers).
    train_data, valid_data = data.train, data.valid
    if args.loader == 'tensor':  # held once on the device; the loaders index into them
        on_device = train_data.to(device)
        valid_data = on_device if valid_data is train_data else valid_data.to(device)
        train_data = on_device
    ga_generator = utils.make_generator(args.seed)
    data_generator = utils.make_generator(args.seed + 1)
    run = SearchRun(
        space=space, model=model, train_net=speed.compiled(train_net) if args.compile else train_net,
        eval_net=speed.compiled(model) if args.compile or args.compile_fitness else model,
        optimize=OptimizerStep(optimizer, args.grad_clip, scaler),
        scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(args.epochs),
                                                             eta_min=args.learning_rate_min),
        autocast=autocast,
        train_loader=make_loader(args.loader, train_data, args.batch_size, device, data.train_indices, shuffle=True,
                                 augment=space.train_augment(args), generator=data_generator, rank=dist.rank,
                                 world_size=dist.world_size, num_workers=args.num_workers,
                                 memory_format=config.memory_format),
        measure=fitness.FitnessMeasure(fitness.estimator_of(args), args, data, device, config, space,
                                       valid_data=valid_data, train_data=train_data),
        ga_generator=ga_generator, data_generator=data_generator,
        population=init_population(args.pop_size, space.alpha_shapes(args), ga_generator),
        budget=Budget.of(args, space, data.train.num_classes))
    split = len(data.train_indices)
    logger.info(f"{args.dataset}: {split} images train the supernet, {run.measure.loader.num_samples} measure fitness "
                f"({'training augmentation' if run.measure.augmented else 'test transform'}; fitness estimator: "
                f"{run.measure.estimator.describe()}); "
                f"supernet {utils.count_parameters_in_MB(model):.3f} M parameters; speed: {config.describe()}, "
                f"{precision}{', compiled' if args.compile else ', fitness compiled' if args.compile_fitness else ''}")
    steps = len(run.train_loader)
    if steps < args.pop_size:
        # Step i of a generation trains individual i mod pop_size, so the last ones would share the weights
        # without ever training them, and be ranked on weights shaped by the others.
        smaller_batch = (f", --batch_size {split // args.pop_size} or less" if split >= args.pop_size else '')
        logger.warning(f"a generation has {steps} training step(s) ({split} images, --batch_size "
                       f"{args.batch_size}) for {args.pop_size} individuals: {args.pop_size - steps} of them never "
                       f"train the supernet; use more images{smaller_batch} or --pop_size {steps} or less")
    if run.budget is not None:
        logger.info(f"budget: {run.budget.describe()}; selection by constraint domination")
    if args.resume:
        restore(run, load_run_checkpoint(run_dir, CHECKPOINT_FORMAT, args, RESUME_MAY_CHANGE), dist.rank)
        logger.info(f"resumed after generation {run.generations_done} of {args.epochs}")
    return run


def save_checkpoint(run_dir: str, args, run: SearchRun, elapsed: float, dist: distributed.Distributed) -> None:
    """RUN_DIR/checkpoint.pt after a generation, which --resume continues from bit for bit; every rank waits
    for it, so that none runs ahead of the checkpoint it would resume from."""
    fault_point('evolve', run.generations_done)
    all_rng = dist.gather_object(rng_state())  # every rank's global random streams
    if dist.is_main:
        optimizer, scaler = run.optimize.optimizer, run.optimize.scaler
        atomic_save({
            'format': CHECKPOINT_FORMAT,
            'args': vars(args),
            'generation': run.generations_done,
            'population': [ind.to_state() for ind in run.population],
            'model': run.model.state_dict(),
            'optimizer': optimizer.state_dict(),
            'scheduler': run.scheduler.state_dict(),
            'scaler': scaler.state_dict() if scaler is not None else None,
            'ga_generator': run.ga_generator.get_state(),
            'data_generator': run.data_generator.get_state(),
            'rng': all_rng,
            'history': run.history,
            'elapsed': elapsed,
        }, os.path.join(run_dir, 'checkpoint.pt'), fault_tag=run.generations_done)
    dist.barrier()


def restore(run: SearchRun, state: Dict, rank: int) -> None:
    restore_run(state, rank, run.model, run.optimize.optimizer, run.optimize.scaler, scheduler=run.scheduler,
                ga_generator=run.ga_generator, data_generator=run.data_generator)
    run.population = [Individual.from_state(s) for s in state['population']]
    run.generations_done, run.history, run.elapsed_before = state['generation'], state['history'], state['elapsed']


def check_agreement(population: Sequence[Individual], dist: distributed.Distributed) -> None:
    """Every rank evolves the population itself from the same seed; make sure they all hold the same one."""
    if not dist.enabled:
        return
    digest = torch.tensor([float(sum(a.double().sum().item() * (k + 1) for k, ind in enumerate(population)
                                     for a in ind.alphas))], dtype=torch.float64)
    low, high = -dist.all_reduce(-digest, 'max'), dist.all_reduce(digest, 'max')
    if low.item() != high.item():
        raise utils.UserError("the ranks of this run disagree on the population (they must run the same code "
                              "with the same arguments)")


# ----------------------------------------------------------------------------------------------------------
# Records

def rank_population(population: Sequence[Individual], budget: Optional[Budget] = None
                    ) -> Tuple[List[Individual], List[int]]:
    """The population best first (with a budget, each individual's cost measured first: constraint
    domination), and each ranked individual's position in the generation as trained."""
    if budget is not None:
        budget.assess(population)
    index_of = {id(ind): i for i, ind in enumerate(population)}
    ranked = sort_population(population)
    return ranked, [index_of[id(ind)] for ind in ranked]


def summarize(ranked: Sequence[Individual], train_stats: Sequence[Dict], generation: int, lr: float, space,
              **timings: float) -> Dict:
    fitness = [ind.fitness for ind in ranked if not math.isnan(ind.fitness)]
    train_stats = [t for t in train_stats if t['samples']]
    seen = sum(t['samples'] for t in train_stats)
    return {
        'generation': generation,
        'lr': lr,
        'best': max(fitness, default=math.nan),
        'mean': sum(fitness) / len(fitness) if fitness else math.nan,
        'worst': min(fitness, default=math.nan),
        'distinct_genotypes': count_distinct(ranked, space.genotype),
        'train_loss': sum(t['loss'] * t['samples'] for t in train_stats) / max(seen, 1),
        'train_top1': sum(t['top1'] * t['samples'] for t in train_stats) / max(seen, 1),
        **({'feasible': sum(map(is_feasible, ranked))} if ranked and ranked[0].cost is not None else {}),
        **timings,
    }


def population_tau(ranked: Sequence[Individual], benchmark: Benchmark, space) -> float:
    """Kendall tau-b of the population's fitness against the benchmark's 200-epoch test accuracy (mean over its
    seeds): how well the supernet ranks this generation (NaN where it cannot be told: fewer than two measured
    individuals in the benchmark, or a constant side)."""
    pairs = []
    for individual in ranked:
        truth = benchmark.lookup(space.genotype(individual.alphas))
        if truth is not None and not math.isnan(individual.fitness):
            pairs.append((individual.fitness, truth['test']))
    if len(pairs) < 2:
        return math.nan
    return rank_stats.kendall_tau_b([f for f, _ in pairs], [t for _, t in pairs])


def generation_record(ranked: Sequence[Individual], train_stats: Sequence[Dict], summary: Dict,
                      order: Sequence[int], seeds: Sequence[int], space) -> Dict:
    """The human-readable record of one generation, best individual first. Each individual's fitness seed (its
    batch order and augmentation draws) lets trust.py measure its fitness again exactly."""
    return {
        **{k: utils.json_number(v) if isinstance(v, float) else v for k, v in summary.items()},
        'population': [{
            'rank': rank + 1,
            'index': order[rank],  # position in the generation as trained (step i trains index i mod pop_size)
            'fitness': utils.json_number(ind.fitness),
            'loss': utils.json_number(ind.loss),
            'top5': utils.json_number(ind.top5),
            'fitness_seed': int(seeds[order[rank]]),
            'train_loss': utils.json_number(train_stats[order[rank]]['loss']),
            'train_top1': utils.json_number(train_stats[order[rank]]['top1']),
            **space.record(ind.alphas),  # its genotype (DARTS) or arch string (NAS-Bench-201), and raw alphas
            **({} if ind.cost is None else {'params': ind.cost['params'], 'macs': ind.cost['macs'],
                                            'feasible': is_feasible(ind)}),
        } for rank, ind in enumerate(ranked)],
    }


class Records:
    """What a search shows and keeps: one log row and generations/gen_NNN.json per generation, TensorBoard
    scalars when tensorboard is installed, genotype.json and the report at the end (files on rank 0 only)."""

    def __init__(self, run_dir: str, is_main: bool, logger, epochs: int, generations_done: int, space):
        self.run_dir, self.is_main, self.logger, self.space = run_dir, is_main, logger, space
        self.epochs, self.first = epochs, generations_done
        self.writer = utils.summary_writer(os.path.join(run_dir, 'runs'), logger) if is_main else None
        self.timer = utils.Timer()
        self.genotype_path = os.path.join(run_dir, 'genotype.json')

    def write(self, generation: int, ranked, train_stats, summary: Dict, order, seeds, elapsed_before: float) -> None:
        elapsed = elapsed_before + self.timer.elapsed()
        remaining = self.timer.remaining(generation - self.first, self.epochs - self.first)
        self.logger.info(f"gen {generation:3d}/{self.epochs} | best {summary['best']:6.2f} | mean {summary['mean']:6.2f} "
                         f"| worst {summary['worst']:6.2f} | distinct {summary['distinct_genotypes']:3d}/{len(ranked)} "
                         + (f"| feasible {summary['feasible']:3d}/{len(ranked)} " if 'feasible' in summary else '')
                         + f"| train loss {summary['train_loss']:.4f} | elapsed {utils.format_duration(elapsed)} "
                         f"| eta {utils.format_duration(remaining)}")
        if 'benchmark' in summary:
            truth = summary['benchmark']
            self.logger.info(f"gen {generation:3d}/{self.epochs} | best {self.space.describe(ranked[0].alphas)}: "
                             + (f"NAS-Bench-201 #{truth['index']}, test {truth['test']:.2f}, valid {truth['valid']:.2f} "
                                f"(200 epochs)" if truth else "not in the NAS-Bench-201 file")
                             + f" | population's Kendall tau with the benchmark {summary['benchmark_tau']:.3f}")
        if not self.is_main:
            return
        atomic_write_text(os.path.join(self.run_dir, 'generations', f'gen_{generation:03d}.json'),
                          json.dumps(generation_record(ranked, train_stats, summary, order, seeds, self.space),
                                     allow_nan=False) + '\n')
        if self.writer is not None:
            for key in ('best', 'mean', 'worst'):
                self.writer.add_scalar(f'fitness/{key}', summary[key], generation)
            self.writer.add_scalar('population/distinct_genotypes', summary['distinct_genotypes'], generation)
            if 'feasible' in summary:
                self.writer.add_scalar('population/feasible_share', summary['feasible'] / len(ranked), generation)
            for key in ('loss', 'top1'):
                self.writer.add_scalar(f'train/{key}', summary[f'train_{key}'], generation)
            self.writer.add_scalar('train/lr', summary['lr'], generation)
            for key in ('test', 'valid'):
                if summary.get('benchmark'):
                    self.writer.add_scalar(f'benchmark/{key}_accuracy', summary['benchmark'][key], generation)
            if 'benchmark_tau' in summary:
                self.writer.add_scalar('benchmark/kendall_tau', summary['benchmark_tau'], generation)
            self.writer.flush()

    def best(self, individual: Individual) -> None:
        """The search's result: the best individual of the last generation."""
        if self.is_main:
            self.space.save_result(individual.alphas, self.genotype_path)
        self.logger.info(f"best architecture (fitness {individual.fitness:.2f}): {self.space.describe(individual.alphas)}")
        if math.isnan(individual.fitness):
            self.logger.warning("the best-ranked individual's fitness could not be measured (non-finite loss): "
                                "genotype.json holds an architecture without a measured fitness")
        if individual.cost is not None:
            cost = f"{individual.cost['params'] / 1e6:.3f} M parameters, {individual.cost['macs'] / 1e6:.1f} M MACs"
            if is_feasible(individual):
                self.logger.info(f"it fits the budget: {cost}")
            else:
                self.logger.warning(f"no individual of the last generation fits the budget: genotype.json holds the "
                                    f"least infeasible one ({cost}); loosen the budget or search longer")

    def finish(self, run: SearchRun) -> Dict:
        if self.writer is not None:
            self.writer.close()
        if self.first >= self.epochs:
            self.logger.info(f"{self.run_dir} already completed its {self.epochs} generations; nothing to do")
        elif self.is_main:
            summary = report.write_report(self.run_dir)
            for label, key in (('CIFAR (C=36, 20 layers)', 'cifar'), ('ImageNet (C=48, 14 layers)', 'imagenet')):
                if key in summary['costs']:
                    self.logger.info(f"cost of the best architecture, {describe_cost(summary['costs'][key], label)}")
            self.logger.info(f"saved {self.genotype_path}, its diagram and {os.path.join(self.run_dir, 'report.md')}; "
                             f"{summary['next_step']}")
        utils.close_logger(self.logger)
        return {'run_dir': self.run_dir, 'history': run.history, 'population': run.population,
                'genotype_path': self.genotype_path}


if __name__ == '__main__':
    sys.exit(utils.run_main(main, parse_args()))
