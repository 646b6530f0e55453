"""Small helpers every script shares: errors, stopping, devices, seeding, logging, argument checks."""
import argparse
import copy
import functools
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn


class UserError(Exception):
    """A problem the user can fix (bad input, missing data, unusable file). Scripts print it as one line and
    exit with status 2; they never show a traceback for it."""


class Stop(Exception):
    """A run that must end before it completes: a signal, or a diverged loss. Its last checkpoint is intact.
    `exit_code` is 128 + the signal number for a signal (the shell's convention), 2 otherwise."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def stopped_note(reason: str, done: int, unit: str, run_dir: str, script: str, logger: logging.Logger) -> str:
    """Log and return where a stopped run stands and how to continue it."""
    kept = f"the checkpoint after {unit} {done} in {run_dir} is intact" if done else f"no {unit} had completed"
    note = f"{reason}; {kept}; continue with: python {script} --resume {run_dir}"
    # Into log.txt only: the terminal gets the note once, as the script's last line on stderr (run_main).
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, note, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    return note


@contextmanager
def note_on_stop(done: int, unit: str, run_dir: str, script: str, logger: logging.Logger):
    """A Stop raised inside the block comes out saying where the run stands and how to continue it."""
    try:
        yield
    except Stop as e:
        raise Stop(stopped_note(str(e), done, unit, run_dir, script, logger), e.exit_code) from None


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr and status 2, as every other error of the scripts: the
    message and where the options are listed, not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see: python {self.prog}.py --help)\n")


def reason(e: BaseException) -> str:
    """An exception in words for a one-line message: an OSError's text without its "[Errno N]" prefix."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def run_main(main: Callable, args) -> int:
    """Run a script's main(args), turning a UserError or a Stop into one line on stderr and an exit status.
    Under torchrun every rank stops alike, so only rank 0 says so."""
    try:
        main(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except Stop as e:
        if os.environ.get('RANK', '0') == '0':
            print(f"stopped: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C before the training loops watch for it: reading data, building
        print("stopped: interrupted by Ctrl-C (SIGINT) before the first step; nothing was saved", file=sys.stderr,
              flush=True)
        return 128 + signal.SIGINT
    return 0


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; `cuda` and `cuda:N` must exist."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} (or --gpu): CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != 'cpu':
        if device.type == 'mps' and not torch.backends.mps.is_available():
            raise UserError(f"--device {name}: MPS is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def make_generator(seed: int) -> torch.Generator:
    """An explicit CPU random stream (the GA's, the data pipeline's): its state can be saved and restored."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def count_parameters(model: nn.Module) -> int:
    """Parameters without the auxiliary head (it is dropped at test time), as DARTS reports them."""
    return sum(v.numel() for name, v in model.named_parameters() if 'auxiliary' not in name)


def count_parameters_in_MB(model: nn.Module) -> float:
    return count_parameters(model) / 1e6


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def setup_logger(name: str, run_dir: Optional[str] = None, enabled: bool = True) -> logging.Logger:
    """A named logger writing to stdout and, with a run directory, to run_dir/log.txt (appending on resume)."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    logger.propagate = False
    formatter = logging.Formatter('%(asctime)s %(message)s', datefmt='%m/%d %H:%M:%S')
    handlers = [logging.StreamHandler(sys.stdout)]
    if run_dir is not None and enabled:
        handlers.append(logging.FileHandler(os.path.join(run_dir, 'log.txt')))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.flush()
        logger.removeHandler(handler)
        handler.close()


class Timer:
    """Elapsed time and a linear estimate of the time remaining."""

    def __init__(self):
        self.start = time.time()

    def elapsed(self) -> float:
        return time.time() - self.start

    def remaining(self, done: float, total: float) -> float:
        return self.elapsed() / done * (total - done) if done > 0 else float('nan')


def summary_writer(log_dir: str, logger: logging.Logger):
    """A TensorBoard SummaryWriter when tensorboard is installed, else None (and one line in the log)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed, so no TensorBoard scalars are written (pip install tensorboard); "
                    "log.txt and the run's JSON files hold the same numbers")
        return None
    return SummaryWriter(log_dir)


class _GpuIndex(argparse.Action):
    """--gpu N, the original scripts' spelling of --device cuda:N."""

    def __call__(self, parser, namespace, value, option_string=None):
        namespace.device = f"cuda:{value}"


def add_seed_and_device(group, seed: int) -> None:
    """--seed and --device (and the original's --gpu N), as every script takes them."""
    group.add_argument('--seed', type=int, default=seed, help=f'random seed (default: {seed})')
    group.add_argument('--device', type=str, default='auto', help='auto, cpu, cuda or cuda:N (default: auto)')
    group.add_argument('--gpu', type=int, action=_GpuIndex, dest='device', default=argparse.SUPPRESS, metavar='N',
                       help="the original EvNAS scripts' spelling of --device cuda:N")


def add_run_arguments(group, seed: int, new_runs: str, report_freq: int) -> None:
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


def add_network_arguments(parser, init_channels: int, layers: int, weights: str) -> None:
    """The network flags of the evaluation scripts: which architecture, its sizes, and the weights."""
    parser.add_argument('--arch', type=str, default=None,
                        help=f'published architecture name (default: {DEFAULT_ARCH}, or the run\'s with --dir)')
    parser.add_argument('--genotype', type=str, default=None, help='genotype JSON file (instead of --arch)')
    parser.add_argument('--init_channels', type=int, default=init_channels,
                        help=f'num of init channels (default: {init_channels})')
    parser.add_argument('--layers', type=int, default=layers, help=f'total number of layers (default: {layers})')
    parser.add_argument('--auxiliary', action='store_true', help='build (and load) the auxiliary tower')
    parser.add_argument('--model_path', type=str, default=None, help=f'checkpoint to evaluate (default: {weights})')


def resolve_network_arguments(parser, args, weights_name: str) -> None:
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


def add_scalars(writer, row: dict, keys: Sequence[str], step: int) -> None:
    """row[key] for each key to TensorBoard as 'train_loss' -> train/loss (nothing without a writer)."""
    if writer is None:
        return
    for key in keys:
        if not (isinstance(row[key], float) and math.isnan(row[key])):  # top-5 of fewer than 6 classes
            writer.add_scalar(key.replace('_', '/', 1), row[key], step)
    writer.flush()


def check_args(parser, args, at_least_one=(), positive=(), non_negative=()) -> None:
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


def explicit_options(parser, argv: Optional[Sequence[str]]) -> set:
    """The option names (dests) given on the command line, as opposed to left at their defaults."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    namespace, _ = probe.parse_known_args(argv)
    return set(vars(namespace))


def json_number(value: float) -> Optional[float]:
    """NaN and infinities are not JSON: a missing measurement is written as null."""
    return value if math.isfinite(value) else None


def run_program(run_dir: str) -> Optional[str]:
    """The script that made a run directory, from its args.json (None without a readable one)."""
    try:
        with open(os.path.join(run_dir, 'args.json')) as f:
            program = json.load(f).get('program')
    except (OSError, ValueError, AttributeError):
        return None
    return program if isinstance(program, str) else None


class StopSignals:
    """While active, SIGTERM and SIGINT (Ctrl-C) only raise a flag, which the training loops poll between
    two steps, so a run stops at a safe point instead of in the middle of a write. Calling the object tells
    whether a stop was requested. The previous handlers come back on exit."""

    def __init__(self, handle_sigterm: bool = True):
        self.received = []
        self.previous = {}
        self.handle_sigterm = handle_sigterm

    def __enter__(self) -> 'StopSignals':
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT) if self.handle_sigterm else (signal.SIGINT,):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received.append(signum)

    def __call__(self) -> bool:
        return bool(self.received)

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received[0]) if self.received else 2

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def add_cudnn_argument(group) -> None:
    group.add_argument('--cudnn_benchmark', action='store_true',
                       help='on CUDA, let cuDNN pick its fastest kernels (cudnn.benchmark) instead of the '
                            "original's deterministic ones: faster, not reproducible bit for bit")


def configure_cudnn(device: torch.device, benchmark: bool) -> None:
    """NOTE (faithful to EvNAS): the original search and training set cudnn.deterministic = True and
    cudnn.benchmark = False; --cudnn_benchmark trades that reproducibility for speed. Nothing to do off CUDA."""
    if device.type == 'cuda':
        torch.backends.cudnn.deterministic = not benchmark
        torch.backends.cudnn.benchmark = benchmark


def mixed_precision(device: torch.device, enabled: bool):
    """(autocast factory, GradScaler or None, name) for --amp: bf16 where the device supports it, else fp16
    with a gradient scaler. Disabled, it is a no-op context and fp32, as in the paper."""
    if not enabled:
        return nullcontext, None, 'fp32'
    if device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        return (functools.partial(torch.autocast, 'cuda', dtype=torch.float16), torch.amp.GradScaler('cuda'),
                'fp16')
    return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16), None, 'bf16'
