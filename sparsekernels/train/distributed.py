"""torch.distributed set-up for torchrun, and the few collectives the loop needs.

Launch with ``torchrun --nproc_per_node=G train.py``; in the script call
:func:`init_from_env` before building the :class:`Trainer`, which then
shards the data, wraps the model in DDP and writes files from rank 0 only.
Under plain ``python`` (no ``WORLD_SIZE`` > 1) it all runs single-process.

Masks (module buffers or parametrization buffers) stay identical across
ranks because pruning hooks compute them from the weights, which DDP keeps
in sync, and because DDP (``broadcast_buffers=True``, its default) copies
rank 0's buffers to the others at every forward. Register parametrizations
*before* the Trainer wraps the model: DDP records its parameters at wrap time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device  # where this process should train


def init_from_env(device: Union[str, torch.device, None] = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables
    (backend nccl on CUDA, gloo on CPU) and pick this rank's device:
    ``cuda:LOCAL_RANK`` (made current) when CUDA is available, else the CPU;
    ``device="cpu"`` keeps every rank on the CPU even where a GPU exists.
    A rank whose LOCAL_RANK has no GPU of its own is refused (two ranks on
    one GPU would share it unawares, and ``set_device`` would fail).
    Without ``WORLD_SIZE`` or with ``WORLD_SIZE=1`` no group is created and
    rank 0 of 1 is returned."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is not None and torch.device(device).type != "cpu":
        raise ValueError(f"device: expected None (CUDA where available) or 'cpu', got {device!r}")
    if device is None and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            raise ValueError(f"LOCAL_RANK={local_rank} but this node has {gpus} CUDA device(s): "
                             f"launch at most {gpus} processes per node, or pass device='cpu'")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size == 1:
        return DistInfo(0, 1, local_rank, device)
    missing = [name for name in TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set: launch with torchrun"
        )
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                init_method="env://")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the rank that logs and writes files (rank 0)."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device, **ddp_kwargs) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel (which broadcasts rank 0's
    parameters and buffers, so all ranks start equal); ``model`` itself when
    not distributed. ``ddp_kwargs`` go to DDP (e.g. find_unused_parameters)."""
    if not is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BN statistics, masks) to every rank. DDP does
    this at the *start* of each forward, so after the last training step each
    rank still holds its own BN statistics; call this before evaluating or
    saving so that all ranks agree with what rank 0 saves."""
    if not is_distributed():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def all_gather_objects(value):
    """``[value of rank 0, value of rank 1, ...]`` (``[value]`` when alone)."""
    if not is_distributed():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
