"""Fitness estimators: how the supernet scores the individuals of a population.

The original EvNAS estimator is the default of every script. The others are opt-in, as search flags and as
`trust.py --estimators`, which scores them on the same sample and reference:

- `original` (the default): each individual its own batch order and augmentation draws. DARTS space:
  BatchNorm in train mode (each fitness batch's own statistics), held-out images with the training
  augmentation. NAS-Bench-201: eval mode (running statistics where the BatchNorms track them, else each
  batch's), the test transform.
- `shared` (`--fitness_data shared`): every individual of a generation on the same batches with the same
  augmentation draws (common random numbers), in both spaces.
- `recalibrate` (`--fitness_bn recalibrate`): each individual's BatchNorm statistics recomputed from the same
  R training batches (cumulative averages, no gradients), then scored in eval mode. In NAS-Bench-201 only the
  BatchNorms that track statistics have any: all with `--track_running_stats`, else the stem, the residual
  blocks and the last one (the cells' then always normalise with the batch's own).
- `no_augment` (`--fitness_augment none`): DARTS space, the held-out images without augmentation (BatchNorm
  still in train mode); NAS-Bench-201 never augments fitness images, so nothing changes there.
- `bf16` (`--fitness_dtype bf16`): the fitness forward under bfloat16 autocast (float16 on GPUs without
  bfloat16), for speed where fitness dominates a generation; the training steps keep their precision (--amp).

The flags combine (e.g. shared draws and recalibrated statistics). `recalibrate` puts back the BatchNorm
statistics it replaced once the population is scored, so that supernet training continues as it would have.
"""
import argparse
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn

from architect_evolution import Individual
from engine import Monitor, evaluate_population
from inputs.data import ImageArray, SearchData
from inputs.loaders import SeededLoader, make_loader
from runtime.devices import mixed_precision
from runtime.settings import Augment, LoaderSettings, SpeedConfig
from search_space import SearchSpace
from utils import make_generator

DATA_CHOICES, BN_CHOICES, AUGMENT_CHOICES = ('own', 'shared'), ('original', 'recalibrate'), ('original', 'none')
DTYPE_CHOICES = ('float32', 'bf16')
RECALIBRATION_BATCHES = 10


@dataclass(frozen=True)
class Estimator:
    data: str = 'own'          # own | shared
    bn: str = 'original'       # original | recalibrate
    augment: str = 'original'  # original | none
    recalibration_batches: int = RECALIBRATION_BATCHES
    dtype: str = 'float32'     # float32 (or --amp's, as the training steps) | bf16

    def describe(self) -> str:
        changes = [text for changed, text in ((self.data == 'shared', 'shared draws'),
                                              (self.bn == 'recalibrate', f'BatchNorm recalibrated on '
                                                                         f'{self.recalibration_batches} batches'),
                                              (self.augment == 'none', 'no augmentation'),
                                              (self.dtype == 'bf16', 'bf16')) if changed]
        return ', '.join(changes) if changes else "the original's"


ESTIMATORS = {'original': Estimator(), 'shared': Estimator(data='shared'), 'recalibrate': Estimator(bn='recalibrate'),
              'no_augment': Estimator(augment='none'), 'bf16': Estimator(dtype='bf16')}


def add_estimator_arguments(group: argparse._ActionsContainer) -> None:
    """The search's flags of the estimator (this module's table)."""
    group.add_argument('--fitness_data', choices=DATA_CHOICES, default='own',
                       help='own: each individual its own batch order and augmentation draws (EvNAS); shared: the '
                            'same for every individual of a generation (common random numbers) (default: own)')
    group.add_argument('--fitness_bn', choices=BN_CHOICES, default='original',
                       help='original: BatchNorm as EvNAS (darts: each fitness batch\'s statistics; nb201: eval mode); '
                            'recalibrate: each individual\'s BatchNorm statistics recomputed from the same '
                            '--fitness_bn_batches training batches, then eval mode (default: original)')
    group.add_argument('--fitness_bn_batches', type=int, default=RECALIBRATION_BATCHES,
                       help=f"training batches of --fitness_bn recalibrate (default: {RECALIBRATION_BATCHES})")
    group.add_argument('--fitness_dtype', choices=DTYPE_CHOICES, default='float32',
                       help='float32: fitness in the precision of the training steps (EvNAS: float32; --amp: its); '
                            'bf16: fitness under bfloat16 autocast (float16 on GPUs without it) (default: float32)')
    group.add_argument('--fitness_augment', choices=AUGMENT_CHOICES, default='original',
                       help='original: darts fitness images carry the training augmentation (EvNAS); none: no '
                            'augmentation (nb201 never augments them) (default: original)')


def draw_seeds(estimator: Estimator, generator: torch.Generator, n: int) -> List[int]:
    """The fitness seed of each of n individuals (its batch order and augmentation draws).

    NOTE (faithful to EvNAS): by default each individual draws its own (the original's fitness loader runs a
    fresh SubsetRandomSampler pass per individual). `shared` draws as many numbers and uses the first for all,
    so the generator advances the same way under either.
    """
    seeds = torch.randint(0, 2 ** 62, (n,), generator=generator).tolist()
    return [seeds[0]] * n if estimator.data == 'shared' else seeds


def scored(alphas: Sequence[torch.Tensor]) -> Individual:
    """An individual to be scored (its fitness NaN until measured)."""
    return Individual([a.clone() for a in alphas])


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Sequence[torch.Tensor], net: Optional[nn.Module] = None) -> None:
    """Recompute the running statistics of every BatchNorm that tracks them as the cumulative average over
    `batches` (train mode, no gradients), then leave the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: a cumulative moving average, every batch weighted equally
    model.train()
    for x in batches:
        (net or model)(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def fitness_loader(settings: LoaderSettings, data: SearchData, valid_data: ImageArray, device: torch.device,
                   config: SpeedConfig) -> SeededLoader:
    """The loader of the images fitness is measured on: the held-out images (or a fixed --valid_size subset of
    them, the same for the whole run, so that fitness values of different generations compare), batches of
    --valid_batch_size, each pass in a fresh random order (EvNAS's SubsetRandomSampler) with the space's
    augmentation. evaluate_population reseeds its generator for every individual. `valid_data`: data.valid, or
    its copy on the device."""
    valid_indices, valid_size = data.valid_indices, settings.valid_size
    if valid_size is not None and valid_size < len(valid_indices):
        chosen = torch.randperm(len(valid_indices), generator=make_generator(settings.seed + 2))[:valid_size]
        valid_indices = valid_indices[chosen.sort().values]
    return make_loader(settings.loader, valid_data, settings.valid_batch_size, device, valid_indices, shuffle=True,
                       augment=data.valid_augment, generator=make_generator(settings.seed + 3),
                       num_workers=settings.num_workers, memory_format=config.memory_format)


class FitnessMeasure:
    """Scores a population with one estimator: the fitness loader (the space's held-out images, batches and
    augmentation, or none), the BatchNorm mode, and for `recalibrate` the R training batches, drawn once with
    the training augmentation (`train_augment`) and used for every individual."""

    def __init__(self, estimator: Estimator, settings: LoaderSettings, data: SearchData, device: torch.device,
                 config: SpeedConfig, space: SearchSpace, train_augment: Augment,
                 valid_data: Optional[ImageArray] = None, train_data: Optional[ImageArray] = None):
        self.estimator, self.space = estimator, space
        if estimator.augment == 'none' and data.valid_augment is not None:
            data = replace(data, valid_augment=None)
        self.augmented = data.valid_augment is not None
        self.loader = fitness_loader(settings, data, data.valid if valid_data is None else valid_data, device,
                                     config)
        self.train_mode = space.fitness_train_mode and estimator.bn == 'original'
        self.batches: List[torch.Tensor] = []
        if estimator.bn == 'recalibrate':
            generator = make_generator(settings.seed + 4)
            loader = make_loader(settings.loader, data.train if train_data is None else train_data,
                                 settings.batch_size, device, data.train_indices, shuffle=True, augment=train_augment,
                                 generator=generator, num_workers=settings.num_workers,
                                 memory_format=config.memory_format)
            for x, _ in loader:
                if len(self.batches) == estimator.recalibration_batches:
                    break
                self.batches.append(x)

    def __call__(self, supernet: nn.Module, population: Sequence[Individual], seeds: Sequence[int], monitor: Monitor,
                 generation: int, decoded: Optional[Sequence[List[torch.Tensor]]] = None, rank: int = 0,
                 world_size: int = 1, net: Optional[nn.Module] = None,
                 autocast: Optional[Callable] = None) -> None:
        """Set every individual's fitness, loss and top5 (engine.evaluate_population)."""
        if decoded is None:
            device = next(supernet.parameters()).device
            decoded = [[a.to(device) for a in self.space.decode(ind.alphas)] for ind in population]
        prepare = None
        saved = None
        if self.batches:
            saved = {k: v.clone() for k, v in supernet.state_dict().items() if 'running' in k or 'num_batches' in k}
            prepare = lambda model: recalibrate_batchnorm(model, self.batches, net)  # noqa: E731
        if self.estimator.dtype == 'bf16':
            # --amp's autocast: bf16, or fp16 on GPUs without it (no scaler needed: nothing flows back)
            autocast = mixed_precision(next(supernet.parameters()).device, True)[0]
        kwargs = {} if autocast is None else {'autocast': autocast}
        try:
            evaluate_population(supernet, population, decoded, self.loader, seeds, monitor, generation=generation,
                                rank=rank, world_size=world_size, net=net, train_mode=self.train_mode,
                                prepare=prepare, **kwargs)
        finally:
            if saved is not None:
                supernet.load_state_dict(saved, strict=False)
