"""scripts/train_default_gpu.sh at toy scale on the CPU: probes time both stages, the pretraining epochs fit
the budget (capped), fine-tuning starts from the pretrained trunk, and every run ends with weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_default_gpu.sh"


def run_toy_script(
    script: Path, args: list[str], ham_root: Path, timeout: int = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    """A scripts/ shell recipe on the CPU at toy scale (64 images, one thread), run from the repo root."""
    return subprocess.run(
        ["bash", str(script), *args],
        env={
            **os.environ,
            "PY": sys.executable,
            "DERMAI_DATA": str(ham_root),
            "EXTRA_ARGS": "--limit 64",
            "OMP_NUM_THREADS": "1",
            **env,
        },
        cwd=script.parents[1],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_recipe(ham_root: Path, runs: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_toy_script(SCRIPT, [str(runs)], ham_root, **{"PRE_SIZE": "32", "FT_SIZE": "40", "FT_EPOCHS": "1", **env})


def test_recipe_fits_pretraining_to_the_budget_and_fine_tunes_from_it(ham_root: Path, tmp_path: Path) -> None:
    done = run_recipe(ham_root, tmp_path, BUDGET_S="100000", MAX_PRETRAIN_EPOCHS="2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pretraining 2 epochs" in done.stdout  # the cap, since the budget is ample
    pretrain = [json.loads(x) for x in (tmp_path / "default-pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in pretrain if r["kind"] == "epoch"] == [0, 1]
    finetune_meta = json.loads((tmp_path / "default-finetune" / "model.json").read_text())
    assert finetune_meta["image_size"] == 40 and finetune_meta["status"] == "finished"
    config = json.loads((tmp_path / "default-finetune" / "config.json").read_text())
    assert config["init_weights"] == str(tmp_path / "default-pretrain" / "model.safetensors")
    assert config["config"]["train"]["label_smoothing"] == 0.1


def test_watchdog_stops_an_overrunning_stage_and_the_run_still_ends_with_weights(
    ham_root: Path, tmp_path: Path
) -> None:
    # A budget already spent by the probes: pretraining is cut at its deadline, fine-tuning still runs
    # (a stopped pretraining run's weights are a trunk like any other) and is cut in turn.
    done = run_recipe(ham_root, tmp_path, BUDGET_S="1", MAX_PRETRAIN_EPOCHS="100000", FT_EPOCHS="100000")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "watchdog: " in done.stdout
    for run in ("default-pretrain", "default-finetune"):
        assert json.loads((tmp_path / run / "model.json").read_text())["status"] == "stopped", run
