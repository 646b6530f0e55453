"""Settings: what each part of a run reads of its command line, as small frozen objects.

The scripts turn their arguments into these (`search_arguments.search_settings`, `arguments.run_settings`),
and the code below the scripts takes the one it uses, or plain values, never the argparse namespace: the
signature of a function says which flags can change what it does. Defaults that depend on the search space
are resolved by the space (search_space.py) and returned; args.json and checkpoints record the resolved
arguments as before.
"""
from dataclasses import asdict, dataclass, replace
from typing import Optional

import torch


@dataclass(frozen=True)
class SupernetSettings:
    """What builds the supernet: its width, and its depth in either space (DARTS: --layers cells;
    NAS-Bench-201: --num_cells per stage of --max_nodes nodes, with or without --track_running_stats)."""
    init_channels: int = 16
    layers: int = 8
    num_cells: int = 5
    max_nodes: int = 4
    track_running_stats: bool = False


@dataclass(frozen=True)
class DataSettings:
    """The search's images: which dataset, where, at what size, and the share that trains the supernet (the
    rest measures fitness; NAS-Bench-201's CIFAR and ImageNet16-120 use the benchmark's split files)."""
    dataset: str = 'cifar10'
    data: str = '../data'
    image_size: int = 32
    synthetic_size: int = 2000
    train_portion: float = 0.5


@dataclass(frozen=True)
class LoaderSettings:
    """How batches are drawn: the pipeline, the batch sizes of training and fitness, the fixed --valid_size
    subset of the held-out images (None: all), and the seed every loader's generator derives from."""
    loader: str = 'tensor'
    num_workers: int = 2
    batch_size: int = 64
    valid_batch_size: int = 1024
    valid_size: Optional[int] = None
    seed: int = 18


@dataclass(frozen=True)
class Recipe:
    """The supernet's optimiser and schedule: SGD from --learning_rate, cosine down to --learning_rate_min."""
    learning_rate: float = 0.025
    learning_rate_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.


@dataclass(frozen=True)
class BudgetSettings:
    """--max_params and --max_macs (millions; None: no limit) at --budget_size, and --max_latency (ms) predicted
    from --latency_table (a new run's file, a resumed run's copy)."""
    max_params: Optional[float] = None
    max_macs: Optional[float] = None
    size: str = 'cifar'
    max_latency: Optional[float] = None
    latency_table: Optional[str] = None
    latency_table_sha256: Optional[str] = None  # recorded when the command line was read

    @property
    def limited(self) -> bool:
        return self.max_params is not None or self.max_macs is not None or self.max_latency is not None


@dataclass(frozen=True)
class Evolution:
    """The search loop: --strategy (the GA, or every generation drawn afresh as the first), --epochs generations
    of --pop_size individuals, and the GA's --tsize, --num_elites and --mutate_rate."""
    strategy: str = 'evolution'
    generations: int = 50  # the original's --epochs
    pop_size: int = 50
    # the GA's alone (the random strategy refuses them): tournament size, elites, mutation rate per edge row
    tsize: int = 10
    num_elites: int = 1
    mutate_rate: float = 0.1


@dataclass(frozen=True)
class Compute:
    """How a search's steps run on its device: --paper_exact (else the device's fast defaults), --amp,
    --compile, --compile_fitness and --sync_bn (CUDA only: SyncBatchNorm has no CPU implementation)."""
    paper_exact: bool = False
    amp: bool = False
    compile: bool = False
    compile_fitness: bool = False
    sync_bn: bool = False


@dataclass(frozen=True)
class RunSettings:
    """Where a run lives and on what: --device, and --resume RUN_DIR, or --run_dir, or a new directory named by
    the script under `parent` (--dir; None: the current directory)."""
    device: str = 'auto'
    resume: Optional[str] = None
    run_dir: Optional[str] = None
    parent: Optional[str] = None


@dataclass(frozen=True)
class Augment:
    """The training augmentation: random crop with zero padding, horizontal flip, and (when cutout_length > 0)
    cutout (inputs/augmentation.py applies it)."""
    padding: int = 4
    flip: bool = True
    cutout_length: int = 0


@dataclass(frozen=True)
class SpeedConfig:
    """Which fast implementation each layer gets (speed/__init__.py chooses them per device; all off is the
    paper-exact computation)."""
    fused_mixed_op: bool = False
    channels_last: bool = False
    phase_split_dilated: bool = False
    narrow_batchnorm: bool = False
    box_filter_avg_pool: bool = False
    reuse_freed_memory: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        on = [name for name, value in asdict(self).items() if value]
        return ', '.join(on) if on else 'paper-exact (none)'

    def without(self, *names: str) -> 'SpeedConfig':
        """This setting with the named flags off."""
        return replace(self, **{name: False for name in names})
