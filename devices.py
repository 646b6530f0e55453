"""The device a run computes on, and how: --device resolved, cuDNN's determinism, and mixed precision (bf16
autocast, or fp16 with a gradient scaler on GPUs without bf16)."""
import functools
from contextlib import nullcontext
from typing import Callable, ContextManager, Optional, Tuple

import torch

from utils import UserError


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; `cuda` and `cuda:N` must exist."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} (or --gpu): CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != 'cpu':
        if device.type == 'mps' and not torch.backends.mps.is_available():
            raise UserError(f"--device {name}: MPS is not available on this machine")
    return device


def configure_cudnn(device: torch.device, benchmark: bool) -> None:
    """NOTE (faithful to EvNAS): the original search and training set cudnn.deterministic = True and
    cudnn.benchmark = False; --cudnn_benchmark trades that reproducibility for speed. Nothing to do off CUDA."""
    if device.type == 'cuda':
        torch.backends.cudnn.deterministic = not benchmark
        torch.backends.cudnn.benchmark = benchmark


def mixed_precision(device: torch.device, enabled: bool
                    ) -> Tuple[Callable[[], ContextManager], Optional[torch.amp.GradScaler], str]:
    """(autocast factory, GradScaler or None, name) for --amp: bf16 where the device supports it, else fp16
    with a gradient scaler. Disabled, it is a no-op context and fp32, as in the paper."""
    if not enabled:
        return nullcontext, None, 'fp32'
    if device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        return (functools.partial(torch.autocast, 'cuda', dtype=torch.float16), torch.amp.GradScaler('cuda'),
                'fp16')
    return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16), None, 'bf16'
