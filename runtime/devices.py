"""Multi-process training with PyTorch's own engine: torchrun sets the environment, we read it.

    torchrun --nproc_per_node=4 train.py ...                                  # one machine, 4 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 --rdzv_id=evnas train.py ...          # two machines

Without torchrun (no WORLD_SIZE in the environment) everything here is a no-op for one process.
"""
import copy
import functools
import inspect
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Optional, Tuple

import torch
import torch.distributed as dist

from runtime.run_dirs import RunLock, new_run_dir
from runtime.settings import RunSettings
from runtime.stopping import StopSignals
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


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')  # where collectives run: the GPU with NCCL, the CPU with gloo

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) logs and writes files."""
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor, op: str = 'sum') -> torch.Tensor:
        """Sum (or max) a tensor over ranks; returns a new tensor on the collectives' device (NCCL's GPU or
        gloo's CPU), the input is left as it was."""
        if not self.enabled:
            return tensor
        out = tensor.to(self.device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.MAX if op == 'max' else dist.ReduceOp.SUM)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's value of a picklable object, on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_object(self, obj: Any) -> Optional[list]:
        """Every rank's value of a picklable object, as a list on rank 0 (None elsewhere)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics): one broadcast per dtype of all of
        them flattened, instead of one per tensor (a supernet has thousands)."""
        if not self.enabled:
            return
        groups = {}
        for buffer in model.buffers():
            groups.setdefault((buffer.dtype, buffer.device), []).append(buffer)
        for buffers in groups.values():
            flat = torch.cat([b.reshape(-1) for b in buffers]).to(self.device)
            dist.broadcast(flat, src=0)
            for buffer, value in zip(buffers, flat.split([b.numel() for b in buffers])):
                buffer.copy_(value.view_as(buffer))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def setup(device_name: str) -> tuple:
    """(Distributed, device) for this process. Under torchrun each process takes the GPU of its local rank
    (NCCL) or, on CPU, the gloo backend."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size <= 1:
        return Distributed(), resolve_device(device_name)
    rank, local_rank = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', '0'))
    use_cuda = device_name != 'cpu' and torch.cuda.is_available()
    if device_name.startswith('cuda') and not use_cuda:
        raise UserError(f"--device {device_name}: CUDA is not available on this machine")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                            f"use --nproc_per_node <= the number of GPUs")
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
        _init_process_group('nccl', rank, world_size, device_id=device)
    else:
        device = torch.device('cpu')
        _init_process_group('gloo', rank, world_size)
    return Distributed(rank, world_size, local_rank, device), device


def _init_process_group(backend: str, rank: int, world_size: int, **kwargs) -> None:
    restart = elastic_restart_count()
    if restart == 0:
        dist.init_process_group(backend, **kwargs)
        return
    # After an elastic restart the rendezvous store still holds the addresses the dead processes published,
    # and the new processes would try to connect to them ("Connection refused"); give this attempt keys of
    # its own.
    hosted_by_agent = os.environ.get('TORCHELASTIC_USE_AGENT_STORE', '').lower() == 'true'
    store = dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']), world_size,
                          is_master=rank == 0 and not hosted_by_agent)
    dist.init_process_group(backend, store=dist.PrefixStore(f"evnas/restart{restart}/", store), rank=rank,
                            world_size=world_size, **kwargs)


def run(place: RunSettings, prefix: str, program: str, prepare: Callable, body: Callable,
        checkpoint_name: str = 'checkpoint.pt') -> Any:
    """The frame of every training script: set up the processes, read the inputs with prepare(device), make
    (or reopen, with --resume) the run directory, lock it, and call body(inputs, run_dir, dist, device, stop).

    The inputs (datasets, a genotype) are read before the run directory exists, so that a start that fails
    on them leaves nothing behind. Under torchrun, SIGTERM keeps its default action, so that a process
    blocked in a collective dies at once when the job is torn down; Ctrl-C still stops every rank at its next
    check. A single process stops at a safe point on either.
    """
    dist, device = setup(place.device)
    try:
        inputs = prepare(device)
        run_dir = shared_run_dir(place, dist, prefix, program, checkpoint_name)
        with (RunLock(run_dir) if dist.is_main else nullcontext()), StopSignals(not dist.enabled) as stop:
            result = body(inputs, run_dir, dist, device, stop)
        # The ranks leave together: a gloo process that tore its group down while rank 0 was still writing the
        # run's last files aborted now and then ("terminate called without an active exception").
        dist.barrier()
        return result
    finally:
        dist.close()


def wrap(model: torch.nn.Module, dist: Distributed, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    """The module a training step calls: the model itself, or DistributedDataParallel around it."""
    if not dist.enabled:
        return model
    if sync_bn:
        if device.type != 'cuda':
            raise UserError("--sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU implementation)")
        model = sync_batchnorm_copy(model)
    # Training-mode BatchNorm normalises with batch statistics, so nothing needs rank 0's buffers before every
    # forward (DDP's default re-broadcasts them all each step); the runs broadcast them once per generation or
    # epoch instead (Distributed.broadcast_buffers), before anything reads them.
    # Newer torch names the switch forward_sync_buffers and deprecates the old one (docs/several-gpus.md).
    ddp = torch.nn.parallel.DistributedDataParallel
    no_sync = ({'forward_sync_buffers': False} if 'forward_sync_buffers' in inspect.signature(ddp).parameters
               else {'broadcast_buffers': False})
    return ddp(model, device_ids=[device.index] if device.type == 'cuda' else None, **no_sync)


def sync_batchnorm_copy(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with a SyncBatchNorm in place of every BatchNorm, sharing all of its parameter and buffer tensors,
    for the training steps of --sync_bn; `model` itself is left unconverted. The search's fitness calls `model`:
    there the ranks score different individuals, so train-mode statistics must stay each rank's own, and
    collectives inside it would stop matching when the population does not divide among the ranks."""
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(_same_tensors_new_tree(model))


def _same_tensors_new_tree(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module tree whose modules are new objects and whose parameters and buffers are the
    original tensors (what convert_sync_batchnorm rewrites is the copy's tree, not the original's)."""
    clone = copy.copy(module)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    clone._modules = {name: None if child is None else _same_tensors_new_tree(child)
                      for name, child in module._modules.items()}
    return clone


def shared_run_dir(place: RunSettings, dist: Distributed, prefix: str, program: str, checkpoint_name: str) -> str:
    """The run directory: --resume, --run_dir, or (--dir or cwd)/PREFIX-YYYYMMDD-HHMMSS for a new
    run. Rank 0 creates it and tells the other ranks."""
    if place.resume:
        return place.resume
    path = None
    if dist.is_main:
        default = os.path.join(place.parent or os.getcwd(), f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            # An elastic restart that comes before the first checkpoint starts the same run afresh.
            path = new_run_dir(place.run_dir or default, program, checkpoint_name, reuse=elastic_restart_count() > 0)
        except UserError as e:
            path = e  # every rank must learn of the failure, or the others would wait forever
    path = dist.broadcast_object(path)
    if isinstance(path, Exception):
        raise UserError(str(path))
    return path


def elastic_restart_count() -> int:
    """How many times torchrun has restarted this job (--max_restarts); 0 outside torchrun."""
    return int(os.environ.get('TORCHELASTIC_RESTART_COUNT', '0'))
