"""The NAS-Bench-201 supernet the original EvNAS searches: AutoDL's TinyNetwork with NAS201SearchCells.

stem (conv 3x3 + BatchNorm) -> N search cells at C -> ResNet basic block (stride 2) -> N cells at 2C -> basic
block -> N cells at 4C -> BatchNorm + ReLU -> global average pool -> linear. Every edge of every cell is a
weighted sum over NB201_OPS with weights softmax(alphas) (one 6 x 5 matrix shared by all cells). The module
names are AutoDL's, so the state_dict keys are the original's (tests/fixtures/nb201/state_dict_manifest.json).
"""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from genotypes_nb201 import NB201_OPS, edge_names, max_nodes_of, num_edges
from operations import PLAIN, Layers


class ReLUConvBN(nn.Module):
    """AutoDL's nor_conv: ReLU, conv without bias, BatchNorm (tracking running statistics only when asked)."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool,
                 track_running_stats: bool = True, impl: Layers = PLAIN):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            impl.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            impl.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats),
        )

    def forward(self, x):
        return self.op(x)


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.)


class AvgPool(nn.Module):
    """avg_pool_3x3 between equal widths (AutoDL's POOLING without its preprocessing conv)."""

    def __init__(self, impl: Layers = PLAIN):
        super().__init__()
        self.op = impl.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x):
        return self.op(x)


def make_op(name: str, C: int, track_running_stats: bool, impl: Layers, affine: bool = False) -> nn.Module:
    """One operation of a cell (stride 1, C channels in and out; a search cell's BatchNorms have no affine
    parameters)."""
    if name == 'none':
        return Zero()
    if name == 'skip_connect':
        return nn.Identity()
    if name == 'nor_conv_1x1':
        return ReLUConvBN(C, C, 1, 1, 0, affine, track_running_stats, impl)
    if name == 'nor_conv_3x3':
        return ReLUConvBN(C, C, 3, 1, 1, affine, track_running_stats, impl)
    if name == 'avg_pool_3x3':
        return AvgPool(impl)
    raise ValueError(f"unknown NAS-Bench-201 operation '{name}'")


class ResNetBasicblock(nn.Module):
    """The stride-2 block between stages: two ReLU-conv-BNs, and a 2x2 average pool + 1x1 conv shortcut."""

    def __init__(self, C_in: int, C_out: int, impl: Layers = PLAIN):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, True, impl=impl)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, True, impl=impl)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            impl.Conv2d(C_in, C_out, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class SearchCell(nn.Module):

    def __init__(self, C: int, max_nodes: int, track_running_stats: bool, impl: Layers = PLAIN):
        super().__init__()
        self.max_nodes = max_nodes
        self.edges = nn.ModuleDict()
        for i in range(1, max_nodes):
            for j in range(i):
                self.edges[f"{i}<-{j}"] = nn.ModuleList(make_op(name, C, track_running_stats, impl)
                                                        for name in NB201_OPS)
        self.edge2index = {name: k for k, name in enumerate(edge_names(max_nodes))}

    def forward(self, x, weights):
        nodes = [x]
        for i in range(1, self.max_nodes):
            inputs = []
            for j in range(i):
                edge = f"{i}<-{j}"
                inputs.append(sum(op(nodes[j]) * w for op, w in zip(self.edges[edge], weights[self.edge2index[edge]])))
            nodes.append(sum(inputs))
        return nodes[-1]


class ArchCell(nn.Module):
    """The cell of one architecture (the benchmark's InferCell): each edge its one operation, with affine
    BatchNorms; an edge whose operation is `none` is no connection."""

    def __init__(self, C: int, ops: Sequence[str], impl: Layers = PLAIN):
        super().__init__()
        self.max_nodes = max_nodes_of(len(ops))
        self.edges = nn.ModuleDict({name: make_op(op, C, True, impl, affine=True)
                                    for name, op in zip(edge_names(self.max_nodes), ops) if op != 'none'})

    def forward(self, x):
        nodes = [x]
        for i in range(1, self.max_nodes):
            inputs = [self.edges[f"{i}<-{j}"](nodes[j]) for j in range(i) if f"{i}<-{j}" in self.edges]
            nodes.append(sum(inputs) if inputs else torch.zeros_like(x))
        return nodes[-1]


class Network(nn.Module):

    def __init__(self, C: int, N: int, num_classes: int, max_nodes: int = 4, track_running_stats: bool = False,
                 impl: Layers = PLAIN, arch: Optional[Sequence[str]] = None):
        """impl: the layer classes (operations.Layers; speed.layers(config) for a device's fast ones). With
        `arch` (one operation per edge), the network of that architecture instead of the supernet (its cost)."""
        super().__init__()
        self._C, self._N, self.max_nodes = C, N, max_nodes
        self.stem = nn.Sequential(impl.Conv2d(3, C, kernel_size=3, padding=1, bias=False), impl.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev = C
        for stage, C_curr in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                self.cells.append(ResNetBasicblock(C_prev, C_curr, impl))
            self.cells.extend(SearchCell(C_curr, max_nodes, track_running_stats, impl) if arch is None
                              else ArchCell(C_curr, arch, impl) for _ in range(N))
            C_prev = C_curr
        self.lastact = nn.Sequential(impl.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        # NOTE (faithful to EvNAS): U(0, 1) architecture weights, drawn after the layers as the original does
        # (so the layers' initial weights come from the same random draws). A non-persistent buffer, as in the
        # DARTS supernet: out of the state_dict, but moved with the module.
        self.register_buffer('alphas', torch.rand(num_edges(max_nodes), len(NB201_OPS)), persistent=False)

    def arch_parameters(self) -> List[torch.Tensor]:
        return [self.alphas]

    @torch.no_grad()
    def set_arch_parameters(self, alphas: Sequence[torch.Tensor]) -> None:
        """Copy [alphas] (edges x ops) in place (from any device; no host sync for device tensors)."""
        for mine, new in zip(self.arch_parameters(), alphas, strict=True):
            mine.copy_(new, non_blocking=True)

    def forward(self, x):
        # NOTE (faithful to EvNAS): softmax of the (decoded, one-hot) alphas, as the DARTS supernet does it.
        weights = F.softmax(self.alphas, dim=-1)
        feature = self.stem(x)
        for cell in self.cells:
            feature = cell(feature, weights) if isinstance(cell, SearchCell) else cell(feature)
        out = self.global_pooling(self.lastact(feature))
        return self.classifier(out.flatten(1))
