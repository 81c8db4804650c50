"""Two CPU processes with gloo: NT-Xent negatives gathered across ranks give the single-process gradients,
a torchrun training run completes with rank 0 alone writing, and collectives put their tensors where the
backend can move them (nccl: the rank's GPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from dermai import distributed
from dermai.distributed import DistInfo, broadcast_flag, collective_device
from dermai.losses import nt_xent
from dermai.train import read_metrics

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> list[str]:
    """Two local processes under torchrun, each on a free port, running `args`."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}", *args]


def test_gathered_ntxent_gradients_match_single_process(tmp_path: Path) -> None:
    out = tmp_path / "ddp.json"
    cmd = _torchrun(str(REPO / "tests" / "ddp_grad_check.py"), str(out))
    done = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    w = torch.nn.Parameter(torch.eye(6))
    full = nt_xent(a @ w, b @ w, 0.5)
    full.backward()
    assert result["loss"] == pytest.approx(full.item(), rel=1e-5)
    assert torch.allclose(torch.tensor(result["grad"]), w.grad, atol=1e-6)


def test_torchrun_two_process_training(ham_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = _torchrun(
        "-m",
        "dermai",
        "train",
        "--data",
        str(ham_root),
        "--out",
        str(run),
        "--limit",
        "64",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--pretrain-epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--quiet",
        "--precision",
        "fp32",
    )
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"status": "finished"') == 1  # only rank 0 reports
    records = read_metrics(run)
    steps = [r for r in records if r["kind"] == "step"]
    assert len({r["global_step"] for r in steps}) == len(steps)  # one writer: no duplicated lines
    assert records[-1]["kind"] in {"status", "serving"}
    assert (run / "model.safetensors").exists()


def test_collective_tensors_go_where_the_backend_moves_them() -> None:
    assert collective_device("nccl", 1) == torch.device("cuda:1")  # nccl moves CUDA tensors only
    assert collective_device(dist.Backend.NCCL, 0) == torch.device("cuda:0")
    assert collective_device("gloo", 1) == torch.device("cpu")


def test_broadcast_flag_builds_its_tensor_on_the_backends_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under nccl the flag tensor must be on this rank's GPU; checked without one by recording the device the
    flag asks for and the tensor that reaches the collective."""
    asked: list[tuple[str, int]] = []
    sent: list[torch.Tensor] = []

    def device_for(backend: str, local_rank: int) -> torch.device:
        asked.append((backend, local_rank))
        return torch.device("cpu")

    def fake_broadcast(t: torch.Tensor, src: int) -> None:
        sent.append(t)
        t.fill_(1)  # rank 0 said stop

    monkeypatch.setattr(distributed, "collective_device", device_for)
    monkeypatch.setattr(dist, "get_backend", lambda: "nccl")
    monkeypatch.setattr(dist, "broadcast", fake_broadcast)
    assert broadcast_flag(False, DistInfo(rank=1, world_size=2, local_rank=3)) is True
    assert asked == [("nccl", 3)] and len(sent) == 1
    assert broadcast_flag(False, DistInfo()) is False and len(sent) == 1  # alone: no collective at all


def test_broadcast_flag_over_a_real_gloo_group(tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        info = DistInfo(rank=0, world_size=2, local_rank=0)  # "enabled", so the collective really runs
        assert broadcast_flag(True, info) is True and broadcast_flag(False, info) is False
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_broadcast_flag_over_a_real_nccl_group(tmp_path: Path) -> None:
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert broadcast_flag(True, DistInfo(rank=0, world_size=2, local_rank=0)) is True
    finally:
        dist.destroy_process_group()
