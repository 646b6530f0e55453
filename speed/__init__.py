"""Speed settings that keep the results: which implementation each layer gets, per device.

A network is built for a setting, `Network(..., impl=speed.layers(config))`: the classes of speed/kernels.py
where the setting turns them on, torch.nn's elsewhere, with the same parameters and state_dict keys.
`PAPER_EXACT` is the original code's computation; the other settings compute the same function in another
floating-point order, and a default is on only where tests/test_shape_grid.py runs it against the paper-exact
path in child processes. What each setting does, its defaults per device and what it earns:
docs/performance.md.
"""
import argparse
import ctypes
from dataclasses import asdict
from typing import Tuple, Union

import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair

from operations import PLAIN, Layers
from runtime.settings import SpeedConfig
from speed import kernels

PAPER_EXACT = SpeedConfig()
SETTINGS = tuple(asdict(PAPER_EXACT))
PROCESS_SETTINGS = ('reuse_freed_memory',)  # set once for the whole process: configure_process


def default_config(device: torch.device) -> SpeedConfig:
    if device.type == 'cpu':
        return SpeedConfig(fused_mixed_op=True, channels_last=True, phase_split_dilated=True, narrow_batchnorm=True,
                           box_filter_avg_pool=True, reuse_freed_memory=True)
    # On CUDA: fewer kernel launches, and cuDNN's depthwise convolutions favour NHWC. Not yet measured on a
    # GPU by this project: run `python bench.py --device cuda --ablate` to check them on yours.
    return SpeedConfig(fused_mixed_op=True, channels_last=device.type == 'cuda')


def config_for(device: torch.device, paper_exact: bool = False) -> SpeedConfig:
    """The setting a script runs with: the device's defaults, or --paper_exact."""
    return PAPER_EXACT if paper_exact else default_config(device)


def add_paper_exact_argument(group: argparse._ActionsContainer) -> None:
    """--paper_exact, as every script takes it."""
    group.add_argument('--paper_exact', action='store_true',
                       help='compute as the original code does (torch.nn layers, every supernet op including none, '
                            'NCHW); the default fast settings give the same results to float tolerance')


def layers(config: SpeedConfig) -> Layers:
    """The layer classes of a network built for `config` (operations.Layers)."""
    if config == PAPER_EXACT:
        return PLAIN
    return Layers(
        Conv2d=lambda *args, **kwargs: _conv_class(config, *args, **kwargs)(*args, **kwargs),
        BatchNorm2d=lambda num_features, *args, **kwargs: (
            kernels.NarrowBatchNorm2d if config.narrow_batchnorm and num_features < kernels.NARROW_CHANNELS
            else nn.BatchNorm2d)(num_features, *args, **kwargs),
        AvgPool2d=kernels.BoxFilterAvgPool2d if config.box_filter_avg_pool else nn.AvgPool2d,
        MixedOp=kernels.FusedMixedOp if config.fused_mixed_op else None,
    )


Size = Union[int, Tuple[int, int]]


def _conv_class(config: SpeedConfig, in_channels: int, out_channels: int, kernel_size: Size, stride: Size = 1,
                padding: Size = 0, dilation: Size = 1, groups: int = 1, bias: bool = True,
                padding_mode: str = 'zeros', **_) -> type:
    """The class for a conv with nn.Conv2d's arguments under `config` (chosen from the arguments alone, so the
    parameters are initialised from the same random draws as nn.Conv2d's)."""
    kernel_size, stride, padding, dilation = _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation)
    if padding_mode != 'zeros':  # the kernels pad with zeros
        return nn.Conv2d
    if config.phase_split_dilated and kernels.is_phase_splittable(in_channels, out_channels, kernel_size, stride,
                                                                  padding, dilation, groups, bias):
        return kernels.PhaseSplitDilatedConv2d
    if (config.channels_last and kernel_size == (1, 1) and stride == (2, 2)
            and in_channels < kernels.ONEDNN_STRIDED_1X1_SAFE_CHANNELS):
        return kernels.NCHWStridedConv2d
    return nn.Conv2d


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's <malloc.h>


def keep_freed_memory() -> bool:
    """Make glibc malloc reuse freed blocks instead of returning them to the kernel (see the module
    docstring). Process-wide and not undone. False, changing nothing, where the C library is not glibc."""
    try:  # the symbols already loaded into this process, the C library's among them (no library search)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # macOS and musl: no mallopt; Windows: no CDLL(None)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # -1 is (size_t) -1 for glibc: never trim the heap; a maximum of 0 mmapped blocks: every block on the heap.
    return mallopt(_M_TRIM_THRESHOLD, -1) == 1 and mallopt(_M_MMAP_MAX, 0) == 1


def configure_process(config: SpeedConfig) -> None:
    """The process-wide part of a setting (reuse_freed_memory, float32_policy); a script calls it once, before
    building."""
    if config.reuse_freed_memory:
        keep_freed_memory()
    set_tf32_convolutions(config != PAPER_EXACT)


def set_tf32_convolutions(enabled: bool) -> None:
    """float32 on CUDA GPUs with TF32 (Ampere and later): cuDNN's convolutions in TF32 when `enabled` (PyTorch's
    default, kept by the fast defaults), else in IEEE float32, and matmuls in IEEE float32 then too.

    NOTE (faithful to EvNAS): the original ran PyTorch 1.5, before TF32 existed, so --paper_exact computes
    convolutions in full float32. cudnn.deterministic leaves TF32 on, so it must be turned off explicitly.
    Through the API the installed torch has (fp32_precision from 2.9, allow_tf32 before), never both: mixing
    them is an error in recent versions. Nothing changes on a CPU.
    """
    conv = getattr(torch.backends.cudnn, 'conv', None)
    if conv is not None and hasattr(conv, 'fp32_precision'):
        conv.fp32_precision = 'tf32' if enabled else 'ieee'
        if not enabled:
            torch.backends.cuda.matmul.fp32_precision = 'ieee'
    else:
        torch.backends.cudnn.allow_tf32 = enabled
        if not enabled:
            torch.backends.cuda.matmul.allow_tf32 = False


def float32_policy(config: SpeedConfig, device: torch.device) -> str:
    """What float32 means on `device` under `config`, for the log: TF32 or IEEE convolutions on CUDA."""
    if device.type != 'cuda':
        return 'float32'
    return ('float32 (TF32 convolutions, PyTorch\'s default on Ampere and later)' if config != PAPER_EXACT
            else 'float32 (IEEE: TF32 off, as the original\'s PyTorch 1.5)')


def compiled(module: torch.nn.Module, backend: str = 'inductor') -> torch.nn.Module:
    """torch.compile with one static graph per batch shape (`dynamic=False`): a pass over a loader makes two,
    one for its full batches and one for the short last batch, and nothing is padded (the supernet's
    train-mode BatchNorm would count the padding in its statistics). PyTorch's default recompiles with a
    dynamic batch dimension instead, which the kernels' shape checks break into many frames until the
    recompile limit (docs/performance.md). Individuals share the graphs: the supernet reads the decoded
    alphas from buffers."""
    return torch.compile(module, dynamic=False, backend=backend)
