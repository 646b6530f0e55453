"""Small helpers every script shares: errors, stopping, devices, seeding, logging, argument checks."""
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


def add_scalars(writer, row: dict, keys: Sequence[str], step: int) -> None:
    """row[key] for each key to TensorBoard as 'train_loss' -> train/loss (nothing without a writer)."""
    if writer is None:
        return
    for key in keys:
        if not (isinstance(row[key], float) and math.isnan(row[key])):  # top-5 of fewer than 6 classes
            writer.add_scalar(key.replace('_', '/', 1), row[key], step)
    writer.flush()


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
