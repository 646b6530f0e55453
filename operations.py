"""The DARTS primitive operations (Liu et al., 2019), with DARTS's module names and nesting.

The state_dict keys of every network in this project come from the attribute names below
(`op`, `conv_1`, `conv_2`, `bn`): published checkpoints load only while they stay unchanged.

Every op builds its convolutions, BatchNorms and pools through `impl`, a `Layers`: torch.nn's classes by
default, as in DARTS. `speed.layers(config)` gives faster classes with the same arguments, parameters and
state_dict for a device; the ops read the same whichever they get. To add an operation, write it here with
`impl.Conv2d` (etc.) where DARTS writes `nn.Conv2d`, add it to `OPS`, and name it in genotypes.OPERATIONS
(and in genotypes.PRIMITIVES to search over it).
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Layers:
    """The layer classes a network is built from. These defaults are torch.nn's (the paper-exact path)."""
    Conv2d: Callable[..., nn.Module] = nn.Conv2d
    BatchNorm2d: Callable[..., nn.Module] = nn.BatchNorm2d
    MaxPool2d: Callable[..., nn.Module] = nn.MaxPool2d
    AvgPool2d: Callable[..., nn.Module] = nn.AvgPool2d
    # The supernet's edge, built as MixedOp(C, stride, impl); None is model_search.MixedOp, DARTS's weighted sum.
    MixedOp: Optional[Callable[..., nn.Module]] = None


PLAIN = Layers()


class ReLUConvBN(nn.Module):
    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True,
                 impl: Layers = PLAIN):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            impl.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            impl.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    """ReLU, dilated depthwise conv, pointwise conv, BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True, impl: Layers = PLAIN):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            impl.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C_in,
                        bias=False),
            impl.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            impl.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked (ReLU, depthwise conv, pointwise conv, BN) blocks; only the first one strides."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True,
                 impl: Layers = PLAIN):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            impl.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            impl.Conv2d(C_in, C_in, kernel_size=1, padding=0, bias=False),
            impl.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            impl.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            impl.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            impl.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    """The `none` operation: zeros shaped like the (strided) input."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.)
        return x[:, :, ::self.stride, ::self.stride].mul(0.)


class FactorizedReduce(nn.Module):
    """Halves the resolution with two 1x1 stride-2 convs, the second shifted by one pixel."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True, impl: Layers = PLAIN):
        super().__init__()
        assert C_out % 2 == 0, "FactorizedReduce needs an even number of output channels"
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = impl.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = impl.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = impl.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        return self.bn(self.reduce(self.relu(x)))

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The two convs on the rectified input, concatenated (everything but the ReLU and the BN)."""
        return torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)


def _conv_7x1_1x7(C: int, stride: int, affine: bool, impl: Layers = PLAIN) -> nn.Module:
    return nn.Sequential(
        nn.ReLU(inplace=False),
        impl.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        impl.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        impl.BatchNorm2d(C, affine=affine),
    )


# Every entry builds an op that maps C channels to C channels at the given stride.
OPS = {
    'none': lambda C, stride, affine, impl=PLAIN: Zero(stride),
    'avg_pool_3x3': lambda C, stride, affine, impl=PLAIN: impl.AvgPool2d(3, stride=stride, padding=1,
                                                                         count_include_pad=False),
    'max_pool_3x3': lambda C, stride, affine, impl=PLAIN: impl.MaxPool2d(3, stride=stride, padding=1),
    'skip_connect': lambda C, stride, affine, impl=PLAIN: (Identity() if stride == 1 else
                                                           FactorizedReduce(C, C, affine=affine, impl=impl)),
    'sep_conv_3x3': lambda C, stride, affine, impl=PLAIN: SepConv(C, C, 3, stride, 1, affine=affine, impl=impl),
    'sep_conv_5x5': lambda C, stride, affine, impl=PLAIN: SepConv(C, C, 5, stride, 2, affine=affine, impl=impl),
    'sep_conv_7x7': lambda C, stride, affine, impl=PLAIN: SepConv(C, C, 7, stride, 3, affine=affine, impl=impl),
    'dil_conv_3x3': lambda C, stride, affine, impl=PLAIN: DilConv(C, C, 3, stride, 2, 2, affine=affine, impl=impl),
    'dil_conv_5x5': lambda C, stride, affine, impl=PLAIN: DilConv(C, C, 5, stride, 4, 2, affine=affine, impl=impl),
    'conv_7x1_1x7': _conv_7x1_1x7,
}
