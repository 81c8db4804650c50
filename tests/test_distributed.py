"""Two CPU processes with gloo: NT-Xent negatives gathered across ranks give the single-process gradients,
and a torchrun training run completes with rank 0 alone writing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
