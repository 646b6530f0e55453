"""Speed settings that keep the results: what to turn on, per device, and how.

Each setting computes the same function as the paper-exact path; only the floating-point order of sums
changes (tests/test_speed.py checks logits and losses against the exact path). The defaults per device come
from measurements with bench.py (README, "Performance"):

| setting              | what it does                                                     | CPU | CUDA |
| -------------------- | ---------------------------------------------------------------- | --- | ---- |
| fused_mixed_op       | supernet edges skip `none`, share one ReLU, accumulate in place  | on  | on   |
| phase_split_dilated  | dilated depthwise convs backward as convs of the 4 sub-images    | on  | off  |
| channels_last        | NHWC memory format for the network and its input batches         | on  | on   |

On CUDA, fused_mixed_op and channels_last are chosen because they launch fewer kernels and because cuDNN's
depthwise convolutions favour NHWC; run `python bench.py --device cuda` to check them on your GPU.
"""
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

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        on = [name for name, value in asdict(self).items() if value]
        return ', '.join(on) if on else 'paper-exact (none)'


PAPER_EXACT = SpeedConfig()


def default_config(device: torch.device) -> SpeedConfig:
    if device.type == 'cpu':
        return SpeedConfig(fused_mixed_op=True, phase_split_dilated=True, channels_last=True)
    return SpeedConfig(fused_mixed_op=True, phase_split_dilated=False, channels_last=device.type == 'cuda')


def apply(model: nn.Module, config: SpeedConfig) -> nn.Module:
    """Switch a supernet or evaluation network to `config` (in place; state_dict keys are unchanged)."""
    for module in model.modules():
        if isinstance(module, MixedOp):
            module.fused = config.fused_mixed_op
        elif isinstance(module, DilConv):
            module.phase_split = config.phase_split_dilated
    return model.to(memory_format=config.memory_format)
