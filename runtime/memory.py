"""Memory: what a phase of a run takes on its device (the allocator's peak on CUDA, the resident high-water mark
on a CPU) and what the device has."""
import resource
from contextlib import contextmanager
from typing import Dict, Iterator, Optional

import torch

MB = 2 ** 20
def resident_mb() -> Optional[float]:
    """The process's resident memory now (Linux; None elsewhere)."""
    return _status_mb('VmRSS:')


def _status_mb(key: str) -> Optional[float]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_high_water_mark() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:  # '5' resets the peak resident set size (Linux)
            f.write('5')
        return True
    except OSError:
        return False


@contextmanager
def peak_memory(device: torch.device, out: Dict) -> Iterator[None]:
    """The peak while the block runs, into out['peak_mb']: on CUDA the caching allocator's reserved peak (what
    it took from the device; the CUDA context comes on top), on a Linux CPU the process's resident high-water
    mark (VmHWM, reset at the start). Nothing is set where neither can be read."""
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        yield
        out['peak_mb'] = torch.cuda.max_memory_reserved(device) / MB
        return
    reset = _reset_high_water_mark()
    yield
    if reset:
        peak = _status_mb('VmHWM:')
        if peak is not None:
            out['peak_mb'] = peak


def device_memory_mb(device: torch.device) -> Optional[float]:
    """What the device can hold: a GPU's total memory; on a CPU the smaller of the machine's memory and the
    process's address-space limit (RLIMIT_AS), where set."""
    if device.type == 'cuda':
        return torch.cuda.get_device_properties(device).total_memory / MB
    total = None
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemTotal:'):
                    total = int(line.split()[1]) / 1024
    except OSError:
        pass
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        total = min(total, limit / MB) if total is not None else limit / MB
    return total


def outside_allocator_mb(device: torch.device) -> Optional[float]:
    """On CUDA, what the device holds beyond this process's caching allocator: the CUDA context (kernels,
    cuBLAS and cuDNN workspaces) and any other process's memory. None elsewhere."""
    if device.type != 'cuda':
        return None
    free, total = torch.cuda.mem_get_info(device)
    return (total - free - torch.cuda.memory_reserved(device)) / MB


def reached_mb(device: torch.device) -> Optional[float]:
    """The peak reached so far: the allocator's reserved peak on CUDA, the resident high-water mark on a CPU."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_reserved(device) / MB
    return _status_mb('VmHWM:')


def gb(mb: Optional[float]) -> str:
    return '?' if mb is None else f'{mb / 1024:.1f} GB'
