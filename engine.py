"""The training and evaluation loops: the two loops of an EvNAS generation (supernet training, fitness of the
population), one epoch of evaluation-network training, evaluation, and their shared parts (tallies of loss
and accuracy, the optimizer step, what a loop reports and polls)."""
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from architect_evolution import Individual
from inputs.loaders import Loader, SeededLoader
from runtime.logs import Timer, format_duration
from runtime.stopping import Stop, StopSignals, with_faults
from utils import count_parameters_in_MB


def topk_correct(logits: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """How many samples have their label among the top-k logits (a device tensor: no host sync)."""
    k = min(k, logits.size(1))
    return logits.topk(k, dim=1).indices.eq(target[:, None]).any(dim=1).sum()


def top5_text(result: Dict[str, float], label: str = 'top5', key: str = 'top5') -> str:
    """' | top5 xx.xx' for a log line, or nothing where top-5 means nothing (fewer than 6 classes)."""
    value = result[key]
    return '' if math.isnan(value) else f" | {label} {value:6.2f}"


class Tally:
    """Sums of loss and top-1/top-5 hits over samples, kept on the device until read. With fewer than 6
    classes top-5 says nothing (with 5 it is 100 %), so it is NaN there and left out of the log lines."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.correct1 = torch.zeros((), dtype=torch.int64, device=device)
        self.correct5 = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0
        self.classes = 0

    def update(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
        n = target.size(0)
        self.loss += loss.detach().float() * n
        self.correct1 += topk_correct(logits, target, 1)
        self.correct5 += topk_correct(logits, target, 5)
        self.count += n
        self.classes = logits.size(1)

    def result(self, all_reduce: Optional[Callable] = None) -> Dict[str, float]:
        """Mean loss and top-1/top-5 accuracy in percent (reading them syncs with the device). With
        `all_reduce` (a distributed run), over the samples of every rank."""
        totals = torch.stack([self.loss.double(), self.correct1.double(), self.correct5.double(),
                              torch.tensor(float(self.count), dtype=torch.float64, device=self.loss.device)])
        if all_reduce is not None:
            totals = all_reduce(totals, 'sum')
        loss, correct1, correct5, count = totals.tolist()
        if count == 0:  # nothing measured (e.g. an individual that got no training step this generation)
            return {'loss': math.nan, 'top1': math.nan, 'top5': math.nan, 'samples': 0}
        return {'loss': loss / count, 'top1': 100. * correct1 / count,
                'top5': 100. * correct5 / count if self.classes > 5 else math.nan, 'samples': int(count)}


def logits_of(output: Union[torch.Tensor, Tuple[torch.Tensor, Any]]) -> torch.Tensor:
    """The main logits of a network output: evaluation networks return (logits, logits_aux)."""
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def infer(model: nn.Module, loader: Loader, criterion: nn.Module, device: torch.device,
          logger: Optional[logging.Logger] = None, report_freq: int = 50, tag: str = 'test',
          autocast: Callable = nullcontext, all_reduce: Optional[Callable] = None, epoch: int = 0) -> Dict[str, float]:
    """Evaluate in eval mode; returns loss, top1, top5 (percent), samples, seconds and images_per_sec.
    With `all_reduce`, each rank evaluates its shard and the totals are summed over ranks. `epoch` names the
    fault point of the tests (test:EPOCH:BATCH)."""
    model.eval()
    tally = Tally(device)
    start = time.time()
    total = len(loader)
    for step, (x, y) in enumerate(with_faults(loader, 'test', epoch)):
        with autocast():
            logits = logits_of(model(x))
            loss = criterion(logits.float(), y)
        tally.update(loss, logits, y)
        if logger is not None and report_freq > 0 and step % report_freq == 0:
            r = tally.result()
            logger.info(f"{tag} {step:04d}/{total:04d} | loss {r['loss']:.4f} | top1 {r['top1']:6.2f}{top5_text(r)}")
    return _timed(tally.result(all_reduce), start)


def test_model(model: nn.Module, loader: Loader, device: torch.device, logger: logging.Logger, report_freq: int,
               tag: str = 'test') -> Dict[str, float]:
    """infer with cross-entropy, the parameter count, and the summary line of the test scripts."""
    result = infer(model, loader, nn.CrossEntropyLoss(), device, logger, report_freq, tag)
    result['params_mb'] = count_parameters_in_MB(model)
    logger.info(f"{tag} | top1 {result['top1']:6.2f}{top5_text(result)} | loss {result['loss']:.4f} "
                f"| params {result['params_mb']:.6f} M | {result['images_per_sec']:.0f} images/s")
    return result


class NonFiniteWatch:
    """Remembers the first step whose loss was not finite, on the device, so the hot loop never syncs;
    `check` (called at report steps) reads it and stops the run."""

    def __init__(self, device: torch.device, where: str):
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.where = where

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad = (self.first_bad < 0) & ~torch.isfinite(loss.detach())
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)

    def check(self, reduce: Optional[Callable] = None) -> None:
        first_bad = self.first_bad if reduce is None else reduce(self.first_bad)
        bad = first_bad.item()  # a host sync
        if bad >= 0:
            raise Stop(f"the training loss became non-finite at {self.where}, step {bad}")


@dataclass
class OptimizerStep:
    """One step of the DARTS recipe from a loss: backward, gradient clipping at grad_clip, the optimizer's
    step; with a GradScaler (fp16 autocast), on the scaled loss and the unscaled gradients."""
    optimizer: torch.optim.Optimizer
    grad_clip: float
    scaler: Optional[torch.amp.GradScaler] = None

    def __post_init__(self) -> None:
        self.parameters = [p for group in self.optimizer.param_groups for p in group['params']]

    def __call__(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()


@dataclass
class Monitor:
    """What a loop reports to and polls: the logger (None: silent), every how many steps, the stop signals,
    and in a distributed run the all-reduce through which every rank agrees on what it reads."""
    logger: Optional[logging.Logger] = None
    report_freq: int = 50
    stop: Optional[StopSignals] = None
    all_reduce: Optional[Callable] = None

    def is_report_step(self, step: int, total: int) -> bool:
        return step % self.report_freq == 0 or step == total - 1

    def max_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.all_reduce is None else self.all_reduce(tensor, 'max')

    def check_stop(self, where: str) -> None:
        """Raise Stop when a signal asked for it; in a distributed run once any rank received one (every rank
        must call this at the same steps)."""
        requested = torch.tensor(int(self.stop is not None and self.stop()))
        if self.max_over_ranks(requested).item():
            code = self.stop.exit_code if self.stop is not None else 2
            what = {130: 'Ctrl-C (SIGINT)', 143: 'SIGTERM'}.get(code, 'a signal on another process')
            raise Stop(f"interrupted by {what} during {where}", code)

    def log(self, message: str) -> None:
        if self.logger is not None:
            self.logger.info(message)


def train_epoch(model: nn.Module, loader: Loader, criterion: nn.Module, optimize: OptimizerStep, device: torch.device,
                monitor: Monitor, *, epoch: int, auxiliary_weight: float = 0.,
                autocast: Callable = nullcontext) -> Dict[str, float]:
    """One epoch of evaluation-network training (DARTS recipe): the loss plus auxiliary_weight times the
    auxiliary head's, then `optimize`. Returns mean loss, top1, top5 and images/s. The stop signals are polled
    at report steps (with several ranks, all of them stop at the same step)."""
    model.train()
    tally = Tally(device)
    watch = NonFiniteWatch(device, f"epoch {epoch}")
    start, total = time.time(), len(loader)
    for step, (x, y) in enumerate(with_faults(loader, 'train', epoch)):
        with autocast():
            logits, logits_aux = model(x)
            loss = criterion(logits.float(), y)
            if logits_aux is not None and auxiliary_weight > 0:
                loss = loss + auxiliary_weight * criterion(logits_aux.float(), y)
        optimize(loss)
        tally.update(loss, logits, y)
        watch.update(loss, step)
        if monitor.is_report_step(step, total):
            watch.check(monitor.max_over_ranks)
            monitor.check_stop(f"epoch {epoch}, step {step}")
            r = tally.result(monitor.all_reduce)
            monitor.log(f"epoch {epoch:3d} | train {step:4d}/{total:4d} | loss {r['loss']:.4f} | top1 {r['top1']:6.2f}"
                        f"{top5_text(r)} | {r['samples'] / max(time.time() - start, 1e-9):6.0f} img/s")
    return _timed(tally.result(monitor.all_reduce), start)


def _timed(result: Dict[str, float], start: float) -> Dict[str, float]:
    result['seconds'] = time.time() - start
    result['images_per_sec'] = result['samples'] / max(result['seconds'], 1e-9)
    return result


# ----------------------------------------------------------------------------------------------------------
# The two loops of an EvNAS generation (Sinha & Chen, GECCO 2021, Alg. 1)

def train_generation(supernet: nn.Module, decoded: Sequence[List[torch.Tensor]], loader: Loader,
                     optimize: OptimizerStep, monitor: Monitor, *, generation: int, net: Optional[nn.Module] = None,
                     autocast: Callable = nullcontext) -> List[Dict[str, float]]:
    """One epoch of supernet training: step i trains the decoded architecture of individual i mod pop_size.
    Returns each individual's training loss and accuracy over its steps (over all ranks). `net` is the module
    to call: the supernet itself (default), or its DistributedDataParallel and/or torch.compile wrapper."""
    net = supernet if net is None else net
    supernet.train()
    device = next(supernet.parameters()).device
    tallies = [Tally(device) for _ in decoded]
    watch = NonFiniteWatch(device, f"generation {generation}")
    start, total, batch_size = time.time(), len(loader), loader.batch_size
    for step, (x, y) in enumerate(with_faults(loader, 'train', generation)):
        i = step % len(decoded)
        supernet.set_arch_parameters(decoded[i])
        with autocast():
            logits = net(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
        optimize(loss)
        tallies[i].update(loss, logits, y)
        watch.update(loss, step)
        report = monitor.is_report_step(step, total)
        if report:
            watch.check(monitor.max_over_ranks)
            rate = (step + 1) * batch_size / max(time.time() - start, 1e-9)
            monitor.log(f"gen {generation:3d} | train {step:4d}/{total:4d} | individual {i:3d} "
                        f"| loss {loss.item():.4f} | {rate:6.0f} img/s")
        if report or monitor.all_reduce is None:  # a single process can afford to look at every step
            monitor.check_stop(f"generation {generation}, training step {step}")
    return [t.result(monitor.all_reduce) for t in tallies]


@torch.no_grad()
def evaluate_population(supernet: nn.Module, population: Sequence[Individual], decoded: Sequence[List[torch.Tensor]],
                        loader: SeededLoader, seeds: Sequence[int], monitor: Monitor, *, generation: int, rank: int = 0,
                        world_size: int = 1, net: Optional[nn.Module] = None, autocast: Callable = nullcontext,
                        train_mode: bool = True, prepare: Optional[Callable[[nn.Module], None]] = None) -> None:
    """Set every individual's fitness, loss and top5: the top-1 accuracy (%) of its decoded architecture on
    the held-out images. A non-finite loss makes the fitness NaN, which ranks below every measured individual.
    train_mode: BatchNorm as in training (the DARTS space) or in eval mode (NAS-Bench-201). prepare(supernet), when
    given, runs after each individual's alphas are set and leaves the supernet in the mode to score in
    (fitness.py's BatchNorm recalibration).

    Individual i draws its batch order and augmentation from seeds[i], so its fitness does not depend on which
    process measures it: with several ranks, rank r measures individuals r, r + N, ... and the results are then
    shared, so every rank holds every fitness.
    """
    net = supernet if net is None else net
    # NOTE (faithful to EvNAS): in the DARTS space the supernet stays in train mode, so BatchNorm normalises
    # with the statistics of each fitness batch (1024 images by default), not with running averages, and the
    # held-out images carry the training augmentation. The fitness values of the paper depend on both. Its
    # NAS-Bench-201 search measures fitness in eval mode (search_space.py says which).
    supernet.train(train_mode)
    device = next(supernet.parameters()).device
    timer = Timer()
    mine = range(rank, len(population), world_size)
    measured = torch.zeros(len(population), 3, dtype=torch.float64)
    for done, i in enumerate(mine, 1):
        supernet.set_arch_parameters(decoded[i])
        if prepare is not None:
            prepare(supernet)
        loader.generator.manual_seed(int(seeds[i]))
        tally = Tally(device)
        for x, y in with_faults(loader, 'eval', generation, step=i):
            with autocast():
                logits = net(x).float()
            tally.update(nn.functional.cross_entropy(logits, y), logits, y)
            if monitor.all_reduce is None:
                monitor.check_stop(f"generation {generation}, fitness of individual {i}")
        result = tally.result()
        fitness = result['top1'] if math.isfinite(result['loss']) else math.nan
        measured[i] = torch.tensor([fitness, result['loss'], result['top5']], dtype=torch.float64)
        monitor.log(f"gen {generation:3d} | fitness {i + 1:3d}/{len(population):3d} | top1 {fitness:6.2f} "
                    f"| loss {result['loss']:.4f} | eta {format_duration(timer.remaining(done, len(mine)))}")
    if monitor.all_reduce is not None:
        monitor.check_stop(f"generation {generation}, fitness evaluation")
        measured = monitor.all_reduce(measured, 'sum').cpu()  # each row is non-zero on one rank
    for individual, (fitness, loss, top5) in zip(population, measured.tolist()):
        individual.fitness, individual.loss, individual.top5 = fitness, loss, top5
