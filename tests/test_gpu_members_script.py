"""scripts/gpu_members.sh at toy scale on the CPU: probe and smoke runs first, two trunks (or one), fine-tunings
from each with options of their own, a FixRes step from one of them, and the best runs and the trunks packed in
fp16 beside every run's config and metrics, in pieces under 16 MB; a run that outlasts its deadline is killed so
that the packing still happens."""

from __future__ import annotations

import json
import sys
import tarfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from dermai.weights import load_weights
from tests.test_gpu_recipe_script import run_toy_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_members.sh"


def test_members_come_back_packed_one_per_trunk(ham_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_toy_script(
        SCRIPT,
        [str(tmp_path / "runs"), str(out)],
        ham_root,
        timeout=900,
        CACHE_SIZES="32",  # the up-front decoding, here of the toy folder
        PRE_A_SIZE="32",
        PRE_B_SIZE="32",
        SMOKE_SIZE="32",
        MAX_PRE_EPOCHS="2",
        FT_EPOCHS="1",
        DEADLINE_S="100000",
        FT_S="50000",
        FIX_S="20000",
        RETURN_MAX="3",
        SMOKE_ARGS="--label-smoothing 0.05",
        VARIANTS="ga32 a 32 16 1e-3 11\nga40 a 40 16 1e-3 12\ngb32 b 32 16 1e-3 13 --label-smoothing 0.1",
        FIX_VARIANTS="xga32 ga32 40 1 1e-4 21 --temperature 0.2\nxnone nowhere 40 1 1e-4 22",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "each trunk gets 2 epochs" in done.stdout  # the cap, since the budget is ample
    parts = sorted(out.glob("runs.tar.part*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts) and (out / "logs.txt").exists()
    joined = tmp_path / "runs.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        tar.extractall(tmp_path / "back", filter="data")
    back = tmp_path / "back" / "gpu-runs"
    assert {p.name for p in back.iterdir()} == {
        "probe-pretrain",
        "smoke-finetune",
        "trunk-a",
        "trunk-b",
        "ga32",
        "ga40",
        "gb32",
        "xga32",
    }
    assert "xnone: no weights from nowhere, skipped" in done.stdout
    for trunk in ("trunk-a", "trunk-b"):
        epochs = [json.loads(x) for x in (back / trunk / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [0, 1]
    config = json.loads((back / "gb32" / "config.json").read_text())
    assert config["init_weights"] == str(tmp_path / "runs" / "trunk-b" / "model.safetensors")
    assert config["config"]["augment"]["hair_p"] == 0.2 and config["config"]["train"]["seed"] == 13
    assert config["config"]["train"]["label_smoothing"] == 0.1  # the line's own option
    smoke = json.loads((back / "smoke-finetune" / "config.json").read_text())
    assert smoke["config"]["train"]["label_smoothing"] == 0.05  # SMOKE_ARGS
    fix = json.loads((back / "xga32" / "config.json").read_text())  # the FixRes step, from ga32
    assert fix["init_weights"] == str(tmp_path / "runs" / "ga32" / "model.safetensors")
    train = fix["config"]["train"]
    assert (train["image_size"], train["finetune_epochs"], train["lr"], train["warmup_epochs"]) == (40, 1, 1e-4, 0.5)
    assert train["temperature"] == 0.2 and fix["config"]["augment"]["hair_p"] == 0.2
    # RETURN_MAX 3: the best of trunk a's lineage (FixRes step included), gb32 (trunk b's only run), the next best
    scores = {
        r: json.loads((back / r / "model.json").read_text())["val_metrics"]["val_auroc"]
        for r in ("ga32", "ga40", "xga32")
    }
    ranked = sorted(scores, key=scores.get, reverse=True)
    with_weights = {p.parent.name for p in back.glob("*/model.safetensors")}
    assert with_weights == {ranked[0], ranked[1], "gb32", "trunk-a", "trunk-b"}
    tensors = load_file(str(back / "gb32" / "model.safetensors"))
    floats = [t for k, t in tensors.items() if t.is_floating_point() and not k.startswith("extra.")]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    assert load_weights(back / "gb32" / "model.safetensors").meta["image_size"] == 32


def test_a_fine_tuning_that_overruns_is_killed_and_the_rest_comes_back(ham_root: Path, tmp_path: Path) -> None:
    """One trunk alone (PRE_B_SIZE empty), and a fine-tuning that ignores its STOP file (here a stand-in that only
    sleeps, as a run stuck calibrating would): it is killed CALIB_S after the deadline, and the trunk and the
    other fine-tuning are still packed, well before the call's own limit."""
    real_py = sys.executable
    fake_py = tmp_path / "py"
    fake_py.write_text(
        "#!/usr/bin/env bash\n"
        'for a in "$@"; do case "$a" in */hang) mkdir -p "$a"; exec sleep 1000;; esac; done\n'
        f'exec "{real_py}" "$@"\n'
    )
    fake_py.chmod(0o755)
    out = tmp_path / "out"
    started = time.monotonic()
    done = run_toy_script(
        SCRIPT,
        [str(tmp_path / "runs"), str(out)],
        ham_root,
        timeout=600,
        PY=str(fake_py),
        CACHE_SIZES="32",
        PRE_A_SIZE="32",
        PRE_B_SIZE="",
        SMOKE_SIZE="32",
        MAX_PRE_EPOCHS="2",
        FT_EPOCHS="1",
        # the fine-tunings' deadline falls at +200 s, the kill at +210 s (the real runs need under a minute)
        DEADLINE_S="230",
        PACK_S="20",
        CALIB_S="10",
        FT_S="60",
        VARIANTS="ga32 a 32 16 1e-3 11\nhang a 32 16 1e-3 12",
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "each trunk gets 2 epochs" in done.stdout
    assert "/hang killed 10s after its deadline" in done.stdout
    assert 200 <= took < 300  # waited for the deadline and the grace, not for the stand-in's 1000 s
    joined = tmp_path / "runs.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in sorted(out.glob("runs.tar.part*"))))
    with tarfile.open(joined) as tar:
        tar.extractall(tmp_path / "back", filter="data")
    back = tmp_path / "back" / "gpu-runs"
    assert not (back / "trunk-b").exists()
    assert {p.parent.name for p in back.glob("*/model.safetensors")} == {"ga32", "trunk-a"}
