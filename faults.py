"""Test-only fault injection at the boundaries of a run (its loaders and its checkpoint writes), off unless
EVNAS_FAULT is set. tests/test_faults.py kills, stops and poisons runs with it at exact moments.

EVNAS_FAULT='ACTION@POINT[:GENERATION[:STEP]]' fires at the named point: ACTION `kill` sends SIGKILL to this
process (a crash no handler can see), `term` SIGTERM, `int` SIGINT (Ctrl-C); `nan` makes the batch drawn
there all NaN (in fitness that also makes the supernet's running BatchNorm statistics NaN, which nothing
of the search reads: it trains and measures with batch statistics). POINT is `train` (a training loop
draws batch STEP of generation or epoch GENERATION), `eval` (the fitness loop draws a batch of individual
STEP), `evolve` (the search is about to checkpoint GENERATION) or `write` (a checkpoint of GENERATION is half
written).
"""
import os
import signal
import time
from typing import Iterable, Iterator, Optional

import torch


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
