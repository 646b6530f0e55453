"""The evaluation loop shared by the test scripts and the training scripts."""
import logging
import math
import time
from contextlib import nullcontext
from typing import Callable, Dict, Iterable, Optional

import torch
import torch.nn as nn

from utils import Stop, fault_point


def topk_correct(logits: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """How many samples have their label among the top-k logits (a device tensor: no host sync)."""
    k = min(k, logits.size(1))
    return logits.topk(k, dim=1).indices.eq(target[:, None]).any(dim=1).sum()


class Tally:
    """Sums of loss and top-1/top-5 hits over samples, kept on the device until read."""

    def __init__(self, device):
        self.loss = torch.zeros((), device=device)
        self.correct1 = torch.zeros((), dtype=torch.int64, device=device)
        self.correct5 = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0

    def update(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
        n = target.size(0)
        self.loss += loss.detach().float() * n
        self.correct1 += topk_correct(logits, target, 1)
        self.correct5 += topk_correct(logits, target, 5)
        self.count += n

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
        return {'loss': loss / count, 'top1': 100. * correct1 / count, 'top5': 100. * correct5 / count,
                'samples': int(count)}


def logits_of(output) -> torch.Tensor:
    """The main logits of a network output: evaluation networks return (logits, logits_aux)."""
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def infer(model: nn.Module, loader: Iterable, criterion: nn.Module, device, logger: Optional[logging.Logger] = None,
          report_freq: int = 50, tag: str = 'test', autocast: Callable = nullcontext,
          all_reduce: Callable = None) -> Dict[str, float]:
    """Evaluate in eval mode; returns loss, top1, top5 (percent), samples, seconds and images_per_sec.
    With `all_reduce`, each rank evaluates its shard and the totals are summed over ranks."""
    model.eval()
    tally = Tally(device)
    start = time.time()
    total = len(loader)
    for step, (x, y) in enumerate(loader):
        with autocast():
            logits = logits_of(model(x))
            loss = criterion(logits.float(), y)
        tally.update(loss, logits, y)
        if logger is not None and report_freq > 0 and step % report_freq == 0:
            r = tally.result()
            logger.info(f"{tag} {step:04d}/{total:04d} | loss {r['loss']:.4f} | top1 {r['top1']:6.2f} "
                        f"| top5 {r['top5']:6.2f}")
    result = tally.result(all_reduce)
    result['seconds'] = time.time() - start
    result['images_per_sec'] = result['samples'] / max(result['seconds'], 1e-9)
    return result


class NonFiniteWatch:
    """Remembers the first step whose loss was not finite, on the device, so the hot loop never syncs;
    `check` (called at report steps) reads it and stops the run."""

    def __init__(self, device, where: str):
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.where = where

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad = (self.first_bad < 0) & ~torch.isfinite(loss.detach())
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)

    def check(self, reduce: Callable = None) -> None:
        first_bad = self.first_bad if reduce is None else reduce(self.first_bad)
        bad = first_bad.item()  # a host sync
        if bad >= 0:
            raise Stop(f"the training loss became non-finite at {self.where}, step {bad}")


def train_epoch(model: nn.Module, loader: Iterable, optimizer, criterion: nn.Module, device, *, epoch: int,
                grad_clip: float, auxiliary_weight: float = 0., logger: Optional[logging.Logger] = None,
                report_freq: int = 50, autocast: Callable = nullcontext, scaler=None, stop=None,
                all_reduce: Callable = None) -> Dict[str, float]:
    """One epoch of evaluation-network training (DARTS recipe): main loss plus auxiliary_weight times the
    auxiliary head's loss, gradient clipping, SGD step. Returns mean loss, top1, top5 and images/s.

    `stop` (a utils.StopSignals) is polled at report steps. With `all_reduce` (a distributed run) those
    checks agree across ranks, so every rank stops at the same step.
    """
    model.train()
    tally = Tally(device)
    watch = NonFiniteWatch(device, f"epoch {epoch}")
    start, total = time.time(), len(loader)
    for step, (x, y) in enumerate(loader):
        with autocast():
            logits, logits_aux = model(x)
            loss = criterion(logits.float(), y)
            if logits_aux is not None and auxiliary_weight > 0:
                loss = loss + auxiliary_weight * criterion(logits_aux.float(), y)
        if fault_point('nan', epoch, step) == 'nan':
            loss = loss * float('nan')
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        tally.update(loss, logits, y)
        watch.update(loss, step)
        fault_point('train', epoch, step)
        if step % report_freq == 0 or step == total - 1:
            watch.check(all_reduce and (lambda t: all_reduce(t, 'max')))
            requested = torch.tensor(int(stop is not None and stop()), device=device)
            if (all_reduce(requested, 'max') if all_reduce else requested).item():
                raise Stop(f"stopped by signal during epoch {epoch}, step {step}",
                           stop.exit_code if stop is not None else 2)
            r = tally.result(all_reduce)
            if logger is not None:
                rate = r['samples'] / max(time.time() - start, 1e-9)
                logger.info(f"epoch {epoch:3d} | train {step:4d}/{total:4d} | loss {r['loss']:.4f} "
                            f"| top1 {r['top1']:6.2f} | top5 {r['top5']:6.2f} | {rate:6.0f} img/s")
    result = tally.result(all_reduce)
    result['seconds'] = time.time() - start
    result['images_per_sec'] = result['samples'] / max(result['seconds'], 1e-9)
    return result
