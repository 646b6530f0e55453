"""--plan: a few real steps of each phase of a run, measured on its device, and what they say of the whole run
(memory per phase, seconds per step, generation or epoch and in all, the disk it fills), printed as a table;
and where a phase would not fit, which flag to lower and to what. The scripts run the steps; this module times
them, measures them and writes the table."""
import io
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch

from runtime import logs, memory
from runtime.stopping import is_out_of_memory
from utils import UserError

# Of the steps a phase runs, the first builds oneDNN's kernels or cuDNN's plans: it is timed apart.
STEPS = 3
HEADROOM = 0.9  # a suggested batch size leaves a tenth of the device's memory free


class FirstBatches:
    """A loader cut to its first `count` batches (the rest of its interface, its generator included, is the
    loader's own)."""

    def __init__(self, loader: Any, count: int):
        self.loader, self.count = loader, count

    def __iter__(self) -> Iterator:
        for i, batch in enumerate(self.loader):
            if i == self.count:
                return
            yield batch

    def __len__(self) -> int:
        return min(self.count, len(self.loader))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class RandomBatches:
    """`count` batches of random images and labels on `device` (a loader's interface): what --plan measures with
    where a folder dataset such as ImageNet is not at hand yet."""

    def __init__(self, count: int, batch_size: int, image_size: int, num_classes: int, device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.count, self.batch_size, self.num_samples = count, batch_size, count * batch_size
        self.shape, self.num_classes, self.device = (batch_size, 3, image_size, image_size), num_classes, device
        self.memory_format = memory_format

    def __iter__(self) -> Iterator:
        for _ in range(self.count):
            x = torch.randn(self.shape, device=self.device).contiguous(memory_format=self.memory_format)
            yield x, torch.randint(0, self.num_classes, (self.batch_size,), device=self.device)

    def __len__(self) -> int:
        return self.count


@dataclass
class Phase:
    """One measured phase: `steps_per_unit` of its steps make a generation or an epoch on one process (with
    several, what each runs), each of `batch_size` images; `batch_flag` is `shares` times that (the processes
    split each batch of a training step)."""
    name: str
    batch_flag: Optional[str]
    batch_size: int
    steps_per_unit: float
    shares: int = 1
    seconds: List[float] = field(default_factory=list)  # every step, the first one included
    start_mb: Optional[float] = None  # resident (CPU) or reserved (CUDA) memory when the phase began
    peak_mb: Optional[float] = None
    note: str = ''
    changes: str = ''  # how a smaller batch changes what the run computes, where it does

    @property
    def step_seconds(self) -> float:
        later = self.seconds[1:] or self.seconds
        return statistics.median(later) if later else math.nan

    @property
    def increment_mb(self) -> Optional[float]:
        """What the phase added to the memory it began with."""
        return None if self.peak_mb is None or self.start_mb is None else max(self.peak_mb - self.start_mb, 0.)


def measure(phase: Phase, device: torch.device, step: Callable[[int], None], steps: int = STEPS) -> Phase:
    """Run step(i) for i < steps, timing each (synchronised on CUDA) and taking the phase's peak memory."""
    if device.type == 'cuda':
        torch.cuda.empty_cache()  # what earlier phases cached is not this phase's to reuse
    phase.start_mb = _now_mb(device)
    out: Dict[str, float] = {}
    with memory.peak_memory(device, out):
        for i in range(steps):
            _sync(device)
            started = time.perf_counter()
            step(i)
            _sync(device)
            phase.seconds.append(time.perf_counter() - started)
    phase.peak_mb = out.get('peak_mb')
    return phase


def _now_mb(device: torch.device) -> Optional[float]:
    return torch.cuda.memory_reserved(device) / memory.MB if device.type == 'cuda' else memory.resident_mb()


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def serialized_mb(obj: Any) -> float:
    """The size of torch.save(obj): what a checkpoint of it takes on disk."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell() / memory.MB


@dataclass
class Plan:
    """What a run will take, from its measured phases."""
    script: str
    device: torch.device
    world_size: int
    data_note: str       # the dataset, or the random images of its shape that stood in for it
    model_note: str      # parameters and MACs
    unit: str            # 'generation' or 'epoch'
    units: int
    baseline_mb: Optional[float]  # resident memory once the data is loaded (CPU)
    phases: List[Phase]
    per_unit_extra: Dict[str, float] = field(default_factory=dict)  # seconds per unit outside the phases
    checkpoint_mb: float = 0.
    disk_per_unit_mb: float = 0.
    notes: List[str] = field(default_factory=list)

    def unit_seconds(self) -> float:
        return sum(p.step_seconds * p.steps_per_unit for p in self.phases) + sum(self.per_unit_extra.values())

    def peak_mb(self) -> Optional[float]:
        peaks = [p.peak_mb for p in self.phases if p.peak_mb is not None]
        return max(peaks) if peaks else None

    def to_dict(self) -> Dict:
        return {'script': self.script, 'device': str(self.device), 'world_size': self.world_size,
                'device_memory_mb': memory.device_memory_mb(self.device), 'baseline_mb': self.baseline_mb,
                'phases': {p.name: {'batch_size': p.batch_size, 'seconds_per_step': p.step_seconds,
                                    'steps_per_' + self.unit: p.steps_per_unit, 'peak_mb': p.peak_mb,
                                    'start_mb': p.start_mb, 'increment_mb': p.increment_mb} for p in self.phases},
                'seconds_per_' + self.unit: self.unit_seconds(), 'seconds': self.unit_seconds() * self.units,
                'checkpoint_mb': self.checkpoint_mb,
                'disk_mb': self.checkpoint_mb + self.disk_per_unit_mb * self.units, 'peak_mb': self.peak_mb()}

    def advice(self) -> List[str]:
        """For each phase whose peak the device cannot hold: the batch size that would fit, from the phase's
        measured increment (memory grows about linearly with the batch)."""
        total = memory.device_memory_mb(self.device)
        lines = []
        for p in self.phases:
            if total is None or p.peak_mb is None or p.peak_mb <= total * HEADROOM:
                continue
            fits = None
            if p.increment_mb and p.start_mb is not None and p.batch_flag:
                per_image = p.increment_mb / p.batch_size
                fits = int((total * HEADROOM - p.start_mb) / per_image) if per_image > 0 else None
            what = (f"lower {p.batch_flag} to {fits * p.shares} or less" if fits and fits >= 1
                    else "it does not fit at any batch size: a smaller network (--init_channels, --layers) or "
                         "--amp on a GPU")
            change = f" ({p.changes})" if p.changes and fits else ''

            lines.append(f"{p.name} needs {memory.gb(p.peak_mb)} of the {self.device.type}'s "
                         f"{memory.gb(total)}: {what}{change}")
        return lines

    def table(self) -> str:
        total = memory.device_memory_mb(self.device)
        cpu = self.device.type == 'cpu'
        rows = [f"{self.script} --plan on {self.device} ({memory.gb(total)})"
                + (f", one of {self.world_size} torchrun processes: a batch below is one process's share of a "
                   f"training step's" if self.world_size > 1 else ''),
                f"  data: {self.data_note}", f"  model: {self.model_note}"]
        if cpu and self.baseline_mb is not None:
            rows.append(f"  resident once the data is loaded: {memory.gb(self.baseline_mb)}")
        rows += ['', f"  {'phase':<24} {'batch':>6} {'steps/' + self.unit:>16} {'s/step':>8} {'peak':>9} "
                     f"{'above data' if cpu else 'grew by':>11}"]
        for p in self.phases:
            above = (p.peak_mb - self.baseline_mb if cpu and p.peak_mb is not None and self.baseline_mb is not None
                     else p.increment_mb)
            rows.append(f"  {p.name:<24} {p.batch_size:>6} {p.steps_per_unit:>16.0f} {p.step_seconds:>8.3f} "
                        f"{memory.gb(p.peak_mb):>9} {memory.gb(above):>11}" + (f"  {p.note}" if p.note else ''))
        per_unit = self.unit_seconds()
        rows += ['', f"  per {self.unit}: {logs.format_duration(per_unit)}; {self.units} {self.unit}s: "
                     f"{logs.format_duration(per_unit * self.units)}"
                     + (f" (with {self.world_size} processes, assuming each phase's steps divide among them)"
                        if self.world_size > 1 else ''),
                 f"  disk: checkpoint {self.checkpoint_mb:.1f} MB (rewritten each {self.unit}), in all about "
                 f"{self.checkpoint_mb + self.disk_per_unit_mb * self.units:.1f} MB"]
        what = ("peak = the process's resident high-water mark during the phase (VmHWM): it includes the data, the "
                "model and the memory malloc keeps from earlier phases" if cpu else
                f"peak = the caching allocator's reserved peak; the CUDA context and other processes held "
                f"{memory.gb(memory.outside_allocator_mb(self.device))} more of the device")
        rows += [f"  ({what})"] + [f"  {n}" for n in self.notes]
        advice = self.advice()
        rows += [''] + ([f"  does not fit: {line}" for line in advice] if advice else
                        [f"  fits: the largest peak, {memory.gb(self.peak_mb())}, is within "
                         f"{memory.gb(total)}" if total else "  (the device's memory could not be read)"])
        return '\n'.join(rows)


def checked_build(build: Callable[[], Any], what: str) -> Any:
    """build(), with a failure of the sizes (a shape or size the network cannot take) as one UserError line."""
    try:
        return build()
    except (RuntimeError, ValueError, ZeroDivisionError, IndexError) as e:
        if is_out_of_memory(e):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"--plan: {what} cannot be built at these sizes ({first})") from None


