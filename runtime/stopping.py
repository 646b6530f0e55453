"""How a script stops: a stop requested by SIGTERM or Ctrl-C taken at the next safe point, an allocation that
failed (out of memory), the note that says where it stopped and how to continue, and run_main, which turns a
user error or a stop into one line on stderr and the exit status."""
import argparse
import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch

from runtime import memory
from utils import UserError


class Stop(Exception):
    """A run that must end before it completes: a signal, or a diverged loss. Its last checkpoint is intact.
    `exit_code` is 128 + the signal number for a signal (the shell's convention), 2 otherwise."""
    every_rank = False  # under torchrun every rank stops alike, so rank 0 alone says so

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


# What the messages of an allocation failure contain, in every form torch raises one: its OutOfMemoryError
# ("CUDA out of memory"), "CUDA error: out of memory", the CPU allocator's "DefaultCPUAllocator: can't allocate
# memory", cuBLAS/cuDNN's ALLOC_FAILED statuses and "std::bad_alloc" from C++.
_SIGNS = ('out of memory', "can't allocate memory", 'cannot allocate memory', 'alloc_failed', 'bad_alloc',
          'not_enough_memory')


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    oom = getattr(torch, 'OutOfMemoryError', None) or getattr(torch.cuda, 'OutOfMemoryError', None)
    if oom is not None and isinstance(error, oom):
        return True
    return isinstance(error, RuntimeError) and any(sign in str(error).lower() for sign in _SIGNS)


class OutOfMemory(Stop):
    """An allocation failed: the run stops (status 2) with its last checkpoint intact. Unlike other stops it
    happens on one rank of a torchrun job, so run_main prints it on the rank where it happened."""
    every_rank = True


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
def note_on_stop(done: int, unit: str, run_dir: str, script: str, logger: logging.Logger) -> Iterator[None]:
    """A Stop raised inside the block comes out saying where the run stands and how to continue it."""
    try:
        yield
    except Stop as e:
        raise type(e)(stopped_note(str(e), done, unit, run_dir, script, logger), e.exit_code) from None


def run_main(main: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """Run a script's main(args), turning a UserError or a Stop into one line on stderr and an exit status.
    Under torchrun every rank stops alike, so only rank 0 says so."""
    try:
        main(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except Stop as e:
        rank = os.environ.get('RANK', '0')
        if e.every_rank or rank == '0':
            where = f" (rank {rank})" if 'WORLD_SIZE' in os.environ else ''
            print(f"stopped{where}: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except (RuntimeError, MemoryError) as e:  # out of memory outside the phases that name themselves
        if not is_out_of_memory(e) and _peer_ended(e):
            # Under torchrun, a collective fails on the ranks left when another ends (out of memory, a user error):
            # that rank's own line says why, and torchrun stops the job.
            print(f"stopped (rank {os.environ.get('RANK', '0')}): another process of the job ended first "
                  f"({_first_line(e)})", file=sys.stderr, flush=True)
            return 1
        if not is_out_of_memory(e):
            raise
        reached = memory.gb(memory.reached_mb(torch.device('cpu')))
        print(f"out of memory: {_first_line(e)} (the process reached {reached} resident); python {_script()} "
              f"--plan shows what each phase needs", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the training loops watch for it: reading data, building
        print("stopped: interrupted by Ctrl-C (SIGINT) before the first step; nothing was saved", file=sys.stderr,
              flush=True)
        return 128 + signal.SIGINT
    return 0


@contextmanager
def phase(name: str, device: torch.device, batch_flag: Optional[str] = None, batch_size: Optional[int] = None,
          lower: Sequence[str] = (), caveat: str = '') -> Iterator[None]:
    """An allocation failure inside the block comes out as OutOfMemory, one line: the phase, its batch size,
    the device's memory and the peak reached, and what to lower (`batch_flag` to half its value, then the
    flags in `lower`; `caveat` says what a smaller batch changes)."""
    try:
        yield
    except OutOfMemory:
        raise
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        raise OutOfMemory(describe(name, device, batch_flag, batch_size, lower, caveat)) from None


def describe(name: str, device: torch.device, batch_flag: Optional[str], batch_size: Optional[int],
             lower: Sequence[str], caveat: str = '') -> str:
    if device.type == 'cuda':
        torch.cuda.empty_cache()  # what the failed step held is free again; the peak below is what it reached
    batch = f" at {batch_flag} {batch_size}" if batch_flag and batch_size else ''
    fixes = ([f"{batch_flag} {max(batch_size // 2, 1)}"] if batch_flag and batch_size and batch_size > 1 else [])
    fixes += list(lower)
    advice = (f"; a new run takes less with {' or '.join(fixes)}" + (f" ({caveat})" if caveat else '')
              if fixes else '')
    has, reached = memory.gb(memory.device_memory_mb(device)), memory.gb(memory.reached_mb(device))
    return (f"out of memory in the {name}{batch}: the {device.type} has {has}, the process reached {reached}"
            f"{advice} (python {_script()} --plan shows what each phase needs)")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _peer_ended(error: BaseException) -> bool:
    """A collective that failed because another process of a torchrun job is gone."""
    if int(os.environ.get('WORLD_SIZE', '1')) < 2:
        return False
    network_error = getattr(torch.distributed, 'DistNetworkError', None)
    if network_error is not None and isinstance(error, network_error):
        return True
    return isinstance(error, RuntimeError) and any(
        sign in str(error).lower() for sign in ('connection closed by peer', 'connection reset by peer'))


def _script() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0].endswith('.py') else 'SCRIPT.py'


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

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _spec() -> Optional[str]:
    spec = os.environ.get('EVNAS_FAULT')
    if not spec:
        return None
    # Under torchrun: only in the rank EVNAS_FAULT_RANK names, and never again after an elastic restart.
    rank = os.environ.get('RANK', '0')
    if os.environ.get('EVNAS_FAULT_RANK', rank) != rank or os.environ.get('TORCHELASTIC_RESTART_COUNT', '0') != '0':
        return None
    return spec


def fault_point(point: str, generation: int = -1, step: int = -1) -> Optional[str]:
    """Fire the fault EVNAS_FAULT names if it names this point; returns its action (None: no fault here)."""
    spec = _spec()
    if spec is None:
        return None
    action, _, where = spec.partition('@')
    name, *numbers = where.split(':')
    if name != point or any(int(n) != have for n, have in zip(numbers, (generation, step))):
        return None
    if action == 'oom':  # as the CPU allocator says it
        raise RuntimeError(f"DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes "
                           f"(injected by EVNAS_FAULT at {point})")
    if action in ('kill', 'term', 'int'):
        os.kill(os.getpid(), {'kill': signal.SIGKILL, 'term': signal.SIGTERM, 'int': signal.SIGINT}[action])
        if action == 'kill':
            time.sleep(60)  # SIGKILL arrives asynchronously on some systems; never run past the fault
    return action


def with_faults(batches: Iterable, point: str, generation: int, step: Optional[int] = None) -> Iterable:
    """`batches` as they are, or, while EVNAS_FAULT is set, the same batches with fault_point called as each
    is drawn, at the batch's index (or at `step` for every batch); a `nan` fault makes that batch's images NaN."""
    if _spec() is None:
        return batches
    return _faulty(batches, point, generation, step)


def _faulty(batches: Iterable, point: str, generation: int, step: Optional[int]) -> Iterator:
    for index, (x, y) in enumerate(batches):
        if fault_point(point, generation, index if step is None else step) == 'nan':
            x = torch.full_like(x, float('nan'))
        yield x, y
