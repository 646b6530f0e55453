"""Speed settings that keep the results: what to turn on, per device, and how.

Each setting computes the same function as the paper-exact path; only the floating-point order of sums
changes (tests/test_speed.py checks logits and losses against the exact path). The defaults per device come
from measurements with bench.py (README, "Performance"):

| setting               | what it does                                                     | CPU     | CUDA |
| --------------------- | ---------------------------------------------------------------- | ------- | ---- |
| fused_mixed_op        | supernet edges skip `none`, share one ReLU, accumulate in place  | on      | on   |
|                       | (CPU, BN in train mode: each op's closing BatchNorm folded into  |         |      |
|                       | the edge's sum, in fitness and in the training step)             |         |      |
| phase_split_dilated   | dilated depthwise convs: weight gradient from the 4 sub-images   | on      | off  |
| channels_last         | NHWC memory format for the network and its input batches         | on      | on   |
| reuse_freed_memory    | glibc malloc keeps freed memory for reuse (process-wide)         | on      | off  |
| narrow_batchnorm      | BatchNorms of < 16 channels reduce over rows of several pixels   | on      | off  |
| separable_max_pool    | stride-1 3x3 max pools without autograd: rows, then columns      | on      | off  |
| box_filter_avg_pool   | stride-1 3x3 avg pools without autograd, 16 x 16 up: a conv      | on      | off  |
| depthwise5x5_from_3x3 | 5x5 depthwise convs' weight gradient from four 3x3 ones          | AVX-512 | off  |

On CUDA, fused_mixed_op and channels_last are chosen because they launch fewer kernels and because cuDNN's
depthwise convolutions favour NHWC; run `python bench.py --device cuda` to check them on your GPU.

reuse_freed_memory exists because glibc hands every block above its mmap threshold (at most 32 MB) back to
the kernel when it is freed, so the next batch's activations of that size arrive as fresh pages that the
kernel must fault in and zero: a 64 MB elementwise op measured 40 ms on freshly mapped memory against 8 ms
on reused memory. Turning mmap and heap trimming off makes freed blocks reusable; the process then keeps its
peak working set mapped, which is what a training loop needs again at the next step anyway. CUDA tensors
come from PyTorch's own caching allocator, so it is off there.

narrow_batchnorm works around false sharing in ATen's channels_last batch-norm reductions when a layer has
fewer than 16 channels (operations.NarrowBatchNorm2d): the batch norm reads the tensor as rows of several
neighbouring pixels (a view, no copy), so that each thread's accumulators fill whole cache lines, and
combines the columns of each channel. Measured here, 2 threads (two rounds), forward and backward of a
64 x 8 x 32 x 32 batch norm: 4.5-4.8 ms with ATen's kernels, 2.1-2.8 ms with the statistics and backward on
one thread (this setting's earlier form), 1.5-1.9 ms this way; 64 x 4 x 32 x 32: 6.3-6.6, 4.5-5.6 and
1.2-1.7 ms. It only changes layers of fewer than 16 channels, which a supernet has when init_channels is
below 16 (small CPU searches, the quick start, the benchmark's small generation, tests; the paper's C=16
supernet and the C=36 evaluation network have none), and only in training mode, which is also the mode of
fitness evaluation.

separable_max_pool only acts where no gradient is needed, so in fitness evaluation and testing: there it gives
the same values bit for bit, 1.8-3.2x faster than ATen's CPU pooling kernel (operations.separable_max_pool3x3).

box_filter_avg_pool computes the stride-1 average pool (padding not counted) as a depthwise conv with a kernel
of ones times 1 / (pixels per window) where no gradient is needed: 1.7-2.7x faster than ATen's CPU kernel
from 16 x 16 up, measured here (operations.box_filter_avg_pool3x3); smaller images and training keep ATen's.

depthwise5x5_from_3x3 works around oneDNN having a depthwise kernel for the 3x3 weight gradient but not for
the 5x5 one, which runs through its generic convolution (ONEDNN_VERBOSE=1 names them jit_dw and jit): the
weight gradient of sep_conv_5x5's stride-1 depthwise convs, and of dil_conv_5x5's phase-split sub-images,
is assembled from four 3x3 ones (operations.Depthwise5x5Conv2d, operations._depthwise_5x5_weight_grad).
Measured on a 2-core AMD EPYC with AVX-512, channels_last, batch 64: 2.09 -> 0.85 ms at 16 x 32 x 32,
0.87 -> 0.49 ms at 32 x 16 x 16, 0.45 -> 0.34 ms at 64 x 8 x 8; whole C=16 training steps 2-5 % faster (the
windows' copies cost more inside a step than alone), C=8 steps no different.
With oneDNN limited to AVX2 on the same machine (ONEDNN_MAX_CPU_ISA=AVX2) the 3x3 kernels are slower and
the assembled gradient loses from 32 channels up (1.01 -> 1.55 ms at 32 x 16 x 16), and on an earlier AVX2
machine it lost at 32 x 32 too, so the default is on only where ATen reports AVX-512.
"""
import ctypes
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from model_search import MixedOp
from operations import (BoxFilterAvgPool2d, Depthwise5x5Conv2d, DilConv, NarrowBatchNorm2d, SeparableMaxPool2d,
                        is_depthwise_5x5)


@dataclass(frozen=True)
class SpeedConfig:
    fused_mixed_op: bool = False
    phase_split_dilated: bool = False
    channels_last: bool = False
    reuse_freed_memory: bool = False
    narrow_batchnorm: bool = False
    separable_max_pool: bool = False
    box_filter_avg_pool: bool = False
    depthwise5x5_from_3x3: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        on = [name for name, value in asdict(self).items() if value]
        return ', '.join(on) if on else 'paper-exact (none)'


PAPER_EXACT = SpeedConfig()


def default_config(device: torch.device) -> SpeedConfig:
    if device.type == 'cpu':
        avx512 = torch.backends.cpu.get_cpu_capability().startswith('AVX512')
        return SpeedConfig(fused_mixed_op=True, phase_split_dilated=True, channels_last=True, reuse_freed_memory=True,
                           narrow_batchnorm=True, separable_max_pool=True, box_filter_avg_pool=True,
                           depthwise5x5_from_3x3=avx512)
    return SpeedConfig(fused_mixed_op=True, phase_split_dilated=False, channels_last=device.type == 'cuda')


# One 64-byte cache line of fp32 accumulators: BatchNorms with fewer channels share lines between threads.
NARROW_CHANNELS = 16
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


def apply(model: nn.Module, config: SpeedConfig) -> nn.Module:
    """Switch a supernet or evaluation network to `config` (in place; state_dict keys are unchanged).
    With reuse_freed_memory this also sets the process's malloc (keep_freed_memory)."""
    if config.reuse_freed_memory:
        keep_freed_memory()
    for module in model.modules():
        if isinstance(module, MixedOp):
            module.fused = config.fused_mixed_op
        elif isinstance(module, DilConv):
            module.phase_split = config.phase_split_dilated
            module.grad_from_3x3 = config.depthwise5x5_from_3x3
        # Subclasses with the same state and another forward: swapped in place, so keys and values stay.
        elif type(module) in (nn.BatchNorm2d, NarrowBatchNorm2d):
            narrow = config.narrow_batchnorm and module.num_features < NARROW_CHANNELS
            module.__class__ = NarrowBatchNorm2d if narrow else nn.BatchNorm2d
        elif type(module) in (nn.MaxPool2d, SeparableMaxPool2d):
            module.__class__ = SeparableMaxPool2d if config.separable_max_pool else nn.MaxPool2d
        elif type(module) in (nn.AvgPool2d, BoxFilterAvgPool2d):
            module.__class__ = BoxFilterAvgPool2d if config.box_filter_avg_pool else nn.AvgPool2d
        elif type(module) in (nn.Conv2d, Depthwise5x5Conv2d) and is_depthwise_5x5(module):
            module.__class__ = Depthwise5x5Conv2d if config.depthwise5x5_from_3x3 else nn.Conv2d
    return model.to(memory_format=config.memory_format)
