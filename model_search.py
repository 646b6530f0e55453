"""The DARTS supernet: every edge of a cell is a MixedOp over all PRIMITIVES, weighted by softmax(alphas).

EvNAS shares this one set of weights between the whole population; an individual is a pair of alpha
matrices (normal, reduce) that `set_arch_parameters` loads before the forward pass.
"""
from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from architect_evolution import NONE_INDEX, derive_genotype, num_edges
from genotypes import PRIMITIVES, Genotype
from operations import (OPS, DilConv, FactorizedReduce, ReLUConvBN, SepConv, add_per_channel, batch_norm_mix,
                        train_mode_affine)


class MixedOp(nn.Module):

    def __init__(self, C: int, stride: int):
        super().__init__()
        self._ops = nn.ModuleList()
        for primitive in PRIMITIVES:
            op = OPS[primitive](C, stride, False)
            if 'pool' in primitive:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)
        # Off: the weighted sum exactly as DARTS computes it. On (a speed setting, see speed.py): `fused_forward`.
        self.fused = False

    def forward(self, x, weights):
        if self.fused:
            return self.fused_forward(x, weights)
        return sum(w * op(x) for w, op in zip(weights, self._ops))

    def fused_forward(self, x, weights):
        """The same weighted sum with fewer passes over memory: `none` is skipped (it adds w * 0 = 0), the ops
        that begin with ReLU(x) share one ReLU, and the sum accumulates in place (one addcmul per op).
        On CPU, with BatchNorm in training mode (the search's training step and fitness evaluation), each op's
        closing BatchNorm is folded into the sum: w * BN(z) = z * (w * scale) + w * shift per channel, the
        shifts added once, which saves writing and reading BN(z). With autograd, one function sums the folded
        ops (operations.batch_norm_mix: their z are kept for the backward anyway); without, each op's z is
        added and freed as it comes. Only the floating-point order of the sums differs from `forward`;
        running statistics are updated as BN(z) updates them."""
        fold = self.training and x.device.type == 'cpu'  # measured on CPU only
        if fold and torch.is_grad_enabled():
            terms = list(self._terms(x, fold))
            folded = [(i, y, bn) for i, y, bn in terms if bn is not None]
            out = None
            if folded:
                index, zs, bns = zip(*folded)
                out = batch_norm_mix(zs, weights[list(index)], bns)
            for i, y, bn in terms:
                if bn is None:
                    out = y * weights[i] if out is None else out.addcmul_(y, weights[i])
            return out
        out = shift_left = None
        for i, y, bn in self._terms(x, fold):
            if bn is None:
                out = y * weights[i] if out is None else out.addcmul_(y, weights[i])
                continue
            scale, shift = train_mode_affine(bn, y)
            if out is None:  # the first term carries its shift; the others' are added once, at the end
                out = add_per_channel(None, y, weights[i] * scale, weights[i] * shift)
            else:
                out = add_per_channel(out, y, weights[i] * scale)
                shift_left = weights[i] * shift if shift_left is None else shift_left.add_(weights[i] * shift)
        return out if shift_left is None else add_per_channel(out, shift=shift_left)

    def _terms(self, x, fold: bool):
        """(index, output, BatchNorm) of every op but `none`, in order, computed as they are asked for. With
        fold, an op that ends with a training-mode BatchNorm stops before it and gives that BatchNorm (else
        None). The ops that begin with ReLU(x) share one."""
        relu_x = None
        for i, op in enumerate(self._ops):
            if i == NONE_INDEX:
                continue
            bn = _closing_batchnorm(op) if fold else None
            if hasattr(op, 'forward_rectified'):
                relu_x = F.relu(x) if relu_x is None else relu_x
                yield i, op.forward_rectified(relu_x, normalise=bn is None), bn
            else:
                yield i, (op[0](x) if bn is not None else op(x)), bn  # a pool, then its BatchNorm


def _closing_batchnorm(op: nn.Module):
    """The BatchNorm2d that ends a supernet op, when it normalises with batch statistics; else None."""
    if isinstance(op, (SepConv, DilConv)):
        bn = op.op[-1]
    elif isinstance(op, FactorizedReduce):
        bn = op.bn
    elif isinstance(op, nn.Sequential) and len(op) == 2 and isinstance(op[1], nn.BatchNorm2d):
        bn = op[1]
    else:
        return None
    return bn if bn.training and bn.track_running_stats else None


class Cell(nn.Module):

    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier

        self._ops = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(MixedOp(C, stride))

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
                 stem_multiplier: int = 3):
        super().__init__()
        self._C = C
        self._num_classes = num_classes
        self._layers = layers
        self._steps = steps
        self._multiplier = multiplier

        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(3, C_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
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

    def genotype(self) -> Genotype:
        """DARTS's rule: per node the two inputs with the largest non-`none` weight, each with its best op."""
        return derive_genotype(self.arch_parameters(), self._multiplier)
