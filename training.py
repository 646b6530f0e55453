"""The epoch loop of training an evaluation network from scratch, and the end of such a run, shared by train.py
(CIFAR, DARTS's recipe) and train_imagenet.py (P-DARTS's recipe): each epoch trains, evaluates, logs one row,
keeps the best and writes the checkpoint; the run ends with summary.json and the lines that say where its
weights are. What the two scripts do differently (the learning-rate schedule, an epoch's training batches, what
a checkpoint holds, what the summary says) they pass in."""
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from engine import Monitor, OptimizerStep, infer, top5_text, train_epoch
from inputs.loaders import Loader
from runtime import devices, logs, memory, stopping
from runtime import plan as run_plan
from runtime.checkpoint import rng_state
from runtime.run_dirs import save_summary


@dataclass(frozen=True)
class EpochPlan:
    """What the epoch loop takes from a script's flags. Epochs count from 1, as the log and the checkpoints do."""
    epochs: int
    drop_path_prob: float    # the probability the last epoch reaches: it grows linearly from 0 (DARTS)
    auxiliary_weight: float  # 0 without the auxiliary tower
    eval_name: str           # 'test' (train.py) or 'valid' (train_imagenet.py): its log column and history keys
    script: str              # a stopped run says how to continue it: python SCRIPT --resume RUN_DIR
    records_drop_path: bool  # train.py's history rows hold each epoch's drop-path probability; ImageNet's never did
    batch_size: int = 0      # --batch_size, named in the line an out-of-memory prints
    processes: int = 1       # --plan N: the torchrun processes that share each batch
    lower: Tuple[str, ...] = ()  # other flags that take less memory


@dataclass
class SchedulerLR:
    """DARTS's CIFAR schedule: a torch scheduler (cosine annealing) stepped after each epoch's training; its state
    is part of the checkpoint."""
    scheduler: torch.optim.lr_scheduler.LRScheduler

    def begin(self, epoch: int) -> float:
        return self.scheduler.get_last_lr()[0]

    def end(self) -> None:
        self.scheduler.step()


@dataclass
class EpochLR:
    """P-DARTS's ImageNet schedule: lr_of(epoch), set on the optimizer before each epoch trains; computed afresh
    every epoch, so there is nothing to checkpoint."""
    optimizer: torch.optim.Optimizer
    lr_of: Callable[[int], float]

    def begin(self, epoch: int) -> float:
        lr = self.lr_of(epoch)
        for group in self.optimizer.param_groups:
            group['lr'] = lr
        return lr

    def end(self) -> None:
        pass


@dataclass
class TrainingRun:
    """What the epochs read and change."""
    model: nn.Module        # the network; its state_dict is what the checkpoints hold
    net: nn.Module          # what a training step calls: the model, or its DDP and/or torch.compile wrapper
    optimize: OptimizerStep
    learning_rate: Union[SchedulerLR, EpochLR]
    train_batches: Callable[[int], Loader]  # the training loader of an epoch
    criterion: nn.Module    # the training loss
    eval_loader: Loader
    eval_criterion: nn.Module
    autocast: Callable
    history: List[Dict]     # one row per completed epoch
    epochs_done: int = 0
    # peak memory per phase (MB) and seconds per epoch over the epochs this process ran (summary.json)
    usage: Dict[str, float] = field(default_factory=dict)


def best_epoch(history: List[Dict], eval_name: str) -> Dict:
    """The row of the first epoch with the highest evaluation top-1."""
    return max(history, key=lambda row: row[f'{eval_name}_top1'])


def train_epochs(run: TrainingRun, plan: EpochPlan, monitor: Monitor, logger: logging.Logger,
                 dist: devices.Distributed, device: torch.device, run_dir: str,
                 write_checkpoint: Callable[[int, List], None]) -> None:
    """Train epochs run.epochs_done + 1 to plan.epochs and evaluate each; after each, rank 0 writes TensorBoard
    scalars and calls write_checkpoint(epoch, every rank's random streams)."""
    name = plan.eval_name
    writer = logs.summary_writer(os.path.join(run_dir, 'runs'), logger) if dist.is_main else None
    timer = logs.Timer()
    start = run.epochs_done
    for epoch in range(start + 1, plan.epochs + 1):
        lr = run.learning_rate.begin(epoch)
        run.model.drop_path_prob = plan.drop_path_prob * (epoch - 1) / plan.epochs
        train_loader = run.train_batches(epoch)
        peaks: Dict[str, Dict] = {'train': {}, name: {}}
        started = time.time()
        with stopping.note_on_stop(epoch - 1, 'epoch', run_dir, plan.script, logger):
            with memory.peak_memory(device, peaks['train']), training_phase(plan, device):
                train_stats = train_epoch(run.net, train_loader, run.criterion, run.optimize, device, monitor,
                                          epoch=epoch, auxiliary_weight=plan.auxiliary_weight, autocast=run.autocast)
            run.learning_rate.end()
            dist.broadcast_buffers(run.model)  # every rank evaluates with rank 0's BatchNorm statistics
            with memory.peak_memory(device, peaks[name]), evaluation_phase(plan, device):
                evaluated = infer(run.model, run.eval_loader, run.eval_criterion, device, autocast=run.autocast,
                                  all_reduce=monitor.all_reduce, epoch=epoch)
        _add_usage(run.usage, peaks, time.time() - started, epoch - start)
        row = {'epoch': epoch, 'lr': lr}
        if plan.records_drop_path:
            row['drop_path_prob'] = run.model.drop_path_prob
        row.update({'train_loss': train_stats['loss'], 'train_top1': train_stats['top1'],
                    f'{name}_loss': evaluated['loss'], f'{name}_top1': evaluated['top1'],
                    f'{name}_top5': evaluated['top5']})
        run.history.append(row)
        run.epochs_done = epoch
        best = best_epoch(run.history, name)
        remaining = timer.remaining(epoch - start, plan.epochs - start)
        logger.info(f"epoch {epoch:3d}/{plan.epochs} | lr {lr:.5f} | train loss {train_stats['loss']:.4f} "
                    f"| train top1 {train_stats['top1']:6.2f} | {name} top1 {evaluated['top1']:6.2f}"
                    f"{top5_text(evaluated, f'{name} top5')} | best {best[f'{name}_top1']:6.2f} "
                    f"| {train_stats['images_per_sec']:.0f} img/s "
                    + ''.join(f"| {phase} peak {memory.gb(peak['peak_mb'])} " for phase, peak in peaks.items()
                              if 'peak_mb' in peak)
                    + f"| eta {logs.format_duration(remaining)}")
        all_rng = dist.gather_object(rng_state())
        if dist.is_main:
            logs.add_scalars(writer, row, ('train_loss', 'train_top1', f'{name}_loss', f'{name}_top1',
                                            f'{name}_top5', 'lr'), epoch)
            with stopping.note_on_stop(epoch - 1, 'epoch', run_dir, plan.script, logger), \
                    stopping.phase('checkpoint', device):
                write_checkpoint(epoch, all_rng)
    if writer is not None:
        writer.close()


def training_phase(plan: EpochPlan, device: torch.device) -> ContextManager:
    """An out-of-memory in the training steps as one line: which flags take less."""
    return stopping.phase('training', device, '--batch_size', plan.batch_size, plan.lower)


def evaluation_phase(plan: EpochPlan, device: torch.device) -> ContextManager:
    """An out-of-memory in the evaluation as one line (it runs with --batch_size too)."""
    return stopping.phase('evaluation', device, '--batch_size', plan.batch_size)


def _add_usage(usage: Dict[str, float], peaks: Dict[str, Dict], seconds: float, epochs: int) -> None:
    """The largest peak of each phase so far, and the mean seconds of an epoch (training and evaluation)."""
    for phase, peak in peaks.items():
        if 'peak_mb' in peak:
            usage[f'{phase}_peak_mb'] = round(max(usage.get(f'{phase}_peak_mb', 0.), peak['peak_mb']), 1)
    usage['seconds_per_epoch'] = round(usage.get('seconds_per_epoch', 0.) + (seconds - usage.get(
        'seconds_per_epoch', 0.)) / max(epochs, 1), 2)


def plan_phases(run: TrainingRun, plan: EpochPlan, device: torch.device, world_size: int,
                steps: int = run_plan.STEPS) -> List[run_plan.Phase]:
    """--plan: a few real training steps and evaluation batches of `run`, measured (training.py's loop, cut to
    one batch per call). `run` is built for one process at one of `world_size` processes' share of each batch,
    so each of them runs 1 / world_size of its loaders' steps."""
    monitor = Monitor()
    train_batches = run.train_batches(1)
    training = run_plan.Phase('training', '--batch_size', plan.batch_size // world_size,
                              len(train_batches) / world_size, shares=world_size,
                              changes='this changes the recipe: scale --learning_rate with the batch')
    evaluation = run_plan.Phase('evaluation', '--batch_size', plan.batch_size // world_size,
                                len(run.eval_loader) / world_size, shares=world_size)
    # Evaluation first: its increment above the built network is then its own, not memory training left behind.
    with evaluation_phase(plan, device):
        run_plan.measure(evaluation, device, lambda i: infer(
            run.model, run_plan.FirstBatches(run.eval_loader, 1), run.eval_criterion, device, autocast=run.autocast),
            steps)
    with training_phase(plan, device):
        run_plan.measure(training, device, lambda i: train_epoch(
            run.net, run_plan.FirstBatches(train_batches, 1), run.criterion, run.optimize, device, monitor, epoch=1,
            auxiliary_weight=plan.auxiliary_weight, autocast=run.autocast), steps)
    return [training, evaluation]


def plan_training(script: str, run: TrainingRun, plan: EpochPlan, device: torch.device, data_note: str,
                  network: str, cost: Dict[str, float], baseline_mb: Optional[float],
                  checkpoint_mb: Callable[[], float], note: str) -> Dict:
    """--plan of a training script: measure `run`'s phases (plan_phases), print the table and return its
    figures. `network` names the architecture and its sizes, `cost` its parameters and MACs; checkpoint_mb()
    sizes the files an epoch writes, once the measured steps have given the optimiser its momentum buffers."""
    world_size = plan.processes
    phases = run_plan.checked_build(lambda: plan_phases(run, plan, device, world_size), 'the network')
    result = run_plan.Plan(script, device, world_size, data_note,
                           f"{network}: {cost['params'] / 1e6:.2f} M parameters, {cost['macs'] / 1e6:.0f} M MACs "
                           f"per image", 'epoch', plan.epochs, baseline_mb, phases, checkpoint_mb=checkpoint_mb(),
                           notes=[note])
    print(result.table())
    return result.to_dict()


def finish(run: TrainingRun, plan: EpochPlan, logger: logging.Logger, dist: devices.Distributed, run_dir: str,
           summarize: Callable[[Dict, Dict], Tuple[Dict, List[str]]]) -> Dict:
    """The end of a run: summarize(best row, last row) gives summary.json (rank 0 writes it) and the closing log
    lines; a run without a completed epoch has neither. Closes the log and returns what the script's main does."""
    history, summary = run.history, {}
    if history:
        summary, lines = summarize(best_epoch(history, plan.eval_name), history[-1])
        summary.update(run.usage)
        if dist.is_main:
            save_summary(run_dir, summary)
        for line in lines:
            logger.info(line)
    logs.close_logger(logger)
    return {'run_dir': run_dir, 'history': history, 'summary': summary}
