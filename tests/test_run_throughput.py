"""bench/run_throughput.py reads a run folder's speed from its config.json and metrics.jsonl."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("run_throughput", ROOT / "bench" / "run_throughput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_uses_steps_after_the_first_epoch_and_epoch_spacing(tmp_path: Path) -> None:
    config = {"config": {"stage": "pretrain", "train": {"image_size": 64, "batch_size": 32}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    records = [
        {"time": 0.0, "kind": "step", "epoch": 0, "images_per_s": 1.0},  # warm-up epoch: left out
        {"time": 1.0, "kind": "epoch", "epoch": 0},
        {"time": 2.0, "kind": "step", "epoch": 1, "images_per_s": 100.0},
        {"time": 3.0, "kind": "step", "epoch": 1, "images_per_s": 300.0},
        {"time": 4.0, "kind": "epoch", "epoch": 1},
        {"time": 9.0, "kind": "epoch", "epoch": 2},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    summary = load_bench().summarise(tmp_path)
    assert summary["images_per_s"] == 200 and summary["epochs"] == 3
    assert summary["epoch_s"] == 4.0  # median of 3 s and 5 s
    assert summary["wall_s"] == 9 and summary["image_size"] == 64 and summary["batch"] == 32
    config["config"]["train"]["image_width"] = 96  # trained at 64×96 (--image-width): both sides shown
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_bench().summarise(tmp_path)["image_size"] == "64×96"


def test_committed_gpu_runs_match_the_benchmark_table() -> None:
    summary = load_bench().summarise(ROOT / "docs" / "training_runs" / "h100-2026-11-26" / "default-pretrain")
    row = f"| default-pretrain | pretrain | 128 | 256 | {summary['images_per_s']} | {summary['epoch_s']} | 321 |"
    assert row in (ROOT / "docs" / "benchmarks.md").read_text()


def test_folders_that_are_not_training_runs_are_named_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_bench()
    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / "config.json").write_text(json.dumps({"command": "ensemble …", "members": []}))
    run = ROOT / "docs" / "training_runs" / "h100-2026-11-26" / "default-pretrain"
    bench.main([str(tmp_path / "ens"), str(run), str(tmp_path / "missing")])
    out, err = capsys.readouterr()
    assert "| default-pretrain | pretrain | 128 |" in out and "ens" not in out
    assert f"{tmp_path / 'ens'}: not a training run" in err and f"{tmp_path / 'missing'}: not a training run" in err
    with pytest.raises(SystemExit, match="ens: not a training run"):
        bench.main(["--epoch-seconds", str(tmp_path / "ens")])


def test_the_training_pages_fp32_slowdown_comes_from_the_committed_runs() -> None:
    """The Training page tells a researcher on a CPU without bf16 how much longer the recipes take; its figures
    are the committed fp32 and bf16 fine-tunings at 96 px, as bench/run_throughput.py reads them."""
    from dermai.ui.training_form import FP32_SLOWDOWN, preset_label, training_speed_note

    runs = ROOT / "docs" / "training_runs"
    fp32 = load_bench().summarise(runs / "cpu-ensemble-2026-11-27" / "member-seed1")
    bf16 = load_bench().summarise(runs / "cpu-lambda-tau-2026-11-29" / "member-tau02")
    assert fp32["image_size"] == bf16["image_size"] == 96
    note = training_speed_note(None, cpu_bf16=False)
    assert f"{fp32['images_per_s']} images/s in fp32 against {bf16['images_per_s']} under bf16" in note
    assert FP32_SLOWDOWN == round(bf16["images_per_s"] / fp32["images_per_s"], 1)
    assert f"about {FP32_SLOWDOWN}× their bf16 times" in note
    step2 = "CPU 2 · fine-tuning from step 1: 96 px, 30 epochs"  # 35 min under bf16
    assert preset_label(step2, None, cpu_bf16=True) == f"{step2} (about 35 min)"
    assert preset_label(step2, None, cpu_bf16=False) == f"{step2} (about 1.6 h here, in fp32)"
    assert preset_label(step2, "NVIDIA H100", cpu_bf16=False) == step2  # no CPU time on a GPU
    quick = "Quick check: 300 images, 64 px, 2 + 2 epochs"  # measured in both: overheads dominate, not 2.7×
    assert preset_label(quick, None, cpu_bf16=False) == f"{quick} (about 29 s here, in fp32)"
    assert "fp32" not in training_speed_note(None, cpu_bf16=True)
    assert "GPU (NVIDIA H100)" in training_speed_note("NVIDIA H100", cpu_bf16=False)
