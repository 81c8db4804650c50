"""Ensembles: mean logits of members served as one model, stored in one weights file, calibrated on
validation, explained by Grad-CAM over every member; members from different splits are refused, and so is
initialising training from another split's weights (it has seen this run's validation or test images)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open

from dermai import cli, jobs, run_deletion, run_status, run_table
from dermai.config import ModelConfig, RunConfig
from dermai.data import DIAGNOSES
from dermai.ensemble import (
    ENSEMBLE_FILES,
    EnsembleError,
    EnsembleModel,
    build_ensemble,
    check_new_out,
    combine,
    ensemble_meta,
    load_members,
    parse_image_sizes,
)
from dermai.evaluate import evaluate
from dermai.model import SimCLRResNet18
from dermai.predict import Predictor
from dermai.saliency import SaliencyExplainer
from dermai.train import TrainingError, train
from dermai.weights import WeightsError, load_weights, save_weights, untrained_classifier
from tests.test_jobs import wait_for
from tests.test_predict import lesion_like

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = list(DIAGNOSES)


def _members(n: int = 2) -> list[SimCLRResNet18]:
    members = []
    for seed in range(n):
        torch.manual_seed(seed)
        members.append(SimCLRResNet18(len(CLASSES)).eval())
    return members


def _meta(**changes: object) -> dict:
    meta = {
        "classes": CLASSES,
        "mode": "multiclass",
        "image_size": 32,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.2, 0.2, 0.2],
        "manifest_sha256": "abc",
        "stages": ["finetune"],
        "model": {"arch": "resnet18"},
        "command": "python -m dermai finetune …",
        "temperature": 1.3,
        "val_metrics": {"val_auroc": 0.8},
    }
    return {**meta, **changes}


def test_logits_are_the_members_mean_and_survive_a_save_and_load(tmp_path: Path) -> None:
    members = _members()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = (members[0](x) + members[1](x)) / 2
        ensemble = EnsembleModel(members).eval()
        assert torch.allclose(ensemble(x), expected, atol=1e-5)
        assert ensemble.features(x).shape == (3, 1024)
        assert torch.allclose(ensemble.classifier(ensemble.features(x)), expected, atol=1e-5)
    assert ensemble.cam_layers == [m.trunk.layer4[-1] for m in members]

    meta = ensemble_meta([_meta(), _meta(val_metrics={"val_auroc": 0.7})], ["a.safetensors", "b.safetensors"], "cmd")
    path = save_weights(ensemble, tmp_path / "model.safetensors", meta)
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
    assert any(k.startswith("members.1.trunk.") for k in keys)
    assert not any(".projection." in k for k in keys)  # serving only: no SimCLR heads in the file
    loaded = load_weights(path)
    assert isinstance(loaded.model, EnsembleModel) and len(loaded.model.members) == 2
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), expected, atol=1e-5)
    assert loaded.meta["model"]["members"] == 2
    assert [m["val_auroc"] for m in loaded.meta["ensemble"]] == [0.8, 0.7]
    assert "temperature" not in loaded.meta  # per-model serving fields are refitted, never inherited


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"manifest_sha256": "def"}, "b.safetensors: manifest_sha256 .* same split"),
        ({"classes": CLASSES[:6]}, "b.safetensors: classes"),
        ({"image_size": "64"}, "b.safetensors: its JSON has no valid 'image_size'"),
        ({"image_size": 0}, "b.safetensors: its JSON has no valid 'image_size'"),
        ({"stages": ["pretrain"]}, "b.safetensors: not a fine-tuned model"),
        (  # stopped while pretraining: finetune was planned, but its classifier never learned
            {"stages": ["pretrain", "finetune"], "status": "stopped", "val_metrics": {"stage": "pretrain"}},
            "b.safetensors: stopped before fine-tuning finished an epoch",
        ),
        ({"ensemble": [{"weights": "x"}, {"weights": "y"}]}, "b.safetensors: is an ensemble already"),
    ],
)
def test_members_that_do_not_fit_together_are_refused_by_name(changes: dict, message: str) -> None:
    with pytest.raises(EnsembleError, match=message):
        ensemble_meta([_meta(), _meta(**changes)], ["a.safetensors", "b.safetensors"], "cmd")


def test_an_ensemble_of_a_stopped_but_fine_tuned_first_member_is_a_finished_model(tmp_path: Path) -> None:
    stopped = _meta(status="stopped", val_metrics={"stage": "finetune", "val_auroc": 0.8})
    meta = ensemble_meta([stopped, _meta()], ["a.safetensors", "b.safetensors"], "cmd")
    assert meta["status"] == "finished" and untrained_classifier(meta) is None  # not "stopped", nor refused
    # an ensemble saved as "stopped" by older versions still unpacks: its status is not its members'
    path = save_weights(EnsembleModel(_members()), tmp_path / "model.safetensors", {**meta, "status": "stopped"})
    _, members = load_members([path], unpack=True)
    assert len(members) == 2 and all("status" not in m.meta for m in members)


def test_members_of_different_input_sizes_each_read_the_input_at_their_own_size(tmp_path: Path) -> None:
    members = _members()
    x = torch.rand(2, 3, 48, 48)
    small = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        expected = (members[0](small) + members[1](x)) / 2
        assert not torch.allclose(members[0](small), members[0](x), atol=1e-3)  # the resize is not a no-op

    meta = ensemble_meta([_meta(image_size=32), _meta(image_size=48)], ["a.safetensors", "b.safetensors"], "cmd")
    assert meta["image_size"] == 48  # the ensemble takes the largest input; the 32 px member gets it resized
    assert meta["model"]["member_image_sizes"] == [32, 48]
    assert [m["image_size"] for m in meta["ensemble"]] == [32, 48]
    path = save_weights(EnsembleModel(members, [32, 48]), tmp_path / "model.safetensors", meta)
    loaded = load_weights(path)
    assert loaded.model.image_sizes == [32, 48]
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), expected, atol=1e-5)
    # Grad-CAM averages maps of different grids (1×1 at 32 px, 2×2 at 48 px), each scaled to the input size
    heatmap = SaliencyExplainer(loaded.model, classes=CLASSES).explain(x[:1], target="malignant")
    assert heatmap.shape == (48, 48) and np.isfinite(heatmap).all()
    # a JSON whose sizes do not fit its members is refused by name, not with a traceback from deep inside
    broken = json.loads(path.with_suffix(".json").read_text())
    broken["model"]["member_image_sizes"] = [32]
    path.with_suffix(".json").write_text(json.dumps(broken))
    with pytest.raises(WeightsError, match="model.json: field 'model.member_image_sizes' must list one"):
        load_weights(path)
    # one size for all: no per-member sizes are stored, and the input passes through untouched
    same = ensemble_meta([_meta(), _meta()], ["a.safetensors", "b.safetensors"], "cmd")
    assert same["image_size"] == 32 and "member_image_sizes" not in same["model"]


def test_members_can_be_served_at_sizes_other_than_their_training_size() -> None:
    paths = ["a.safetensors", "b.safetensors"]
    meta = ensemble_meta([_meta(), _meta()], paths, "cmd", image_sizes=[32, 40])
    assert meta["image_size"] == 40 and meta["model"]["member_image_sizes"] == [32, 40]
    assert [m["image_size"] for m in meta["ensemble"]] == [32, 40]
    assert "trained_image_size" not in meta["ensemble"][0]  # served as trained
    assert meta["ensemble"][1]["trained_image_size"] == 32
    both = ensemble_meta([_meta(), _meta()], paths, "cmd", image_sizes=[40, 40])
    assert both["image_size"] == 40 and "member_image_sizes" not in both["model"]
    with pytest.raises(EnsembleError, match="1 input sizes given for 2 members"):
        ensemble_meta([_meta(), _meta()], paths, "cmd", image_sizes=[40])
    with pytest.raises(EnsembleError, match="input size 0 is not a positive"):
        ensemble_meta([_meta(), _meta()], paths, "cmd", image_sizes=[32, 0])
    assert parse_image_sizes("96, 120") == [96, 120]
    for text in ("96;120", "96,", "96,-1", "big"):
        with pytest.raises(EnsembleError, match=f"input sizes '{text}'"):
            parse_image_sizes(text)


def test_an_ensemble_needs_two_members() -> None:
    with pytest.raises(EnsembleError, match="at least two"):
        EnsembleModel(_members(1))


@pytest.fixture(scope="module")
def two_runs(ham_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, RunConfig]:
    """Two tiny fine-tunes on the same HAM10000 split (split seed 0), with training seeds 0 and 1."""
    paths = []
    for train_seed in (0, 1):
        cfg = RunConfig(stage="finetune")
        cfg.data.data_dir, cfg.data.limit = str(ham_root), 150
        cfg.data.cache_dir = str(tmp_path_factory.mktemp("cache"))
        cfg.train.image_size, cfg.train.batch_size, cfg.train.finetune_epochs = 32, 32, 1
        cfg.train.seed = train_seed
        weights = train(cfg, tmp_path_factory.mktemp(f"run{train_seed}")).weights
        assert weights is not None
        paths.append(weights)
    return paths[0], paths[1], cfg


def test_cli_builds_a_calibrated_ensemble_that_predicts_explains_and_evaluates(
    two_runs: tuple[Path, Path, RunConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second, _ = two_runs
    out = tmp_path / "ens"
    manifest = first.parent / "manifest.csv"
    code = cli.main(["ensemble", str(first), str(second), "--out", str(out), "--manifest", str(manifest)])
    assert code == 0, capsys.readouterr().err
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    loaded = load_weights(out / "model.safetensors")
    meta = loaded.meta
    assert meta["model"]["members"] == 2 and meta["temperature"] > 0
    assert set(meta["operating_points"]) == {"refer", "urgent"}
    assert loaded.extra["ood_mean"].shape == (1024,)  # OOD distances over both members' features
    assert meta["val_metrics"]["val_auroc"] == pytest.approx(answer["val_auroc"])
    assert [e["weights"] for e in meta["ensemble"]] == [str(first), str(second)]
    config = json.loads((out / "config.json").read_text())
    assert config["members"] == [str(first), str(second)] and config["command"].startswith("python -m dermai ensemble")

    predictor = Predictor.from_weights(out / "model.safetensors")
    prediction = predictor.predict(lesion_like(3))
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    heatmap = predictor.explain(lesion_like(3), target="malignant").heatmap
    assert heatmap.shape == (32, 32) and np.isfinite(heatmap).all()

    report, predictions = evaluate(out / "model.safetensors", split="val", manifest=manifest, n_boot=0)
    assert report["n_images"] == len(predictions) > 0 and 0 <= report["auroc"] <= 1

    assert cli.main(["ensemble", str(first), str(second), "--out", str(out)]) == 2  # never overwrites
    assert "exists already" in capsys.readouterr().err

    # the second member served above its training size: it reads the input resized to 40 px, the first at 32
    resized = tmp_path / "ens-40"
    code = cli.main(["ensemble", str(first), str(second), "--out", str(resized), "--image-sizes", "32,40"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    bigger = load_weights(resized / "model.safetensors")
    assert (bigger.meta["image_size"], bigger.model.image_sizes) == (40, [32, 40])
    assert bigger.meta["ensemble"][1]["trained_image_size"] == 32
    assert "--image-sizes 32,40" in bigger.meta["command"]
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        small = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        expected = (loaded.model.members[0](small) + loaded.model.members[1](x)) / 2
        assert torch.allclose(bigger.model(x), expected, atol=1e-5)
    with pytest.raises(SystemExit):
        cli.main(["ensemble", str(first), str(second), "--out", str(tmp_path / "bad"), "--image-sizes", "32,x"])
    assert "input sizes '32,x'" in capsys.readouterr().err and not (tmp_path / "bad").exists()

    runs = run_table.list_runs(tmp_path)  # the folder reads as a finished run, with the ensemble's own val AUROC
    row = runs[runs["name"] == "ens"].iloc[0]
    assert (row["stage"], row["status"], row["epochs"]) == ("ensemble", "finished", "2 members")
    assert row["best_val_auroc"] == pytest.approx(answer["val_auroc"])
    assert run_table.finished_weights(tmp_path) == {}  # an ensemble never starts a run nor joins another


def test_a_failed_calibration_leaves_no_ensemble_behind(two_runs: tuple[Path, Path, RunConfig], tmp_path: Path) -> None:
    first, second, _ = two_runs
    out = tmp_path / "ens"
    out.mkdir()
    (out / "job.log").write_text("kept")  # the app's job log lives in the same folder
    with pytest.raises(ValueError, match="empty"):
        build_ensemble([first, second], out, "cmd", data_dir=tmp_path / "empty")
    assert not any((out / name).exists() for name in ENSEMBLE_FILES)
    assert (out / "job.log").read_text() == "kept"


def test_a_cancelled_ensemble_job_leaves_no_files(
    two_runs: tuple[Path, Path, RunConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, _ = two_runs
    out = tmp_path / "ens"

    def cancelled(*args: object, **kwargs: object) -> None:  # the app's Cancel arrives while calibrating
        assert (out / "model.safetensors").exists()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt the fit")

    monkeypatch.setattr("dermai.serving.fit_serving", cancelled)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["ensemble", str(first), str(second), "--out", str(out)]) == 130
    assert not any((out / name).exists() for name in ENSEMBLE_FILES)
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.slow
def test_the_app_job_builds_an_ensemble_and_refuses_bad_members_up_front(
    two_runs: tuple[Path, Path, RunConfig], tmp_path: Path, ham_root: Path
) -> None:
    first, second, _ = two_runs
    runs = tmp_path / "runs"
    with pytest.raises(jobs.JobError, match="at least two"):
        jobs.start_ensemble_job([str(first)], runs)
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes(second.read_bytes())
    meta = json.loads(second.with_suffix(".json").read_text())
    (other / "model.json").write_text(json.dumps({**meta, "manifest_sha256": "0" * 64}))
    with pytest.raises(jobs.JobError, match="other/model.safetensors: manifest_sha256 .* same split"):
        jobs.start_ensemble_job([str(first), str(other / "model.safetensors")], runs)
    with pytest.raises(jobs.JobError, match="1 input sizes given for 2 members"):
        jobs.start_ensemble_job([str(first), str(second)], runs, image_sizes=[40])
    assert jobs.current_job(runs) is None  # refused before any process started

    job = jobs.start_ensemble_job([str(first), str(second)], runs, "pair", data=str(ham_root), image_sizes=[32, 40])
    try:
        wait_for(lambda: jobs.current_job(runs) is None, timeout=240, what="the ensemble job to end")
        status = run_status.run_status(job.run_dir, runs)
        assert status.status == "finished", run_status.log_tail(job.run_dir)
        assert status.weights == Path(job.run_dir) / "model.safetensors"
        built = load_weights(status.weights)
        assert built.meta["model"]["members"] == 2 and built.model.image_sizes == [32, 40]
    finally:
        jobs.cancel_job(runs)
    with pytest.raises(jobs.JobError, match="holds a run already"):
        jobs.start_ensemble_job([str(first), str(second)], runs, "pair")


@pytest.mark.slow
def test_the_app_trains_a_member_from_a_finished_runs_weights(
    two_runs: tuple[Path, Path, RunConfig], tmp_path: Path, ham_root: Path
) -> None:
    first, _, cfg = two_runs
    runs = tmp_path / "runs"
    options = {
        "data": str(ham_root),
        "limit": cfg.data.limit,
        "seed": 0,
        "image_size": 32,
        "batch_size": 32,
        "finetune_epochs": 1,
        "init_weights": str(first),
        "train_seed": 5,
        "reset_classifier": True,
        "augment": ["hair_p=0.3"],
    }
    job = jobs.start_job("finetune", options, runs, name="member")
    try:
        wait_for(lambda: jobs.current_job(runs) is None, timeout=240, what="the member's job to end")
        assert run_status.run_status(job.run_dir, runs).status == "finished", run_status.log_tail(job.run_dir)
    finally:
        jobs.cancel_job(runs)
    saved = json.loads((Path(job.run_dir) / "config.json").read_text())
    assert (saved["init_weights"], saved["reset_classifier"]) == (str(first), True)
    assert (saved["config"]["train"]["seed"], saved["config"]["data"]["seed"]) == (5, 0)
    assert saved["config"]["augment"]["hair_p"] == 0.3
    assert (
        load_weights(Path(job.run_dir) / "model.safetensors").meta["manifest_sha256"]
        == (load_weights(first).meta["manifest_sha256"])
    )


def test_the_app_refuses_start_weights_the_trainer_would_refuse(
    two_runs: tuple[Path, Path, RunConfig], tmp_path: Path
) -> None:
    first, _, cfg = two_runs
    runs = tmp_path / "runs"
    with pytest.raises(jobs.JobError, match=r"another split \(seed 0, this run 1\)"):
        jobs.start_job("finetune", {"init_weights": str(first), "seed": 1, "limit": cfg.data.limit}, runs)
    with pytest.raises(jobs.JobError, match=r"another split \(limit 150, this run None\)"):
        jobs.start_job("finetune", {"init_weights": str(first), "seed": 0}, runs)
    assert jobs.current_job(runs) is None and not runs.exists()


def test_training_refuses_an_ensemble_or_another_splits_weights_as_its_start(
    two_runs: tuple[Path, Path, RunConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second, cfg = two_runs
    other_split = copy.deepcopy(cfg)
    other_split.data.seed = 1
    with pytest.raises(TrainingError, match=r"another split \(seed 0, this run 1\)"):
        train(other_split, tmp_path / "leaky", init_weights=str(first))
    assert cli.main(["ensemble", str(first), str(second), "--out", str(tmp_path / "ens")]) == 0
    capsys.readouterr()
    with pytest.raises(TrainingError, match="an ensemble cannot initialise a run"):
        train(copy.deepcopy(cfg), tmp_path / "from-ensemble", init_weights=str(tmp_path / "ens" / "model.safetensors"))
    options = {"init_weights": str(tmp_path / "ens" / "model.safetensors"), "seed": 0, "limit": cfg.data.limit}
    with pytest.raises(jobs.JobError, match="an ensemble cannot start a run"):
        jobs.start_job("finetune", options, tmp_path / "runs")  # the app refuses it before launching

    # FILE#K starts from member K (a shipped model is an ensemble, and often all that is left of its members):
    # its trunk and classifier, with the run's own projection head (an ensemble keeps none)
    ensemble = tmp_path / "ens" / "model.safetensors"
    one_epoch = copy.deepcopy(cfg)
    one_epoch.train.lr = 1e-9  # all but frozen: the run's weights stay those it started from
    one_epoch.train.lambda_ntxent = 0.0
    train(one_epoch, tmp_path / "from-member", init_weights=f"{ensemble}#2")
    started = load_weights(tmp_path / "from-member" / "model.safetensors").model.state_dict()
    member = load_weights(second).model.state_dict()
    for key in ("trunk.conv1.weight", "trunk.layer4.1.conv2.weight", "classifier.weight"):
        torch.testing.assert_close(started[key], member[key], atol=1e-4, rtol=0)
    for spec, message in ((f"{ensemble}#3", "holds no member 3 \\(it has 2\\)"), (f"{second}#1", "holds no member 1")):
        with pytest.raises(TrainingError, match=message):
            train(copy.deepcopy(cfg), tmp_path / "bad-member", init_weights=spec)


def _script(name: str) -> Any:
    """A script in scripts/ imported as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_member_sizes_script_scores_members_and_size_combinations_on_validation(
    two_runs: tuple[Path, Path, RunConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script("member_sizes")
    # the grid: every size combination, ranked; the informative member's good size wins
    y = np.array([0, 0, 1, 1])
    meta = {"classes": CLASSES, "temperature": 1.0}
    mel = CLASSES.index("mel")
    good, bad, flat = np.zeros((4, 7)), np.zeros((4, 7)), np.zeros((4, 7))
    good[:, mel], bad[:, mel] = [0, 1, 2, 3], [3, 2, 1, 0]
    grid = script.size_grid([{96: flat}, {96: bad, 120: good}], y, meta)
    assert [sizes for sizes, _ in grid] == [(96, 120), (96, 96)]
    assert grid[0][1] == 1.0 and grid[1][1] == 0.0
    # balanced accuracy of a combination: argmax of the mean logits, recall averaged over the classes present
    labels, right, all_first = np.array([0, 1, 2, 3]), 2 * np.eye(7)[[0, 1, 2, 3]], np.eye(7)[[0, 0, 0, 0]]
    assert script.balanced_accuracy([{96: right}, {96: all_first}], (96, 96), labels) == 1.0
    assert script.balanced_accuracy([{96: right}, {96: 5 * all_first}], (96, 96), labels) == 0.25

    first, second, _ = two_runs
    assert script.main([str(first), str(second), "--sizes", "32", "40"]) == 0
    out = capsys.readouterr().out
    assert "validation split:" in out and f"{first} (trained at 32 px) | " in out
    line = r"--image-sizes (32|40),(32|40): \d\.\d{4} \(balanced accuracy \d\.\d{3}\)"
    assert len(re.findall(line, out)) == 4  # 2 sizes × 2 members

    # pairs: each pair at its own best sizes, best pair first (three members give three pairs)
    pairs = script.pair_grid([{96: flat}, {96: bad, 120: good}, {96: bad}], y, meta)
    assert [(ij, sizes, auroc) for auroc, ij, sizes in pairs] == [
        ((0, 1), (96, 120), 1.0),
        ((1, 2), (120, 96), 0.5),
        ((0, 2), (96, 96), 0.0),
    ]
    assert script.main([str(first), str(second), str(first), "--sizes", "32", "--pairs"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r" \+ .* --image-sizes 32,32: \d\.\d{4} \(balanced accuracy \d\.\d{3}\)", out)) == 3

    # an ensemble file stands for its members: the shipped model's members scored beside a new candidate
    pair = [load_weights(first), load_weights(second)]
    ens_meta = ensemble_meta([item.meta for item in pair], [str(first), str(second)], "cmd")
    built = save_weights(
        EnsembleModel([item.model for item in pair]), first.parent.parent / "ens" / "m.safetensors", ens_meta
    )
    assert script.main([str(built), str(first), "--sizes", "32", "--pairs"]) == 0
    out = capsys.readouterr().out
    scores = dict(re.findall(r"^(\S+) \(trained at 32 px\) \| (\d\.\d{4})$", out, flags=re.M))
    assert set(scores) == {f"{built}#1", f"{built}#2", str(first)}
    assert scores[f"{built}#1"] == scores[str(first)]  # member 1 is `first`, unchanged

    # a size may be height x width: a member served at HAM10000's 4:3 shape
    assert script.main([str(first), str(second), "--sizes", "32", "24x32"]) == 0
    out = capsys.readouterr().out
    assert "member | 32 px | 24×32 px" in out and len(re.findall(r"--image-sizes (32|24x32),(32|24x32): ", out)) == 4

    # bad input: one usage error naming the problem, never a traceback
    for argv, message in (
        ([str(first), "--sizes", "24x", "--pairs"], "--sizes: input sizes '24x'"),
        ([str(first), "--sizes", "32", "--pairs"], "--pairs needs two or more members"),
        ([str(first), "missing.safetensors", "--sizes", "32"], "missing.safetensors: weights file not found"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            script.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_soup_script_averages_members_greedily_on_validation(
    two_runs: tuple[Path, Path, RunConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script("soup_members")
    first, second, _ = two_runs
    a, b = load_weights(first).model, load_weights(second).model
    soup = script.average_weights([a, b])
    name, weight = next((k, v) for k, v in soup.state_dict().items() if v.is_floating_point() and v.ndim == 4)
    assert torch.allclose(weight, (a.state_dict()[name] + b.state_dict()[name]) / 2)
    assert not torch.equal(a.state_dict()[name], b.state_dict()[name])  # the two runs do differ
    assert torch.equal(soup.state_dict()["classifier.weight"], (a.classifier.weight + b.classifier.weight) / 2)

    assert script.main([str(first), str(second)]) == 0
    out = capsys.readouterr().out
    singles = re.findall(r"run\d+/model\.safetensors: (\d\.\d{4}) / \d\.\d{3}", out)
    assert len(singles) == 2 and "at 32 px" in out
    assert re.search(r"soup of 2 \(\+ .*\): \d\.\d{4} / \d\.\d{3}", out)
    greedy = re.search(r"greedy soup: ([12]) of 2 members, validation AUROC (\d\.\d{4})", out)
    assert greedy and float(greedy[2]) >= max(map(float, singles))  # a soup is kept only if it scores higher

    with pytest.raises(SystemExit) as exit_info:
        script.main([str(first)])
    assert exit_info.value.code == 2 and "a soup needs two or more members" in capsys.readouterr().err


def test_members_keep_their_own_colour_constancy_through_save_and_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    constant = SimCLRResNet18(len(CLASSES), ModelConfig(color_constancy=True), [0.5] * 3, [0.2] * 3).eval()
    plain = _members(1)[0]
    metas = [_meta(model={"arch": "resnet18", "color_constancy": True}), _meta()]
    meta = ensemble_meta(metas, ["cc.safetensors", "plain.safetensors"], "cmd")
    assert meta["model"]["member_color_constancy"] == [True, False]
    path = save_weights(EnsembleModel([constant, plain]), tmp_path / "model.safetensors", meta)
    loaded = load_weights(path).model
    assert [m.color_constancy for m in loaded.members] == [True, False]
    x = torch.rand(2, 3, 32, 32) * torch.tensor([0.9, 0.6, 0.4]).view(1, 3, 1, 1)  # pixels with a colour cast
    normalised = (x - 0.5) / 0.2
    with torch.no_grad():
        expected = (constant(normalised) + plain(normalised)) / 2
        torch.testing.assert_close(loaded(normalised), expected, atol=1e-5, rtol=0)
    same = ensemble_meta([_meta(), _meta()], ["a", "b"], "cmd")
    assert "member_color_constancy" not in same["model"]  # one setting for all: nothing to list


def test_an_ensemble_file_unpacks_into_its_members_for_scoring_beside_others(tmp_path: Path) -> None:
    torch.manual_seed(0)
    constant = SimCLRResNet18(len(CLASSES), ModelConfig(color_constancy=True), [0.5] * 3, [0.2] * 3).eval()
    plain, single = _members(2)
    metas = [_meta(model={"arch": "resnet18", "color_constancy": True}), _meta(command="second")]
    meta = ensemble_meta(metas, ["cc.safetensors", "plain.safetensors"], "cmd", image_sizes=[32, 40])
    path = save_weights(EnsembleModel([constant, plain], [32, 40]), tmp_path / "ens" / "model.safetensors", meta)
    single_path = save_weights(single, tmp_path / "single" / "model.safetensors", _meta())

    with pytest.raises(EnsembleError, match="is an ensemble already"):  # by default an ensemble is one model
        load_members([path, single_path])
    labels, loaded = load_members([path, single_path], unpack=True)
    assert labels == [f"{path}#1", f"{path}#2", str(single_path)]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for item, original in zip(loaded, (constant, plain, single), strict=True):
            torch.testing.assert_close(item.model(x), original(x))  # each network as it was, at any size
    first, second = loaded[0].meta, loaded[1].meta
    assert first["model"]["color_constancy"] is True and second["model"]["color_constancy"] is False
    assert first["image_size"] == second["image_size"] == 32  # trained at 32; member 2 was served at 40
    assert second["unpacked_from"]["served_image_size"] == 40 and second["command"] == "second"
    assert "temperature" not in second and "ensemble" not in second  # the ensemble's calibration is not its own

    # FILE#K names one member: an ensemble is rebuilt from a member of another and a new model
    model, rebuilt = combine([f"{path}#2", single_path], "cmd")
    assert [m["weights"] for m in rebuilt["ensemble"]] == [f"{path}#2", str(single_path)]
    with torch.no_grad():
        torch.testing.assert_close(model(x), (plain(x) + single(x)) / 2)
    for spec, message in ((f"{path}#3", "holds no member 3 \\(it has 2\\)"), (f"{single_path}#1", "holds no member 1")):
        with pytest.raises(EnsembleError, match=message):
            combine([spec, single_path], "cmd")


def test_aspect_probe_reframes_validation_images_and_a_portrait_scores_as_its_original(
    two_runs: tuple[Path, Path, RunConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    script = _script("aspect_probe")
    image = Image.new("RGB", (200, 150))
    sizes = {name: frame(image).size for name, frame in script.FRAMINGS.items()}
    assert list(sizes.values()) == [(200, 150), (150, 200), (150, 150), (150, 112), (200, 150)] + [
        (180, 135),
        (160, 120),
        (140, 105),
    ]
    zoomed = np.asarray(script.zoom(0.8)(Image.fromarray(np.arange(150 * 200, dtype=np.int32).reshape(150, 200))))
    assert zoomed[0, 0] == 15 * 200 + 20  # the centre: 15 rows and 20 columns cut from each side
    padded = np.asarray(script.square_padded(Image.new("RGB", (200, 150), (255, 255, 255))))
    assert padded[:, :25].max() == 0 and padded[:, 25:175].min() == 255  # black bars beside the square
    with pytest.raises(SystemExit) as usage:  # a bad weights file: one line naming it, exit 2
        script.main(["--weights", str(tmp_path / "none.safetensors")])
    assert usage.value.code == 2 and "none.safetensors" in capsys.readouterr().err

    first, _, _ = two_runs
    assert script.main(["--weights", str(first), "--views"]) == 0
    rows = [
        line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "0." in line
    ]
    assert len(rows) == 8 + 8 + 2  # the framings, each view, the two means
    assert rows[1][2:] == rows[0][2:]  # turned back to landscape by resize_input: the same scores
    assert rows[8][1:] == rows[0][2:]  # the first view (no turn, not mirrored) is the stored image


def test_member_sizes_scores_an_uncalibrated_member_with_its_training_prior(
    two_runs: tuple[Path, Path, RunConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed before calibration has no log_prior in its JSON; the script computes it from the split, so
    the member scores as it will once calibrated, not as if every diagnosis were equally common."""
    first, _, _ = two_runs
    bare = tmp_path / "bare" / "model.safetensors"
    bare.parent.mkdir()
    shutil.copy(first, bare)
    meta = json.loads(first.with_suffix(".json").read_text())
    assert meta.get("log_prior")  # the trainer calibrated it
    bare.with_suffix(".json").write_text(json.dumps({k: v for k, v in meta.items() if k != "log_prior"}))
    script = _script("member_sizes")
    assert script.main([str(first), str(bare), "--sizes", "32"]) == 0
    out = capsys.readouterr().out
    cells = [line.split(" | ")[1] for line in out.splitlines() if "(trained at 32 px) | " in line]
    assert len(cells) == 2 and cells[0] == cells[1]


def test_a_non_square_member_joins_a_square_one_at_the_largest_frame_and_unpacks_as_trained(tmp_path: Path) -> None:
    square, wide = _members()
    metas = [_meta(), _meta(image_size=24, image_width=32)]  # a 32 px square, and one trained at 24×32 (4:3)
    meta = ensemble_meta(metas, ["sq.safetensors", "wide.safetensors"], "cmd")
    assert meta["image_size"] == 32 and "image_width" not in meta  # 32 by 32 holds both: a square frame
    assert meta["model"]["member_image_sizes"] == [32, [24, 32]]
    served = ensemble_meta(metas, ["sq.safetensors", "wide.safetensors"], "cmd", image_sizes=[24, (30, 40)])
    assert (served["image_size"], served["image_width"]) == (30, 40)  # the largest height by the largest width
    assert served["model"]["member_image_sizes"] == [24, [30, 40]]
    assert served["ensemble"][1]["trained_image_size"] == [24, 32]

    path = save_weights(EnsembleModel([square, wide], [24, (30, 40)]), tmp_path / "model.safetensors", served)
    loaded = load_weights(path)
    assert loaded.model.image_sizes == [24, (30, 40)]
    x = torch.rand(2, 3, 30, 40)

    def resized(t: torch.Tensor, frame: tuple[int, int]) -> torch.Tensor:
        return torch.nn.functional.interpolate(t, size=frame, mode="bilinear", align_corners=False, antialias=True)

    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), (square(resized(x, (24, 24))) + wide(x)) / 2)
        # a quarter-turned view (test-time augmentation) reaches the wide member in its frame turned too
        turned = torch.rot90(x, 1, dims=(2, 3))
        torch.testing.assert_close(loaded.model(turned), (square(resized(turned, (24, 24))) + wide(turned)) / 2)
    heatmap = SaliencyExplainer(loaded.model, classes=CLASSES).explain(x[:1], target="malignant")
    assert heatmap.shape == (30, 40) and np.isfinite(heatmap).all()

    _, members = load_members([path], unpack=True)
    assert [(m.meta["image_size"], m.meta.get("image_width")) for m in members] == [(32, None), (24, 32)]
    assert members[1].meta["unpacked_from"]["served_image_size"] == [30, 40]
    assert parse_image_sizes("96, 120x160, 90 × 120") == [96, (120, 160), (90, 120)]
    assert parse_image_sizes("120x120") == [120]  # a square written as height × width is a square
    for text in ("96,120x", "1x2x3", "120x0"):
        with pytest.raises(EnsembleError, match=f"input sizes '{text}'"):
            parse_image_sizes(text)
    for width in ("wide", [24, 32]):  # a width is one number of pixels
        with pytest.raises(EnsembleError, match="wide.safetensors: its JSON has no valid 'image_width'"):
            ensemble_meta([_meta(), _meta(image_width=width)], ["sq.safetensors", "wide.safetensors"], "cmd")


def _saved_members(root: Path) -> list[Path]:
    """Two small members of one split, saved as weights files under `root`."""
    return [save_weights(m, root / f"m{k}" / "model.safetensors", _meta()) for k, m in enumerate(_members())]


@pytest.mark.parametrize("entry", ["config.json", "metrics.jsonl", "model.json", "checkpoints", ".owner"])
def test_an_out_folder_holding_a_run_is_refused_and_left_as_it_was(tmp_path: Path, entry: str) -> None:
    members = _saved_members(tmp_path)
    out = tmp_path / "run-in-progress"
    out.mkdir()
    (out / "job.log").write_text("kept")
    if entry == "checkpoints":
        (out / entry).mkdir()
    else:
        (out / entry).write_text("the run's own")
    with pytest.raises(EnsembleError, match=f"{re.escape(str(out / entry))}: exists already"):
        build_ensemble(members, out, "cmd")
    assert sorted(os.listdir(out)) == sorted([entry, "job.log"])  # nothing written, nothing deleted
    assert entry == "checkpoints" or (out / entry).read_text() == "the run's own"


def test_an_out_folder_holding_someone_elses_file_is_refused_and_a_launchers_log_is_not(tmp_path: Path) -> None:
    members = _saved_members(tmp_path)
    out = tmp_path / "notes-folder"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    with pytest.raises(EnsembleError, match=f"{re.escape(str(out / 'notes.md'))}: exists already, and is not an"):
        build_ensemble(members, out, "cmd")
    assert os.listdir(out) == ["notes.md"] and (out / "notes.md").read_text() == "mine"
    (out / "notes.md").unlink()
    (out / "job.log").write_text("the app's log")  # what the Training page writes before the job starts
    check_new_out(out)


def test_a_failed_fit_removes_only_what_it_wrote(tmp_path: Path) -> None:
    members = _saved_members(tmp_path)
    out = tmp_path / "ens"
    with pytest.raises(ValueError, match="cannot rebuild their split"):  # the members record no data folder
        build_ensemble(members, out, "cmd")
    assert not out.exists()  # the folder it made, emptied, is gone too


def test_aspect_probe_scores_weights_whose_json_leaves_out_mean_and_std(
    two_runs: tuple[Path, Path, RunConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Weights without `mean`/`std` in their JSON are normalised as `load_weights` builds them (ImageNet's, which
    these runs trained with): the probe prints what it prints for the full JSON, instead of a KeyError."""
    first, _, _ = two_runs
    bare = tmp_path / "bare" / "model.safetensors"
    bare.parent.mkdir()
    shutil.copy(first, bare)
    meta = json.loads(first.with_suffix(".json").read_text())
    assert meta["mean"] and meta["std"]  # else the copy below proves nothing
    bare.with_suffix(".json").write_text(json.dumps({k: v for k, v in meta.items() if k not in ("mean", "std")}))
    script = _script("aspect_probe")
    assert script.main(["--weights", str(first)]) == 0
    expected = capsys.readouterr().out
    assert script.main(["--weights", str(bare)]) == 0
    assert capsys.readouterr().out == expected.replace(str(first), str(bare))


def test_a_command_line_ensemble_holds_its_folder_as_a_trainer_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m dermai ensemble … --out runs/NAME` from a terminal scores images for minutes after writing its
    weights: it holds the folder's owner lock meanwhile, so the run reads "running" (not "not started"), its
    weights are not offered, and the app neither starts a job beside it nor deletes it. A failed build leaves
    no lock file behind in a folder it did not make (an app job's), so the folder can be used again."""
    members = [str(m) for m in _saved_members(tmp_path)]
    runs = tmp_path / "runs"
    out = runs / "ens"
    seen: dict[str, Any] = {}

    def fit(target: Path, *args: object, **kwargs: object) -> dict[str, Any]:  # while it scores validation
        seen["status"] = run_status.run_status(out, runs).status
        seen["holders"] = jobs.command_line_runs(runs)
        seen["offered"] = run_table.finished_weights(runs, ensembles=True)
        with pytest.raises(jobs.JobError, match="run 'ens' is still running"):
            run_deletion.delete_run(out, runs)
        return {"weights": str(target), "temperature": 1.0, "val_metrics": {"val_auroc": 0.75}}

    monkeypatch.setattr("dermai.serving.fit_serving", fit)
    monkeypatch.setattr("dermai.serving.fit_context_if_possible", lambda *args, **kwargs: None)
    assert cli.main(["ensemble", *members, "--out", str(out)]) == 0, capsys.readouterr().err
    assert seen == {"status": "running", "holders": [(out, f"pid {os.getpid()}")], "offered": {}}
    assert run_status.run_status(out, runs).status == "finished" and jobs.command_line_runs(runs) == []
    assert list(run_table.finished_weights(runs, ensembles=True).values()) == [str(out / "model.safetensors")]

    app_job = runs / "failed"
    app_job.mkdir()
    (app_job / "job.log").write_text("kept")
    monkeypatch.setattr("dermai.serving.fit_serving", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build_ensemble(members, app_job, "cmd")
    assert os.listdir(app_job) == ["job.log"]  # no ensemble files, and no lock file to refuse a retry
