"""The scripts' shared command line: the parser class, the flags several scripts take, their range checks, and
what --resume and --dir read back from a run's args.json. Only the scripts import this module; the code below
them takes settings objects (runtime/settings.py) or plain values, never the argparse namespace."""
import argparse
import copy
import os
from typing import Any, Callable, Iterable, NoReturn, Optional, Sequence, Tuple

from genotypes import Genotype, load_genotype, resolve_genotype
from runtime.devices import elastic_restart_count
from runtime.run_dirs import read_run_args, run_program
from runtime.settings import RunSettings
from utils import UserError

# What add_argument is called on: a parser or one of its argument groups.
Flags = argparse._ActionsContainer
Argv = Optional[Sequence[str]]


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr and status 2, as every other error of the scripts: the
    message and where the options are listed, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see: python {self.prog}.py --help)\n")


class _GpuIndex(argparse.Action):
    """--gpu N, the original scripts' spelling of --device cuda:N."""

    def __call__(self, parser, namespace, value, option_string=None):
        namespace.device = f"cuda:{value}"


def add_seed_and_device(group: Flags, seed: int) -> None:
    """--seed and --device (and the original's --gpu N), as every script takes them."""
    group.add_argument('--seed', type=int, default=seed, help=f'random seed (default: {seed})')
    group.add_argument('--device', type=str, default='auto', help='auto, cpu, cuda or cuda:N (default: auto)')
    group.add_argument('--gpu', type=int, action=_GpuIndex, dest='device', default=argparse.SUPPRESS, metavar='N',
                       help="the original EvNAS scripts' spelling of --device cuda:N")


def add_run_arguments(group: Flags, seed: int, new_runs: str, report_freq: int) -> None:
    """The run group of the training scripts: --seed, --device, --save (new runs go to new_runs with NAME in
    it), --run_dir, --resume and --report_freq."""
    add_seed_and_device(group, seed)
    group.add_argument('--save', type=str, default='EXP',
                       help=f'experiment name: new runs go to {new_runs} (default: EXP)')
    group.add_argument('--run_dir', type=str, default=None, help='exact directory of a new run (overrides --save)')
    group.add_argument('--resume', type=str, default=None, metavar='RUN_DIR',
                       help='continue the run in RUN_DIR after its last completed epoch')
    group.add_argument('--report_freq', type=int, default=report_freq,
                       help=f'log every N steps (default: {report_freq})')


DEFAULT_ARCH = 'EvNASA'


def add_network_arguments(parser: Flags, init_channels: int, layers: int, weights: str) -> None:
    """The network flags of the evaluation scripts: which architecture, its sizes, and the weights."""
    parser.add_argument('--arch', type=str, default=None,
                        help=f'published architecture name (default: {DEFAULT_ARCH}, or the run\'s with --dir)')
    parser.add_argument('--genotype', type=str, default=None, help='genotype JSON file (instead of --arch)')
    parser.add_argument('--init_channels', type=int, default=init_channels,
                        help=f'num of init channels (default: {init_channels})')
    parser.add_argument('--layers', type=int, default=layers, help=f'total number of layers (default: {layers})')
    parser.add_argument('--auxiliary', action='store_true', help='build (and load) the auxiliary tower')
    parser.add_argument('--model_path', type=str, default=None, help=f'checkpoint to evaluate (default: {weights})')


def resolve_network_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, weights_name: str) -> None:
    """Fill in the architecture and the weights: from --dir RUN_DIR (its genotype.json and `weights_name`)
    where the command line names neither, else --arch's default; a missing --model_path is an error here,
    before any data is read."""
    if args.arch is not None and args.genotype is not None:
        parser.error("give the architecture once: --arch or --genotype")
    if args.dir is not None:
        if args.arch is None and args.genotype is None:
            args.genotype = os.path.join(args.dir, 'genotype.json')
        if args.model_path is None:
            args.model_path = os.path.join(args.dir, weights_name)
    if args.arch is None and args.genotype is None:
        args.arch = DEFAULT_ARCH
    if args.model_path is None:
        parser.error("no weights to evaluate: give --model_path FILE, or --dir RUN_DIR of a training run")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace, at_least_one: Iterable[str] = (),
               positive: Iterable[str] = (), non_negative: Iterable[str] = ()) -> None:
    """Refuse out-of-range numbers before any work, with argparse's usage line and exit status 2."""
    for name in at_least_one:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1 (got {getattr(args, name)})")
    for name in positive:
        if not getattr(args, name) > 0:
            parser.error(f"--{name} must be positive (got {getattr(args, name)})")
    for name in non_negative:
        if getattr(args, name) < 0:
            parser.error(f"--{name} must not be negative (got {getattr(args, name)})")
    processes = getattr(args, 'plan', None)
    if processes is not None and not 1 <= processes <= args.batch_size:
        parser.error(f"--plan {processes}: the number of processes must be between 1 and --batch_size "
                     f"({args.batch_size}), each taking a share of every batch")


def explicit_options(parser: argparse.ArgumentParser, argv: Argv) -> set:
    """The option names (dests) given on the command line, as opposed to left at their defaults."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    probe._defaults = {}  # set_defaults values (recorded fields that are not flags) are never on a command line
    namespace, _ = probe.parse_known_args(argv)
    return set(vars(namespace))


def add_plan_argument(group: Flags, unit: str) -> None:
    group.add_argument('--plan', type=int, nargs='?', const=1, default=None, metavar='PROCESSES',
                       help=f'build what the run builds on its device, time a few real steps of each phase, and '
                            f'print the memory each phase needs, the time per {unit} and in all, and the disk the '
                            f'run fills; then exit (no run directory is made). --plan N plans one of N torchrun '
                            f'processes (each trains on --batch_size / N images per step)')


def add_cudnn_argument(group: Flags) -> None:
    group.add_argument('--cudnn_benchmark', action='store_true',
                       help='on CUDA, let cuDNN pick its fastest kernels (cudnn.benchmark) instead of the '
                            "original's deterministic ones: faster, not reproducible bit for bit")


def take_run_settings(parser: argparse.ArgumentParser, argv: Argv, args: argparse.Namespace, program: str,
                      names: Iterable[str]) -> None:
    """For --dir RUN_DIR of the evaluation scripts: each flag in `names` that the command line does not give
    takes the value of the `program` run there (its args.json)."""
    try:
        saved = read_run_args(args.dir, program)
    except UserError as e:
        parser.error(f"--dir {e}")
    explicit = explicit_options(parser, argv)
    for name in names:
        if name not in explicit and name in saved:
            setattr(args, name, saved[name])


def resumed_args(parser: argparse.ArgumentParser, argv: Argv, args: argparse.Namespace, program: str,
                 may_change: Iterable[str], checkpoint_name: str = 'checkpoint.pt',
                 resolve_defaults: Optional[Callable[[argparse.Namespace], Any]] = None) -> argparse.Namespace:
    """The saved args of the run in args.resume, with the flags in `may_change` taken from this command line.

    Any other flag given explicitly must equal the run's own value; everything is checked before any work.
    resolve_defaults(namespace) fills in the defaults that depend on other flags (left None by the parser),
    as the run did.
    """
    try:
        saved = read_run_args(args.resume, program)
    except UserError as e:
        parser.error(f"--resume {e}")
    if not os.path.isfile(os.path.join(args.resume, checkpoint_name)):
        unit = 'generation' if program == 'train_search' else 'epoch'
        parser.error(f"--resume {args.resume}: this start stopped before its first {unit} completed, so there is "
                     f"nothing to resume; run the command that started it again (with --run_dir {args.resume}), "
                     f"which reuses the directory")
    explicit = explicit_options(parser, argv)
    # A flag newer than the run is not in its args.json: the run used that flag's default.
    run = argparse.Namespace(**{name: saved.get(name, parser.get_default(name)) for name in vars(args)})
    if resolve_defaults is not None:
        resolve_defaults(run)
    for name in sorted(explicit - set(may_change)):
        theirs = getattr(run, name)
        if theirs != getattr(args, name):
            allowed = ', '.join('--' + n for n in sorted(set(may_change) - {'resume'}))
            parser.error(f"--resume: --{name} {getattr(args, name)} differs from the run's {theirs}; "
                         f"only {allowed} may change")
    merged = vars(args).copy()
    keep = explicit & set(may_change)
    merged.update({k: v for k, v in saved.items() if k in merged and k not in keep})
    merged['resume'] = args.resume
    return argparse.Namespace(**merged)


def resume_after_restart(parser: argparse.ArgumentParser, args: argparse.Namespace,
                         checkpoint_name: str = 'checkpoint.pt') -> None:
    """After torchrun restarts a failed job, continue from the run's last checkpoint, as --resume would.
    Needs --run_dir, so that the restarted processes find the run."""
    if elastic_restart_count() == 0 or args.resume:
        return
    if args.run_dir is None:
        parser.error("torchrun restarted this job, but without --run_dir the restarted processes cannot find the "
                     "run to resume; pass --run_dir with --max_restarts")
    if os.path.isfile(os.path.join(args.run_dir, checkpoint_name)):
        args.resume = args.run_dir


def add_augment_arguments(group: Flags, cutout_help: str, per_space: bool = False) -> None:
    """The training augmentation's flags, as train_search.py and train.py take them. With per_space, the
    defaults of --cutout_length and --crop_padding are left None, for the search space to resolve."""
    group.add_argument('--cutout', action='store_true', help=cutout_help)
    group.add_argument('--cutout_length', type=int, default=None if per_space else 16,
                       help='cutout length (default: 16)' if not per_space else
                       'cutout length (default: 16 with --cutout in the DARTS space; in NAS-Bench-201 the '
                       'original\'s --cutout has no effect, and --cutout_length N is a real cutout of N)')
    group.add_argument('--no_flip', action='store_true',
                       help='no random horizontal flip (for images that are not mirror-symmetric: digits, text, '
                            'many medical images)')
    group.add_argument('--crop_padding', type=int, default=None if per_space else 4,
                       help='zero padding of the random crop, in pixels (default: 4, the original\'s'
                            + ('; 2 for ImageNet16-120' if per_space else '') + '; 0 = no crop)')


def check_architecture_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A training run names its architecture once: --arch NAME, --genotype FILE or --dir SEARCH_DIR, and
    --dir is a search run (a training run's directory holds a genotype.json too, which would otherwise be
    trained again, with the new run inside the old one)."""
    given = [f"--{name}" for name in ('arch', 'dir', 'genotype') if getattr(args, name) is not None]
    if len(given) > 1:
        parser.error(f"give the architecture once: {' and '.join(given)} each name one (use only one of "
                     f"--arch, --dir, --genotype)")
    if not given:
        parser.error("no architecture: give --arch NAME, --dir SEARCH_DIR or --genotype FILE")
    if args.dir is not None:
        program = run_program(args.dir)
        if program not in (None, 'train_search'):
            parser.error(f"--dir {args.dir} is a {program}.py run, not a search run; to train its architecture "
                         f"again use --genotype {os.path.join(args.dir, 'genotype.json')}")


def training_genotype(args: argparse.Namespace) -> Tuple[Genotype, str]:
    """The architecture a training run trains: when resuming, the copy saved in its run directory; else
    --genotype, --dir or --arch (checked before anything is created)."""
    if getattr(args, 'resume', None):
        return load_genotype(os.path.join(args.resume, 'genotype.json')), args.arch or args.genotype or args.dir
    return resolve_genotype(args.arch, args.genotype, args.dir)


def run_settings(args: argparse.Namespace) -> RunSettings:
    """Where a training or search run lives (distributed.run), from --device, --resume, --run_dir and --dir."""
    return RunSettings(device=args.device, resume=args.resume, run_dir=args.run_dir, parent=args.dir)
