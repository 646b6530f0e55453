"""The DARTS supernet: every edge of a cell is a MixedOp over all PRIMITIVES, weighted by softmax(alphas).

EvNAS shares this one set of weights between the whole population; an individual is a pair of alpha
matrices (normal, reduce) that `set_arch_parameters` loads before the forward pass. Decoding an individual
and deriving a genotype from alphas are the genetic algorithm's (architect_evolution.py).
"""
from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from genotypes import PRIMITIVES, num_edges
from operations import OPS, PLAIN, FactorizedReduce, Layers, ReLUConvBN


class MixedOp(nn.Module):

    def __init__(self, C: int, stride: int, impl: Layers = PLAIN):
        super().__init__()
        self._ops = nn.ModuleList()
        for primitive in PRIMITIVES:
            op = OPS[primitive](C, stride, False, impl)
            if 'pool' in primitive:
                op = nn.Sequential(op, impl.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class Cell(nn.Module):

    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, impl: Layers = PLAIN):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False, impl=impl)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False, impl=impl)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False, impl=impl)
        self._steps = steps
        self._multiplier = multiplier

        self._ops = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append((impl.MixedOp or MixedOp)(C, stride, impl))

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


class Network(nn.Module):

    def __init__(self, C: int, num_classes: int, layers: int, steps: int = 4, multiplier: int = 4,
                 stem_multiplier: int = 3, impl: Layers = PLAIN):
        """impl: the layer classes (operations.Layers; speed.layers(config) for a device's fast ones)."""
        super().__init__()
        self._C = C
        self._num_classes = num_classes
        self._layers = layers
        self._steps = steps
        self._multiplier = multiplier

        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            impl.Conv2d(3, C_curr, 3, padding=1, bias=False),
            impl.BatchNorm2d(C_curr),
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, impl)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, multiplier * C_curr

        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

        # The architecture weights are buffers, not parameters: EvNAS never trains them by gradient. Being
        # non-persistent keeps them out of the state_dict (whose keys match the original supernet) while
        # they still move with the module between devices.
        k = num_edges(steps)
        self.register_buffer('alphas_normal', 1e-3 * torch.randn(k, len(PRIMITIVES)), persistent=False)
        self.register_buffer('alphas_reduce', 1e-3 * torch.randn(k, len(PRIMITIVES)), persistent=False)

    def arch_parameters(self) -> List[torch.Tensor]:
        return [self.alphas_normal, self.alphas_reduce]

    @torch.no_grad()
    def set_arch_parameters(self, alphas: Sequence[torch.Tensor]) -> None:
        """Copy [alphas_normal, alphas_reduce] in place (from any device; no host sync for device tensors)."""
        for mine, new in zip(self.arch_parameters(), alphas, strict=True):
            mine.copy_(new, non_blocking=True)

    def forward(self, x):
        weights_normal = F.softmax(self.alphas_normal, dim=-1)
        weights_reduce = F.softmax(self.alphas_reduce, dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            weights = weights_reduce if cell.reduction else weights_normal
            s0, s1 = s1, cell(s0, s1, weights)
        out = self.global_pooling(s1)
        return self.classifier(out.flatten(1))
