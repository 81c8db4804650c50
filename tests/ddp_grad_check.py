"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): each rank takes half of a fixed
batch, computes NT-Xent against negatives gathered from both ranks, and backpropagates into a shared linear
"model"; rank 0 writes the rank-averaged loss and gradient (what DDP would apply) to the JSON path given."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from dermai.distributed import gather_with_grad, init_distributed
from dermai.losses import nt_xent_global


def main(out: str) -> None:
    info = init_distributed()
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    n = a.shape[0] // info.world_size
    w = torch.nn.Parameter(torch.eye(6))
    rows = slice(info.rank * n, (info.rank + 1) * n)
    z_a, z_b = a[rows] @ w, b[rows] @ w
    loss = nt_xent_global(z_a, z_b, gather_with_grad(z_a, info), gather_with_grad(z_b, info), info.rank * n, 0.5)
    loss.backward()
    grad, total = w.grad.clone(), loss.detach().clone()
    dist.all_reduce(grad)
    dist.all_reduce(total)
    if info.is_main:
        payload = {"loss": total.item() / info.world_size, "grad": (grad / info.world_size).tolist()}
        with open(out, "w") as handle:
            json.dump(payload, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
