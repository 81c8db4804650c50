"""The command line never destroys what the user made: a training --out folder holding other files, a data folder's
metadata CSV, images and masks, a folder in the runs folder that is not a run, a read-only file, an experiment's
--out holding other files, and an ensemble's --out or members given wrongly are all refused before anything is
written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dermai import cli, jobs, run_deletion
from dermai.config import RunConfig, to_dict
from dermai.data import DIAGNOSES
from dermai.experiment import _train_once, label_efficiency, run_config
from dermai.model import SimCLRResNet18
from dermai.train import JOB_LOG, OWNER_FILE, STOP_FILE, foreign_entry
from dermai.weights import save_weights
from tests.conftest import ham_rows, make_folder
from tests.test_cli_outputs import image_and_metadata, no_scoring, refused, snapshot, weights_path

__all__ = ["no_scoring", "weights_path"]  # fixtures used by name below


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A small synthetic data folder (images in imgs/nested, a metadata CSV) with a masks folder."""
    root = make_folder(tmp_path / "data", ham_rows(n_lesions_per_dx=3, images_per_lesion=1))
    (root / "masks").mkdir()
    (root / "masks" / "I_mel_0_0_segmentation.png").write_bytes(b"mask")
    return root


def test_a_training_out_folder_holding_other_files_is_refused_before_anything_is_written(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "model.safetensors").write_bytes(b"the user's weights")
    (shipped / "model.json").write_text('{"mine": 1}')
    before = snapshot(shipped)
    argv = ["finetune", "--data", str(data), "--image-size", "16", "--finetune-epochs", "1", "--quiet"]
    err = refused([*argv, "--out", str(shipped)], capsys)
    assert f"{shipped / 'model.json'}: exists already" in err and "choose another --out folder" in err
    assert snapshot(shipped) == before  # nothing replaced, nothing added (no lock file, no config.json)
    own = tmp_path / "own"
    own.mkdir()
    (own / "config.json").write_text('{"mine": 1}')
    assert f"{own / 'config.json'}: exists already" in refused([*argv, "--out", str(own)], capsys)
    assert (own / "config.json").read_text() == '{"mine": 1}' and not (own / OWNER_FILE).exists()


def test_a_new_run_folder_may_hold_only_a_launchers_files(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    assert foreign_entry(folder) is None  # not made yet
    folder.mkdir()
    for name in (JOB_LOG, STOP_FILE, OWNER_FILE):  # the app's log and STOP, a trainer's lock: a new run's own
        (folder / name).write_text("")
    assert foreign_entry(folder) is None
    (folder / "notes.md").write_text("mine")
    assert foreign_entry(folder) == folder / "notes.md"


def test_the_training_page_refuses_a_run_name_whose_folder_holds_other_files(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / "mine").mkdir(parents=True)
    (runs / "mine" / "notes.md").write_text("mine")
    with pytest.raises(jobs.JobError, match=r"mine/notes\.md: exists already; .* pick another name"):
        jobs.start_job("finetune", {}, runs, name="mine")
    assert sorted(p.name for p in (runs / "mine").iterdir()) == ["notes.md"]


@pytest.mark.usefixtures("no_scoring")
def test_evaluate_and_compare_outputs_may_not_replace_the_data_folders_files(
    weights_path: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(data)
    csv, image, mask = data / "metadata.csv", data / "imgs" / "nested" / "I_bcc_0_0.jpg", data / "masks" / "new.png"
    evaluate = ["evaluate", "--weights", str(weights_path), "--data", str(data)]
    p, r = str(tmp_path / "p.csv"), str(tmp_path / "r.json")
    err = refused([*evaluate, "--out", r, "--predictions", str(csv)], capsys)
    assert f"--predictions {csv} is the data folder's metadata CSV" in err and "would destroy it" in err
    assert f"--out {csv} is the data folder's metadata CSV" in refused(
        [*evaluate, "--out", str(csv), "--predictions", p], capsys
    )
    err = refused([*evaluate, "--out", r, "--predictions", str(image)], capsys)
    assert f"--predictions {image} is in the data folder's images or masks ({image.parent})" in err
    assert f"--out {mask} is in the data folder's images or masks" in refused(
        [*evaluate, "--out", str(mask), "--predictions", p], capsys
    )
    other = save_weights(SimCLRResNet18(len(DIAGNOSES)), tmp_path / "b" / "model.safetensors", {"classes": ["a"]})
    compare = ["compare", str(weights_path), str(other), "--data", str(data)]
    assert f"--out {csv} is the data folder's metadata CSV" in refused([*compare, "--out", str(csv)], capsys)
    assert f"--out {image} is in the data folder's images" in refused([*compare, "--out", str(image)], capsys)
    assert snapshot(data) == before


@pytest.mark.usefixtures("no_scoring")
def test_evaluate_without_data_protects_the_folder_the_weights_were_trained_on(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    meta = {"classes": list(DIAGNOSES), "image_size": 32, "config": {"data": {"data_dir": str(data)}}}
    weights = save_weights(SimCLRResNet18(len(DIAGNOSES)), tmp_path / "w" / "model.safetensors", meta)
    csv = data / "metadata.csv"
    argv = ["evaluate", "--weights", str(weights), "--out", str(tmp_path / "r.json"), "--predictions", str(csv)]
    assert f"--predictions {csv} is the data folder's metadata CSV" in refused(argv, capsys)


def test_data_split_may_not_write_into_the_data_folders_images_or_masks(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(data)
    image = data / "imgs" / "nested" / "I_df_1_0.jpg"
    err = refused(["data", "split", "--data", str(data), "--out", str(image)], capsys)
    assert f"--out {image} is in the data folder's images or masks" in err
    mask = data / "masks" / "I_mel_0_0_segmentation.png"
    assert "is in the data folder's images or masks" in refused(
        ["data", "split", "--data", str(data), "--out", str(mask)], capsys
    )
    assert snapshot(data) == before


def test_runs_delete_removes_only_a_folder_that_runs_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    (runs / "mystuff").mkdir(parents=True)
    (runs / "mystuff" / "notes.md").write_text("mine")
    err = refused(["runs", "--runs", str(runs), "--delete", "mystuff"], capsys)
    assert err == f"error: no run named 'mystuff' in the runs folder {runs}"
    with pytest.raises(jobs.JobError, match="not a run folder of the runs folder"):
        run_deletion.delete_run(runs / "mystuff", runs)
    assert (runs / "mystuff" / "notes.md").read_text() == "mine"
    (runs / "failed").mkdir()
    (runs / "failed" / JOB_LOG).write_text("error: …\n")  # a job that failed before its config: listed, deletable
    assert cli.main(["runs", "--runs", str(runs), "--delete", "failed"]) == 0
    assert sorted(p.name for p in runs.iterdir()) == ["mystuff"]


@pytest.mark.usefixtures("no_scoring")
def test_an_unwritable_compare_out_is_refused_before_scoring(
    weights_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc, a folder no file can be created in")
    argv = ["compare", str(weights_path), str(weights_path), "--out", "/proc/dermai-compare.json"]
    assert refused(argv, capsys).startswith("error: cannot write /proc/dermai-compare.json")


@pytest.mark.usefixtures("no_scoring")
def test_predict_csv_may_not_replace_a_read_only_file(
    weights_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, _ = image_and_metadata(tmp_path, "")
    kept = tmp_path / "kept.csv"
    kept.write_text("signed off\n")
    kept.chmod(0o444)
    err = refused(["predict", str(image), "--weights", str(weights_path), "--csv", str(kept)], capsys)
    assert err == f"error: cannot write {kept}: the file is read-only; make it writable or name another file"
    assert kept.read_text() == "signed off\n"


def test_ensemble_refuses_a_file_name_as_out_and_a_member_given_twice(
    weights_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    member = str(tmp_path / "member" / "model.safetensors")
    other = str(save_weights(SimCLRResNet18(len(DIAGNOSES)), tmp_path / "b" / "model.safetensors", {"classes": ["a"]}))
    out = tmp_path / "e" / "model.safetensors"
    err = refused(["ensemble", member, other, "--out", str(out)], capsys)
    assert f"{out}: names a file, but the output is a folder" in err and f"such as {out.parent}" in err
    assert not out.parent.exists()
    err = refused(["ensemble", member, member, "--out", str(tmp_path / "e2")], capsys)
    assert err == f"error: {member}: given twice; list each member once"
    spelt_apart = f"{tmp_path}/./member/model.safetensors"
    err = refused(["ensemble", member, spelt_apart, "--out", str(tmp_path / "e2")], capsys)
    assert err == f"error: {spelt_apart}: given twice (also as {member}); list each member once"
    assert not (tmp_path / "e2").exists()


def nowhere(tmp_path: Path) -> RunConfig:
    """A config whose data folder is missing: whatever is not refused first fails at once, never trains."""
    base = RunConfig()
    base.data.data_dir = str(tmp_path / "no-data")
    return base


def test_an_experiment_out_folder_holding_other_files_is_refused_before_the_split_is_written(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    out.mkdir()
    (out / "results.csv").write_text("mine\n")  # an experiment's name, but no experiment is here…
    (out / "notes.md").write_text("mine")  # …as this file shows
    with pytest.raises(ValueError, match=r"exp/notes\.md: exists already, and is not a file of this experiment"):
        label_efficiency(nowhere(tmp_path), out, fractions=(1.0,), seeds=1)
    assert sorted(p.name for p in out.iterdir()) == ["notes.md", "results.csv"]


def test_an_experiment_run_stopped_before_its_first_checkpoint_is_named_not_trained_over(tmp_path: Path) -> None:
    cfg = run_config(nowhere(tmp_path), tmp_path / "manifest.csv", 0, 1.0, "finetune")
    run_dir = tmp_path / "seed0" / "frac1" / "random"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": to_dict(cfg)}))
    with pytest.raises(RuntimeError, match=r"frac1/random: this run stopped before its first checkpoint"):
        _train_once(cfg, run_dir, None, "", False)
