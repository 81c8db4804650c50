"""A realistic runs folder for timing the Training page and `run_table.list_runs` without training anything.

    python bench/synthetic_runs.py DIR [--runs 30] [--checkpoint-mb 3]

Most runs are finished pretrain or fine-tune runs of 30 to 80 epochs whose metrics.jsonl holds records of the
shapes real runs write (step records every 10 steps, one epoch record per epoch, serving and status records, as in
docs/training_runs/*/metrics.jsonl), a config.json taken from a real run there, a job.log, an .owner file, a
manifest, checkpoints (dummy bytes) and weights; every tenth run is stopped, interrupted, failed before its
config or not started. Nothing here is read from images: the manifest names made-up image ids.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "docs" / "training_runs"
CONFIGS = {  # stage → a real run's config.json, its settings kept and its epochs set per synthetic run
    "pretrain": TEMPLATES / "cpu-pretrain-m-2026-11-29" / "pretrain-m" / "config.json",
    "finetune": TEMPLATES / "h200-2026-11-30" / "m128" / "config.json",
}
STEPS_PER_EPOCH = 55  # 7,000 training images at batch 128
LOG_EVERY = 10
KINDS = ["finished"] * 6 + ["stopped", "interrupted", "failed", "not started"]  # one of each per ten runs


def _step(rng: random.Random, t: float, stage: str, epoch: int, step: int, total: int) -> dict[str, Any]:
    """A step record as the trainer writes it every LOG_EVERY steps (fine-tuning adds its losses)."""
    done = epoch * STEPS_PER_EPOCH + step + 1
    record: dict[str, Any] = {
        "time": t,
        "kind": "step",
        "stage": stage,
        "epoch": epoch,
        "step": step,
        "global_step": done,
        "total_steps": total,
        "lr": 5e-4 * rng.random(),
        "images_per_s": 3000 + 1000 * rng.random(),
        "eta_s": (total - done) * 0.03,
        "ntxent": 2 + rng.random(),
    }
    if stage == "finetune":
        record.update(mask_loss=0.4 * rng.random(), ce=1 + rng.random(), train_acc=0.5 + 0.4 * rng.random())
    record["loss"] = 3 + rng.random()
    return record


def _epoch(rng: random.Random, t: float, stage: str, epoch: int, total: int, best: float) -> dict[str, Any]:
    """An epoch record; a fine-tuning one carries its validation scores."""
    record: dict[str, Any] = {
        "time": t,
        "kind": "epoch",
        "stage": stage,
        "epoch": epoch,
        "global_step": (epoch + 1) * STEPS_PER_EPOCH,
        "total_steps": total,
        "loss": 2 + rng.random(),
    }
    if stage == "finetune":
        val = 0.85 + 0.05 * rng.random()
        record.update(
            train_acc=0.6 + 0.3 * rng.random(),
            val_auroc=val,
            val_acc=0.6 + 0.1 * rng.random(),
            val_bacc=0.6 + 0.1 * rng.random(),
            best_val_auroc=max(best, val),
        )
    return record


def metrics(
    rng: random.Random, run: Path, stage: str, planned: int, trained: int, end: str | None, t: float
) -> list[str]:
    """The metrics.jsonl lines of a run started at `t` that trained `trained` of `planned` epochs and ended with
    status `end` (None: killed, no status record)."""
    total, best = planned * STEPS_PER_EPOCH, 0.0
    records: list[dict[str, Any]] = []
    for epoch in range(trained):
        for step in range(0, STEPS_PER_EPOCH, LOG_EVERY):
            t += 0.3
            records.append(_step(rng, t, stage, epoch, step, total))
        records.append(_epoch(rng, t, stage, epoch, total, best))
        best = records[-1].get("best_val_auroc", best)
    if end == "finished":
        serving = {"status": "fitted", "temperature": 1.1, "val_auroc": best, "n_val": 1501}
        records.append(
            {"time": t + 1, "kind": "serving", **(serving if stage == "finetune" else {"status": "skipped"})}
        )
    if end is not None:
        weights = str(run / "model.safetensors")
        records.append({"time": t + 2, "kind": "status", "status": end, "weights": weights, "best_score": best or None})
    return [json.dumps(record) for record in records]


def _config(stage: str, planned: int, run: Path) -> str:
    """A real run's config.json with this run's stage, epochs and folder."""
    saved = json.loads(CONFIGS[stage].read_text())
    saved["config"]["stage"] = stage
    saved["config"]["train"][f"{stage}_epochs"] = planned
    saved["command"] = f"python -m dermai {stage} --out {run} --{stage}-epochs {planned}"
    return json.dumps(saved, indent=2)


def build_run(rng: random.Random, run: Path, kind: str, stage: str, checkpoint_mb: int) -> None:
    """One run folder of `kind` (finished, stopped, interrupted, failed, not started)."""
    run.mkdir(parents=True)
    log = run / "job.log"
    started = time.time() - 86400 * rng.uniform(1, 30)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started - 5))
    launched = f"--- dermai app: job started {stamp} (t={started - 5:.3f}) ---\n"  # as the app's job.log begins
    if kind == "failed":  # failed before its trainer wrote a config: its job log says why
        log.write_text(f"{launched}error: data folder: no HAM10000_metadata.csv\n")
        _date(run, started)
        return
    planned = rng.randint(30, 80)
    (run / "config.json").write_text(_config(stage, planned, run))
    (run / "manifest.csv").write_text(
        "image_id,lesion_id,dx,split\n"
        + "".join(f"SYN_{i:07d},SYNL_{i:07d},nv,{'train' if i % 7 else 'val'}\n" for i in range(10015))
    )
    if kind == "not started":
        _date(run, started)
        return
    trained = planned if kind == "finished" else rng.randint(1, planned - 1)
    end = {"finished": "finished", "stopped": "stopped"}.get(kind)
    lines = metrics(rng, run, stage, planned, trained, end, started)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    log.write_text(launched + "".join(f"epoch {epoch} done\n" for epoch in range(trained)))
    (run / ".owner").write_text("12345")  # no process holds it: the run is not running
    checkpoints = run / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "last.pt").write_bytes(rng.randbytes(checkpoint_mb << 20))
    (checkpoints / "best.safetensors").write_bytes(rng.randbytes(checkpoint_mb << 19))
    if end is not None:
        (run / "model.safetensors").write_bytes(rng.randbytes(checkpoint_mb << 19))
        (run / "model.json").write_text(json.dumps({"stage": stage}))
    _date(run, json.loads(lines[-1])["time"])


def _date(run: Path, when: float) -> None:
    """Every file of `run` dated `when`, as a run that ended then left them: a lock or log newer than a run's
    last status record reads as a later job that died."""
    for path in [*run.rglob("*"), run]:
        os.utime(path, (when, when))


def build_runs(root: str | Path, count: int = 30, checkpoint_mb: int = 3, seed: int = 0) -> Path:
    """`count` run folders in `root` (created; it must not hold runs already), the same for the same seed."""
    root, rng = Path(root), random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise SystemExit(f"{root}: not empty; give a new folder for the synthetic runs")
    for i in range(count):
        kind, stage = KINDS[i % len(KINDS)], ("pretrain", "finetune")[i % 2]
        build_run(rng, root / f"syn-{i:02d}-{stage}-{kind.replace(' ', '-')}", kind, stage, checkpoint_mb)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="new folder to fill with run folders")
    parser.add_argument("--runs", type=int, default=30, help="how many run folders (default 30)")
    parser.add_argument("--checkpoint-mb", type=int, default=3, help="size of each dummy last.pt (default 3)")
    args = parser.parse_args()
    root = build_runs(args.folder, args.runs, args.checkpoint_mb)
    print(f"{args.runs} runs in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
