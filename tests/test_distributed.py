"""Two CPU processes with gloo: NT-Xent negatives gathered across ranks give the single-process gradients,
and a torchrun training run completes with rank 0 alone writing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dermai.distributed import DistInfo, gather_with_grad
from dermai.losses import nt_xent, nt_xent_global
from dermai.train import read_metrics

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, a: torch.Tensor, b: torch.Tensor, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    n = a.shape[0] // 2
    w = torch.nn.Parameter(torch.eye(a.shape[1]))  # a shared "model": z = x @ w
    z_a, z_b = a[rank * n : (rank + 1) * n] @ w, b[rank * n : (rank + 1) * n] @ w
    info = DistInfo(rank=rank, world_size=2)
    loss = nt_xent_global(z_a, z_b, gather_with_grad(z_a, info), gather_with_grad(z_b, info), rank * n, 0.5)
    loss.backward()
    dist.all_reduce(w.grad)  # what DDP does: average the ranks' gradients
    out[rank] = (loss.detach(), w.grad / 2)
    dist.destroy_process_group()


def test_gathered_ntxent_gradients_match_single_process() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(_free_port(), a, b, out), nprocs=2, join=True)
    w = torch.nn.Parameter(torch.eye(6))
    full = nt_xent(a @ w, b @ w, 0.5)
    full.backward()
    mean_loss = (out[0][0] + out[1][0]) / 2
    assert mean_loss.item() == pytest.approx(full.item(), rel=1e-5)
    assert torch.allclose(out[0][1], w.grad, atol=1e-6) and torch.allclose(out[1][1], w.grad, atol=1e-6)


def test_torchrun_two_process_training(ham_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "dermai", "train", "--data", str(ham_root), "--out", str(run), "--limit", "64", "--image-size", "32",
           "--batch-size", "8", "--pretrain-epochs", "1", "--finetune-epochs", "1", "--quiet", "--precision", "fp32"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"status": "finished"') == 1  # only rank 0 reports
    records = read_metrics(run)
    steps = [r for r in records if r["kind"] == "step"]
    assert len({r["global_step"] for r in steps}) == len(steps)  # one writer: no duplicated lines
    assert records[-1]["kind"] in {"status", "serving"}
    assert (run / "model.safetensors").exists()
