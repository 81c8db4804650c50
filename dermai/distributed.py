"""torchrun / DistributedDataParallel helpers: init, rank, gathering with gradients, rank-0 writes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the process group torchrun set up (gloo on CPU, nccl on GPU); a no-op when run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's rows (as in lightly's GatherLayer)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(out, t.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(grads)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def gather_with_grad(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """All ranks' rows concatenated, gradients flowing back to each rank's own rows (NT-Xent negatives)."""
    if not info.enabled:
        return t
    return torch.cat(_GatherWithGrad.apply(t), dim=0)


def collective_device(backend: str, local_rank: int) -> torch.device:
    """Where a tensor made for a collective must live: nccl moves only CUDA tensors (a CPU one fails at the
    first call), gloo reads CPU ones."""
    return torch.device(f"cuda:{local_rank}") if str(backend).lower() == "nccl" else torch.device("cpu")


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0's decision (e.g. stop) shared with every rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=collective_device(dist.get_backend(), info.local_rank))
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
