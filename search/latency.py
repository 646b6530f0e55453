"""Latency budgets (--max_latency): a table of latencies measured on the target, part by part, and a
network's latency predicted from it (the per-operation tables of FBNet and ProxylessNAS).

An evaluation network of either space is a fixed skeleton (the stem, each cell's preprocessing,
NAS-Bench-201's residual reductions, the head) and one operation on each edge of each cell. `network_parts`
lists the parts a network runs, in the order its forward runs them, each named by what it computes and the
shape it reads ('sep_conv_3x3 s2 72x32x32'); `all_parts` lists every part any architecture of the space can
run at that size, which is what latency_table.py measures on the target. A table holds each part's median
latency, and a per-cell overhead fitted on whole networks measured when the table was built: what a sum of
parts timed one by one misses (the cells' additions and concatenations, memory traffic between parts).
The prediction is their sum, in float64, in forward order.

A table is one JSON file, independent of the machine that reads it: a search on one machine may use a
table built on another. docs/latency.md says how to build one, and how well it predicts on this project's CPU.
"""
import hashlib
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from genotypes import NONE_INDEX, PRIMITIVES, Genotype
from genotypes_nb201 import NB201_OPS, edge_names, max_nodes_of, parse_arch
from model import Logits, NetworkCIFAR, NetworkImageNet
from model_search_nb201 import Network as NB201Network
from model_search_nb201 import ResNetBasicblock, make_op
from operations import OPS, PLAIN, FactorizedReduce, ReLUConvBN
from runtime.checkpoint import atomic_write_bytes
from utils import UserError

FORMAT = 'evnas-latency-table'
RUN_COPY = 'latency_table.json'  # a search's copy of its table, in its run directory
VERSION = 1
RUNTIMES = ('eager', 'onnxruntime')
WARMUP = 5  # oneDNN and cuDNN pick and build their kernels on the first calls of a shape

# The networks a budget is measured on (search/budget.py's sizes): (channels, layers or cells per stage,
# image size, classes; None: the search's own classes).
SIZES = {('darts', 'cifar'): (36, 20, 32, None), ('darts', 'imagenet'): (48, 14, 224, 1000),
         ('nb201', 'cifar'): (16, 5, 32, None), ('nb201', 'imagenet'): (16, 5, 16, 120)}


class TableError(UserError):
    """A latency table that cannot be used: damaged, foreign, or built for another network."""


@dataclass(frozen=True)
class Part:
    """One module of a network, as the table names it: what it computes and the (C, H, W) it reads."""
    name: str
    shape: Tuple[int, int, int]
    make: Callable[[], nn.Module] = field(compare=False, hash=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.name} {'x'.join(map(str, self.shape))}"


@dataclass(frozen=True)
class Network:
    """The evaluation network of a table: its space and size, and the sizes they mean."""
    space: str
    size: str
    init_channels: int
    layers: int  # DARTS: cells; NAS-Bench-201: cells per stage (N)
    image_size: int
    num_classes: int

    @classmethod
    def at(cls, space: str, size: str, num_classes: int) -> 'Network':
        C, layers, image, classes = SIZES[(space, size)]
        return cls(space, size, C, layers, image, classes or num_classes)

    def describe(self) -> str:
        cells = 'layers' if self.space == 'darts' else 'cells per stage'
        return (f"the {self.space} space's network at the {self.size} size (C={self.init_channels}, {self.layers} "
                f"{cells}, {self.image_size}x{self.image_size}, {self.num_classes} classes)")


# ----------------------------------------------------------------------------------------------------------
# The parts of a network

def network_parts(network: Network, architecture: Any, runtime: str = 'eager') -> Tuple[List[Part], int]:
    """The parts the evaluation network of `architecture` (a DARTS Genotype or a NAS-Bench-201 arch string) runs
    in `runtime`, in forward order, and its number of cells (what the per-cell overhead multiplies)."""
    if network.space == 'darts':
        return _darts_parts(network, architecture)
    ops = parse_arch(architecture)
    # ONNX Runtime removes what the output does not read: a NAS-Bench-201 node whose edges out are all `none`
    # (eager PyTorch computes it anyway). Every DARTS node is concatenated into the output.
    return _nb201_parts(network, live_edges(ops) if runtime == 'onnxruntime' else ops)


def live_edges(ops: Sequence[str]) -> List[str]:
    """A NAS-Bench-201 cell's operations (in edge_names order) with `none` on every edge whose result the
    cell's output does not read."""
    names = edge_names(max_nodes_of(len(ops)))
    op = dict(zip(names, ops))
    live = {max_nodes_of(len(ops)) - 1}
    for i in range(max_nodes_of(len(ops)) - 1, 0, -1):  # from the output back: j is live if a live i reads it
        if i in live:
            live.update(j for j in range(i) if op[f"{i}<-{j}"] != 'none')
    return [o if int(name.split('<-')[0]) in live else 'none' for name, o in zip(names, ops)]


def all_parts(network: Network) -> List[Part]:
    """Every part an architecture of the space can run in `network`, each once, skeleton first."""
    if network.space == 'darts':
        ops = [op for i, op in enumerate(PRIMITIVES) if i != NONE_INDEX]
        # a cell with every operation on an edge from each of its inputs (0, 1) and from a node (2)
        edges = [(op, j) for op in ops for j in range(3)]
        every_op = Genotype(normal=edges, normal_concat=range(2, 6), reduce=edges, reduce_concat=range(2, 6))
        parts = _darts_parts(network, every_op)[0]
    else:
        parts = _nb201_parts(network, [op for op in NB201_OPS if op != 'none'], every_op=True)[0]
    unique: Dict[str, Part] = {}
    for part in parts:
        unique.setdefault(part.key, part)
    return list(unique.values())


def _darts_parts(network: Network, genotype: Genotype) -> Tuple[List[Part], int]:
    """model.NetworkCIFAR / NetworkImageNet's forward, part by part (model.py). For `all_parts`, a genotype may
    list any number of (op, input) edges per cell: each edge's shape follows from its input alone."""
    C, image = network.init_channels, network.image_size
    parts = []
    if network.size == 'imagenet':
        parts += [Part(f"stem0 to {C}", (3, image, image), lambda: _imagenet_stem0(C)),
                  Part(f"stem1 to {C}", (C, image // 4, image // 4), lambda: _imagenet_stem1(C))]
        # (C, H) of the cell before the previous one and of the previous one
        before, previous, reduction_prev, C_curr = (C, image // 4), (C, image // 8), True, C
    else:
        stem = 3 * C
        parts.append(Part(f"stem to {stem}", (3, image, image), lambda: _cifar_stem(stem)))
        before, previous, reduction_prev, C_curr = (stem, image), (stem, image), False, C
    layers = network.layers
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        C_curr = 2 * C_curr if reduction else C_curr
        H = previous[1]
        if reduction_prev:
            parts.append(Part(f"factorized_reduce to {C_curr}", (before[0], before[1], before[1]),
                              _maker(FactorizedReduce, before[0], C_curr)))
        else:
            parts.append(Part(f"relu_conv_bn to {C_curr}", (before[0], before[1], before[1]),
                              _maker(ReLUConvBN, before[0], C_curr, 1, 1, 0)))
        parts.append(Part(f"relu_conv_bn to {C_curr}", (previous[0], H, H), _maker(ReLUConvBN, previous[0], C_curr,
                                                                                   1, 1, 0)))
        for op, index in (genotype.reduce if reduction else genotype.normal):
            stride = 2 if reduction and index < 2 else 1
            size = H if index < 2 or not reduction else H // 2
            parts.append(Part(f"{op} s{stride}", (C_curr, size, size), _maker(OPS[op], C_curr, stride, True)))
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        before, previous = previous, (C_curr * len(concat), H // 2 if reduction else H)
        reduction_prev = reduction
    parts.append(Part(f"head {network.num_classes} classes", (previous[0], previous[1], previous[1]),
                      _maker(_Head, previous[0], network.num_classes)))
    return parts, layers


def _nb201_parts(network: Network, ops: Sequence[str], every_op: bool = False) -> Tuple[List[Part], int]:
    """model_search_nb201.Network(arch=...)'s forward, part by part: an edge whose op is `none` runs nothing.
    With `every_op`, `ops` are the operations to list on one edge of each stage."""
    C, N, H = network.init_channels, network.layers, network.image_size
    parts = [Part(f"stem to {C}", (3, H, H), lambda: _nb201_stem(C))]
    C_prev = C
    for stage, C_curr in enumerate((C, 2 * C, 4 * C)):
        if stage > 0:
            parts.append(Part(f"resblock to {C_curr}", (C_prev, H, H), _maker(ResNetBasicblock, C_prev, C_curr)))
            H //= 2
        edges = ops if every_op else [op for op in ops if op != 'none']
        for _ in range(1 if every_op else N):
            parts += [Part(op, (C_curr, H, H), _maker(make_op, op, C_curr, True, PLAIN, affine=True)) for op in edges]
        C_prev = C_curr
    parts.append(Part(f"head {network.num_classes} classes", (C_prev, H, H),
                      _maker(_NB201Head, C_prev, network.num_classes)))
    return parts, 3 * N


def _maker(factory: Callable, *args, **kwargs) -> Callable[[], nn.Module]:
    return lambda: factory(*args, **kwargs)


def _cifar_stem(C: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))


def _imagenet_stem0(C: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, C // 2, kernel_size=3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2),
                         nn.ReLU(inplace=True), nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(C))


def _imagenet_stem1(C: int) -> nn.Module:
    return nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(C))


def _nb201_stem(C: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C))


class _Head(nn.Module):
    """The DARTS networks' head: global average pooling and the classifier."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C, num_classes)

    def forward(self, x):
        return self.classifier(self.global_pooling(x).flatten(1))


class _NB201Head(_Head):
    """NAS-Bench-201's head: BatchNorm and ReLU, then the same pooling and classifier."""

    def __init__(self, C: int, num_classes: int):
        super().__init__(C, num_classes)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C), nn.ReLU(inplace=True))

    def forward(self, x):
        return super().forward(self.lastact(x))


# ----------------------------------------------------------------------------------------------------------
# Tables

def file_sha256(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def copy_into(run_dir: str, path: str, sha256: str) -> str:
    """RUN_DIR/latency_table.json: the table's bytes, which must still be those whose hash the run recorded."""
    try:
        with open(path, 'rb') as f:
            content = f.read()
    except OSError as e:
        raise TableError(f"latency table {path}: {e.strerror or e}") from None
    if hashlib.sha256(content).hexdigest() != sha256:
        raise TableError(f"latency table {path} changed after the command line was read; run the command again")
    copy = os.path.join(run_dir, RUN_COPY)
    atomic_write_bytes(copy, content)
    return copy


@dataclass
class LatencyTable:
    """A table as latency_table.py writes it (see `to_json`); `read` checks it."""
    network: Network
    target: Dict[str, Any]  # device, device_name, runtime, torch, onnxruntime, threads, batch_size, memory
    parts: Dict[str, Dict[str, float]]  # key -> {'ms' (median), 'p10', 'p90', 'repeats'}
    cell_overhead_ms: float = 0.
    calibration: List[Dict[str, Any]] = field(default_factory=list)
    call_ms: float = 0.  # once per network: ONNX Runtime's cost of a session call, taken out of every part's
    sha256: Optional[str] = None  # of the file it was read from

    def to_json(self) -> Dict[str, Any]:
        return {'format': FORMAT, 'version': VERSION, 'network': self.network.__dict__, 'target': self.target,
                'cell_overhead_ms': self.cell_overhead_ms, 'call_ms': self.call_ms, 'parts': self.parts,
                'calibration': self.calibration}

    @classmethod
    def read(cls, path: str) -> 'LatencyTable':
        """The table in `path`, or TableError (one line) when it is not one this version can use."""
        try:
            with open(path) as f:
                data = json.load(f)
        except OSError as e:
            raise TableError(f"latency table {path}: {e.strerror or e}") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise TableError(f"latency table {path} is damaged: not JSON ({e})") from None
        if not isinstance(data, dict) or data.get('format') != FORMAT:
            raise TableError(f"{path} is not a latency table of this project (no \"format\": \"{FORMAT}\"); "
                             f"build one with latency_table.py")
        if data.get('version') != VERSION:
            raise TableError(f"latency table {path} has version {data.get('version')}; this code reads version "
                             f"{VERSION}: build it again with latency_table.py")
        try:
            table = cls(Network(**data['network']), dict(data['target']),
                        {str(k): {n: float(v) for n, v in entry.items()} for k, entry in data['parts'].items()},
                        float(data['cell_overhead_ms']), list(data.get('calibration', [])),
                        float(data.get('call_ms', 0.)))
            for name in ('device', 'runtime', 'threads', 'batch_size'):
                table.target[name]  # noqa: B018 (must be there)
            sizes = (table.network.init_channels, table.network.layers, table.network.image_size,
                     table.network.num_classes)
            if not all(isinstance(n, int) and n > 0 for n in sizes):
                raise ValueError(f"network sizes {sizes} are not positive whole numbers")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TableError(f"latency table {path} is damaged: {type(e).__name__} {e}") from None
        if (table.network.space, table.network.size) not in SIZES:
            raise TableError(f"latency table {path} is for an unknown space or size "
                             f"({table.network.space}, {table.network.size})")
        bad = [k for k, entry in table.parts.items() if not (math.isfinite(entry.get('ms', math.nan))
                                                             and entry['ms'] >= 0)]
        if bad or not math.isfinite(table.cell_overhead_ms + table.call_ms):
            first = (bad or ['cell_overhead_ms or call_ms'])[0]
            raise TableError(f"latency table {path} is damaged: no finite latency for {first}")
        missing = [p.key for p in all_parts(table.network) if p.key not in table.parts]
        if missing:
            raise TableError(f"latency table {path} lacks {len(missing)} part(s) of {table.network.describe()}, "
                             f"such as '{missing[0]}': build it again with latency_table.py")
        table.sha256 = file_sha256(path)
        return table

    def describe(self) -> str:
        t = self.target
        return (f"{t['runtime']} on {t['device']} ({t.get('device_name', 'unknown')}), {t['threads']} thread(s), batch "
                f"{t['batch_size']}, torch {t.get('torch')}")

    def predict(self, architecture: Any) -> float:
        """Milliseconds per batch of the table's size: the call, the parts' medians, then the cells' overhead,
        summed in float64 in forward order."""
        total, cells = self.sum_of_parts(architecture)
        return total + cells * self.cell_overhead_ms

    def sum_of_parts(self, architecture: Any) -> Tuple[float, int]:
        """The call and the parts' medians summed in forward order (what the overhead is fitted on), and the
        cells."""
        parts, cells = network_parts(self.network, architecture, self.target['runtime'])
        total = self.call_ms
        for part in parts:
            entry = self.parts.get(part.key)
            if entry is None:  # an operation outside the search space (a published cell's sep_conv_7x7)
                raise TableError(f"the latency table has no '{part.key}': not a part of {self.network.describe()}")
            total += entry['ms']
        return total, cells

    def differs_from(self, target: Dict[str, Any]) -> Optional[str]:
        """One line where a measurement on `target` is not what the table was built on, else None."""
        names = {'device_name': 'device', 'runtime': 'runtime', 'torch': 'torch version', 'threads': 'thread count',
                 'batch_size': 'batch size'}
        differ = [f"{label} {self.target.get(k)} vs {target.get(k)}" for k, label in names.items()
                  if k in target and str(self.target.get(k)) != str(target.get(k))]
        if not differ:
            return None
        return ("the latency table was built on another target than this measurement (" + '; '.join(differ)
                + "): the prediction is for the table's target")


# ----------------------------------------------------------------------------------------------------------
# Measuring

def build_network(network: Network, architecture: Any) -> nn.Module:
    """The evaluation network of `architecture` as export.py deploys it: torch.nn layers, eval mode, logits only."""
    if network.space == 'darts':
        cls = NetworkImageNet if network.size == 'imagenet' else NetworkCIFAR
        model = Logits(cls(network.init_channels, network.num_classes, network.layers, False, architecture))
    else:
        model = NB201Network(network.init_channels, network.layers, network.num_classes, arch=parse_arch(architecture))
    return model.eval()


def runner(module: nn.Module, inputs: torch.Tensor, runtime: str, threads: int) -> Callable[[], Any]:
    """A call of `module` on `inputs` (on their device) in `runtime`: eager PyTorch without gradients, or an ONNX
    Runtime session on the CPU (exported as export.py exports, opset 18) with `threads` intra-op threads."""
    if runtime == 'eager':
        def run():
            with torch.no_grad():
                return module(inputs)
        return run
    onnxruntime = _onnxruntime()
    with torch.no_grad():
        program = torch.onnx.export(module, (inputs.cpu(),), dynamo=True, input_names=['x'], output_names=['y'],
                                    opset_version=18, verbose=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(), options,
                                           providers=['CPUExecutionProvider'])
    feed = {'x': inputs.cpu().numpy()}
    return lambda: session.run(None, feed)


def _onnxruntime():
    """The onnxruntime module, or one line saying what to install (parts are exported as export.py exports)."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401 (the dynamo exporter's)
    except ImportError:
        raise TableError("--runtime onnxruntime needs onnx, onnxscript and onnxruntime: pip install onnx onnxscript "
                         "onnxruntime") from None
    return onnxruntime


def synchronizer(device: torch.device, runtime: str) -> Optional[Callable[[], None]]:
    """What waits for a call's work to end: CUDA runs asynchronously."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' and runtime == 'eager' else None


def this_target(device: torch.device, runtime: str, threads: int, batch_size: int) -> Dict[str, Any]:
    """What a measurement here runs on, in a table's terms."""
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    target = {'device': device.type, 'device_name': name, 'runtime': runtime, 'torch': torch.__version__,
              'threads': threads, 'batch_size': batch_size}
    if runtime == 'onnxruntime':
        target['onnxruntime'] = _onnxruntime().__version__
    return target


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_calls(run: Callable[[], Any], repeats: int, warmup: int = WARMUP,
               synchronize: Optional[Callable[[], None]] = None) -> List[float]:
    """Milliseconds of each of `repeats` calls of `run`, after `warmup` untimed ones."""
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        run()
        if synchronize is not None:
            synchronize()
        if i >= warmup:
            times.append(1e3 * (time.perf_counter() - start))
    return times


def summarize(times: Sequence[float]) -> Dict[str, float]:
    """The median and the 10th and 90th percentiles of timed calls (ms)."""
    ordered = sorted(times)
    p10, p90 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (.1, .9))
    return {'ms': statistics.median(ordered), 'p10': p10, 'p90': p90, 'repeats': len(ordered)}
