"""Speed settings that keep the results: what to turn on, per device, and how.

Each setting computes the same function as the paper-exact path; only the floating-point order of sums
changes (tests/test_speed.py checks logits and losses against the exact path). The defaults per device come
from measurements with bench.py (README, "Performance"):

| setting              | what it does                                                     | CPU | CUDA |
| -------------------- | ---------------------------------------------------------------- | --- | ---- |
| fused_mixed_op       | supernet edges skip `none`, share one ReLU, accumulate in place  | on  | on   |
| phase_split_dilated  | dilated depthwise convs backward as convs of the 4 sub-images    | on  | off  |
| channels_last        | NHWC memory format for the network and its input batches         | on  | on   |
| reuse_freed_memory   | glibc malloc keeps freed memory for reuse (process-wide)         | on  | off  |

On CUDA, fused_mixed_op and channels_last are chosen because they launch fewer kernels and because cuDNN's
depthwise convolutions favour NHWC; run `python bench.py --device cuda` to check them on your GPU.

reuse_freed_memory exists because glibc hands every block above its mmap threshold (at most 32 MB) back to
the kernel when it is freed, so the next batch's activations of that size arrive as fresh pages that the
kernel must fault in and zero: a 64 MB elementwise op measured 40 ms on freshly mapped memory against 8 ms
on reused memory. Turning mmap and heap trimming off makes freed blocks reusable; the process then keeps its
peak working set mapped, which is what a training loop needs again at the next step anyway. CUDA tensors
come from PyTorch's own caching allocator, so it is off there.
"""
import ctypes
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from model_search import MixedOp
from operations import DilConv


@dataclass(frozen=True)
class SpeedConfig:
    fused_mixed_op: bool = False
    phase_split_dilated: bool = False
    channels_last: bool = False
    reuse_freed_memory: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        on = [name for name, value in asdict(self).items() if value]
        return ', '.join(on) if on else 'paper-exact (none)'


PAPER_EXACT = SpeedConfig()


def default_config(device: torch.device) -> SpeedConfig:
    if device.type == 'cpu':
        return SpeedConfig(fused_mixed_op=True, phase_split_dilated=True, channels_last=True, reuse_freed_memory=True)
    return SpeedConfig(fused_mixed_op=True, phase_split_dilated=False, channels_last=device.type == 'cuda')


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
    return model.to(memory_format=config.memory_format)
