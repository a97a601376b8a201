"""Distributed helpers. Rank and world size come only from torch.distributed (torchrun sets it up)."""
from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def get_local_rank() -> int:
    # torchrun exports LOCAL_RANK; a single process has none and is local rank 0.
    return int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(timeout_s: int = 1800) -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE set); a no-op for a single process.

    NCCL when CUDA is available, gloo otherwise (gloo works on CPU).
    """
    if is_dist() or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(get_local_rank())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))


def synchronize() -> None:
    if is_dist() and get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank; returns a list indexed by rank (one item without DDP)."""
    if not is_dist() or get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_dist() or get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if not is_dist() or get_world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / get_world_size()
