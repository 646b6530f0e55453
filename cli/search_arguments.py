"""train_search.py's command line: its flags and their checks, the defaults its search space decides, and the
settings a search computes with (runtime/settings.py), made from the resolved arguments of a new run or of a run's
args.json (--resume; trust.py)."""
import argparse
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import fitness
import speed
from cli import arguments
from fitness import Estimator
from inputs.nb201 import METRICS as BENCHMARK_METRICS
from inputs.nb201 import WHERE as BENCHMARK_WHERE
from runtime.settings import (
    Augment,
    BudgetSettings,
    Compute,
    DataSettings,
    Evolution,
    LoaderSettings,
    Recipe,
    SupernetSettings,
)
from search import latency
from search.budget import SIZES as BUDGET_SIZES
from search.budget import check_table
from search.latency import LatencyTable, TableError
from search_space import SPACES, get_space


@dataclass(frozen=True)
class SearchSettings:
    """Everything a search computes with, resolved for its space."""
    space: str
    supernet: SupernetSettings
    data: DataSettings
    augment: Augment   # of the supernet's training batches (and, in the DARTS space, of the fitness batches)
    loader: LoaderSettings
    recipe: Recipe
    fitness: Estimator
    budget: BudgetSettings
    evolution: Evolution
    compute: Compute


STRATEGIES = ('evolution', 'random')
# What only the genetic algorithm reads: an explicit one with --strategy random is an error.
GA_FLAGS = ('tsize', 'num_elites', 'mutate_rate')

# Flags that do not change what a run computes; only these may differ when a run is resumed.
# --latency_table is a path: a resumed run reads its own copy, and refuses another table (_latency_table).
RESUME_MAY_CHANGE = {'device', 'report_freq', 'num_workers', 'data', 'resume', 'dir', 'run_dir', 'cudnn_benchmark',
                     'api_path', 'plan', 'latency_table'}


def build_parser(description: str = '') -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser('train_search', description=description,
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
    arguments.add_augment_arguments(data, cutout_help='use cutout (darts: on training and fitness batches; nb201: '
                                                      'no effect, as in the original)', per_space=True)
    data.add_argument('--loader', choices=('tensor', 'torchvision'), default='tensor',
                      help='tensor: batch-wise augmentation on the device (fast); torchvision: the original '
                           'per-image pipeline in worker processes (same distributions) (default: tensor)')
    data.add_argument('--num_workers', type=int, default=2,
                      help='worker processes of --loader torchvision (default: 2)')

    supernet = parser.add_argument_group('supernet training')
    supernet.add_argument('--init_channels', type=int, default=16, help='num of init channels (default: 16)')
    supernet.add_argument('--batch_size', type=int, default=64, help='batch size (default: 64)')
    supernet.add_argument('--learning_rate', type=float, default=0.025, help='init learning rate (default: 0.025)')
    supernet.add_argument('--learning_rate_min', type=float, default=0.001, help='min learning rate (default: 0.001)')
    supernet.add_argument('--momentum', type=float, default=0.9, help='momentum (default: 0.9)')
    supernet.add_argument('--weight_decay', type=float, default=3e-4, help='weight decay (default: 3e-4)')
    supernet.add_argument('--grad_clip', type=float, default=5, help='gradient clipping (default: 5)')

    evolution = parser.add_argument_group('evolution')
    evolution.add_argument('--strategy', choices=STRATEGIES, default='evolution',
                           help='evolution: EvNAS\'s genetic algorithm; random: the same loop without selection, '
                                'every generation drawn afresh as the first (the same supernet training, fitness calls '
                                'and seeds), and at the end every architecture drawn scored on the final supernet '
                                '(random search with weight sharing), a baseline for the search (default: evolution)')
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
                             '(C=48, 14 layers, 224x224); nb201: the benchmark\'s network at 32x32 or '
                             'ImageNet16-120\'s 16x16 (default: cifar)')
    budget.add_argument('--max_latency', type=float, default=None, metavar='MS',
                        help='at most MS milliseconds per call, predicted from --latency_table (built on the target '
                             'by latency_table.py)')
    budget.add_argument('--latency_table', type=str, default=None, metavar='FILE',
                        help="the table --max_latency predicts from; copied into the run directory, whose copy "
                             "--resume reads")
    parser.set_defaults(latency_table_sha256=None)  # the table's, recorded in args.json (not a flag)

    fast = parser.add_argument_group('speed (see docs/performance.md)')
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
    arguments.add_seed_and_device(run, 18)
    arguments.add_cudnn_argument(run)
    arguments.add_plan_argument(run, 'generation')
    run.add_argument('--dir', type=str, default=None,
                     help='where new runs go, as search-YYYYMMDD-HHMMSS (default: the current directory)')
    run.add_argument('--run_dir', type=str, default=None, help='exact directory of a new run (overrides --dir)')
    run.add_argument('--resume', type=str, default=None, metavar='RUN_DIR',
                     help='continue the run in RUN_DIR after its last completed generation')
    run.add_argument('--report_freq', type=int, default=50, help='log every N training steps (default: 50)')
    return parser


def _check_ranges(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    arguments.check_args(parser, args,
                     at_least_one=('epochs', 'pop_size', 'tsize', 'batch_size', 'valid_batch_size', 'init_channels',
                                   'layers', 'num_cells', 'report_freq', 'image_size', 'fitness_bn_batches'),
                     positive=('learning_rate', 'grad_clip'),
                     non_negative=('learning_rate_min', 'momentum', 'weight_decay', 'cutout_length', 'crop_padding',
                                   'num_workers'))
    if args.strategy == 'evolution' and args.tsize > args.pop_size:
        parser.error(f"--tsize {args.tsize} is larger than --pop_size {args.pop_size}: a tournament draws "
                     f"without replacement")
    if args.strategy == 'evolution' and not 0 <= args.num_elites < args.pop_size:
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
    if args.budget_size != 'cifar' and args.max_params is None and args.max_macs is None and args.max_latency is None:
        parser.error("--budget_size sets where a budget is measured: give --max_params, --max_macs or --max_latency "
                     "too")
    for name in ('max_params', 'max_macs', 'max_latency'):
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
    resolve_space_defaults(args)


def resolve_space_defaults(args: argparse.Namespace) -> None:
    """The flags whose defaults the space decides (left None by the parser), as args.json records them."""
    args.crop_padding, args.cutout_length = get_space(args.space).augment_defaults(args.dataset, args.crop_padding,
                                                                                   args.cutout_length)


def _check_strategy(parser: argparse.ArgumentParser, args: argparse.Namespace, explicit: set) -> None:
    ga_only = [f"--{name}" for name in GA_FLAGS if name in explicit]
    if args.strategy == 'random' and ga_only:
        parser.error(f"{', '.join(ga_only)} set(s) the genetic algorithm, which --strategy random does not run "
                     f"(it draws every generation afresh)")


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


def parse_args(argv: Optional[Sequence[str]] = None, description: str = '') -> argparse.Namespace:
    """The resolved arguments (train_search.parse_args passes the script's docstring for --help)."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    # given again with --resume, a table must be the run's; after a torchrun restart (which resumes with the
    # original command line) the run's copy alone counts, whatever became of the file since
    explicit_table = args.latency_table if args.resume is not None else None
    arguments.resume_after_restart(parser, args)
    if args.resume is not None:
        args = arguments.resumed_args(parser, argv, args, 'train_search', RESUME_MAY_CHANGE,
                            resolve_defaults=resolve_space_defaults)
        resolve_space_defaults(args)  # a run older than a flag used its default
    else:
        explicit = arguments.explicit_options(parser, argv)
        _check_space(parser, args, explicit)
        _check_strategy(parser, args, explicit)
    _check_benchmark(parser, args)
    _check_ranges(parser, args)
    _latency_table(parser, args, explicit_table)
    return args


def _latency_table(parser: argparse.ArgumentParser, args: argparse.Namespace, given: Optional[str]) -> None:
    """--max_latency and --latency_table go together. A new run's table must be one of its space and
    --budget_size, and its hash goes into args.json; a resumed run reads the copy in its directory, which must
    still have that hash, and a --latency_table given again must be the same table."""
    if (args.max_latency is None) != (args.latency_table is None and args.latency_table_sha256 is None):
        parser.error("--max_latency MS needs --latency_table FILE (built by latency_table.py), and the table needs "
                     "--max_latency")
    if args.max_latency is None:
        return
    try:
        if args.resume is None:
            table = LatencyTable.read(args.latency_table)
            check_table(table, args.space, args.budget_size, table.network.num_classes, args.latency_table)
            args.latency_table_sha256 = table.sha256
            return
        copy = os.path.join(args.resume, latency.RUN_COPY)
        if given is not None and file_sha256_or_none(given) != args.latency_table_sha256:
            parser.error(f"--resume: --latency_table {given} is not the table the run searched with; leave it out "
                         f"(the run reads its copy, {copy})")
        if file_sha256_or_none(copy) != args.latency_table_sha256:
            parser.error(f"--resume: {copy} is missing or changed since the run began (its sha256 is not the one "
                         f"args.json records); the run cannot continue bit for bit without it")
        args.latency_table = copy
    except TableError as e:
        parser.error(str(e))


def file_sha256_or_none(path: str) -> Optional[str]:
    try:
        return latency.file_sha256(path)
    except OSError:
        return None


def search_settings(args: argparse.Namespace) -> SearchSettings:
    """What the search computes with, from its resolved arguments (a new run's, or a run's args.json as
    --resume reads it, flags newer than the run at their defaults)."""
    space = get_space(args.space)
    return SearchSettings(
        space=args.space,
        supernet=SupernetSettings(init_channels=args.init_channels, layers=args.layers, num_cells=args.num_cells,
                                  max_nodes=args.max_nodes, track_running_stats=args.track_running_stats),
        data=DataSettings(dataset=args.dataset, data=args.data, image_size=args.image_size,
                          synthetic_size=args.synthetic_size, train_portion=args.train_portion),
        augment=space.train_augment(args.cutout, args.cutout_length, args.crop_padding, flip=not args.no_flip),
        loader=LoaderSettings(loader=args.loader, num_workers=args.num_workers, batch_size=args.batch_size,
                              valid_batch_size=args.valid_batch_size, valid_size=args.valid_size, seed=args.seed),
        recipe=Recipe(learning_rate=args.learning_rate, learning_rate_min=args.learning_rate_min,
                      momentum=args.momentum, weight_decay=args.weight_decay, grad_clip=args.grad_clip),
        fitness=Estimator(data=args.fitness_data, bn=args.fitness_bn, augment=args.fitness_augment,
                                  recalibration_batches=args.fitness_bn_batches, dtype=args.fitness_dtype),
        budget=BudgetSettings(max_params=args.max_params, max_macs=args.max_macs, size=args.budget_size,
                              max_latency=args.max_latency, latency_table=args.latency_table,
                              latency_table_sha256=args.latency_table_sha256),
        evolution=Evolution(strategy=args.strategy, generations=args.epochs, pop_size=args.pop_size, tsize=args.tsize,
                            num_elites=args.num_elites, mutate_rate=args.mutate_rate),
        compute=Compute(paper_exact=args.paper_exact, amp=args.amp, compile=args.compile,
                        compile_fitness=args.compile_fitness, sync_bn=args.sync_bn))

