"""Evaluation networks built from a genotype: NetworkCIFAR and NetworkImageNet, as in DARTS.

Module names and their order fix the state_dict keys, which published checkpoints depend on. `impl` picks
the layer classes (operations.Layers: torch.nn's by default; speed.layers(config) for a device's fast ones).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn

from genotypes import Genotype
from operations import OPS, PLAIN, FactorizedReduce, Identity, Layers, ReLUConvBN


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of a path with probability `drop_prob` and rescale the rest (DARTS)."""
    if drop_prob <= 0.:
        return x
    keep_prob = 1. - drop_prob
    # The mask follows x's device and dtype, so this works on CPU, CUDA and under autocast alike.
    mask = x.new_empty(x.size(0), 1, 1, 1).bernoulli_(keep_prob)
    return x.div(keep_prob).mul(mask)


class Cell(nn.Module):

    def __init__(self, genotype: Genotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, impl: Layers = PLAIN):
        super().__init__()
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, impl=impl)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, impl=impl)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, impl=impl)

        edges = genotype.reduce if reduction else genotype.normal
        self._concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.multiplier = len(self._concat)
        self._steps = len(edges) // 2
        self._indices = [index for _, index in edges]
        self._ops = nn.ModuleList()
        for name, index in edges:
            stride = 2 if reduction and index < 2 else 1
            self._ops.append(OPS[name](C, stride, True, impl))

    def forward(self, s0, s1, drop_prob: float):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self._steps):
            h1 = self._ops[2 * i](states[self._indices[2 * i]])
            h2 = self._ops[2 * i + 1](states[self._indices[2 * i + 1]])
            if self.training and drop_prob > 0.:
                # DARTS never drops identity edges: a skip connection carries no parameters to regularise.
                if not isinstance(self._ops[2 * i], Identity):
                    h1 = drop_path(h1, drop_prob)
                if not isinstance(self._ops[2 * i + 1], Identity):
                    h2 = drop_path(h2, drop_prob)
            states.append(h1 + h2)
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier on the 8x8 feature map after the second reduction cell."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.flatten(1))


class AuxiliaryHeadImageNet(nn.Module):
    """Auxiliary classifier on the 14x14 feature map after the second reduction cell."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            # NOTE (faithful to DARTS): DARTS omitted a BatchNorm2d(768) here by a typo and kept it out for
            # consistency with its paper; the ImageNet checkpoints of DARTS, P-DARTS and EvNAS have no such keys.
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.flatten(1))


class _Network(nn.Module):
    """The cell stack shared by the CIFAR and ImageNet networks; subclasses add the stem and head."""

    def __init__(self, layers: int, auxiliary: bool):
        super().__init__()
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0

    def _build_cells(self, genotype: Genotype, C_prev_prev: int, C_prev: int, C_curr: int, layers: int,
                     reduction_prev: bool, impl: Layers) -> Tuple[int, int]:
        self.cells = nn.ModuleList()
        C_to_auxiliary = C_prev
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, impl)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == 2 * layers // 3:
                C_to_auxiliary = C_prev
        return C_prev, C_to_auxiliary

    def _forward_cells(self, s0, s1) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == 2 * self._layers // 3 and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        return s1, logits_aux


class NetworkCIFAR(_Network):

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype: Genotype,
                 impl: Layers = PLAIN):
        super().__init__(layers, auxiliary)
        stem_multiplier = 3
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            impl.Conv2d(3, C_curr, 3, padding=1, bias=False),
            impl.BatchNorm2d(C_curr),
        )
        C_prev, C_to_auxiliary = self._build_cells(genotype, C_curr, C_curr, C, layers, False, impl)
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(C_to_auxiliary, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        s = self.stem(x)
        out, logits_aux = self._forward_cells(s, s)
        logits = self.classifier(self.global_pooling(out).flatten(1))
        return logits, logits_aux


class NetworkImageNet(_Network):

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype: Genotype,
                 impl: Layers = PLAIN):
        super().__init__(layers, auxiliary)
        self.stem0 = nn.Sequential(
            impl.Conv2d(3, C // 2, kernel_size=3, stride=2, padding=1, bias=False),
            impl.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            impl.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            impl.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            impl.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            impl.BatchNorm2d(C),
        )
        C_prev, C_to_auxiliary = self._build_cells(genotype, C, C, C, layers, True, impl)
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadImageNet(C_to_auxiliary, num_classes)
        # DARTS uses AvgPool2d(7), which assumes 224x224 inputs; adaptive pooling gives the same result there
        # and also serves smaller images (tests, custom datasets). Neither has parameters.
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        out, logits_aux = self._forward_cells(s0, s1)
        logits = self.classifier(self.global_pooling(out).flatten(1))
        return logits, logits_aux


class Logits(nn.Module):
    """An evaluation network's logits alone: its forward returns (logits, logits_aux), and in eval mode the
    auxiliary logits are None, which neither torch.export's users nor ONNX want."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)[0]
