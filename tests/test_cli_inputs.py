"""Bad inputs to the command line (a damaged checkpoint, an empty manifest, weights of another split, a
malformed --metadata row) end in one `error:` line naming the file, exit 2, before anything is written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from dermai import cli, jobs, run_status
from dermai.config import DataConfig, RunConfig, to_dict
from dermai.context import ContextError, PatientContext, parse_context
from dermai.ood import check_percentile
from dermai.train import OWNER_FILE, Trainer, TrainingError, split_dataset, weights_split_problem
from dermai.weights import read_meta
from tests.conftest import REPO, ham_rows, make_folder
from tests.test_cli_outputs import refused
from tests.test_jobs import status_record, stopped_run


def damaged_run(run: Path, kind: str) -> Path:
    """A stopped run folder (config.json) whose checkpoints/last.pt is damaged: random bytes, empty, or a real
    checkpoint cut short (as a copy interrupted, or a disk that filled while it was saved)."""
    (run / "checkpoints").mkdir(parents=True)
    saved = to_dict(RunConfig(stage="finetune"))
    (run / "config.json").write_text(json.dumps({"config": saved, "command": "python -m dermai"}))
    last = run / "checkpoints" / "last.pt"
    if kind == "random":
        last.write_bytes(bytes(range(256)) * 20)
    elif kind == "empty":
        last.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"model": {"w": torch.zeros(20000)}, "stage": "pretrain", "epoch": 0, "batch": 1}, last)
        last.write_bytes(last.read_bytes()[:40000])
    else:  # readable, but not a checkpoint of a run
        torch.save({"weights": torch.zeros(3)}, last)
    return last


@pytest.mark.parametrize("kind", ["random", "empty", "truncated", "foreign"])
def test_resume_from_a_damaged_checkpoint_names_it(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Random bytes and an empty file ended in a traceback (UnpicklingError, EOFError), a truncated one in
    torch's zip error naming no file."""
    last = damaged_run(tmp_path / "run", kind)
    err = refused(["finetune", "--out", str(tmp_path / "run"), "--resume", "--quiet"], capsys)
    assert err.startswith(f"error: {last}: damaged checkpoint (") and "delete it to start over" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_the_apps_resume_refuses_a_damaged_checkpoint_in_the_trainers_words(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = stopped_run(runs, "cut")
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(jobs.JobError, match=rf"^{last}: damaged checkpoint \("):
        jobs.resume_job(run, runs)
    assert jobs.current_job(runs) is None  # nothing launched


@pytest.fixture
def data_folder(tmp_path: Path) -> Path:
    """A synthetic folder of 7 diagnoses × 4 lesions × 2 images, and its split manifest (`data split`)."""
    folder = make_folder(tmp_path / "data", ham_rows())
    assert cli.main(["data", "split", "--data", str(folder), "--out", str(tmp_path / "split.csv")]) == 0
    return folder


def test_a_header_only_manifest_is_refused_naming_it_before_any_run_folder(
    data_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed "Empty DataFrame", wrote a 0-image manifest, and left finetune's half-made run folder."""
    header = tmp_path / "hdr.csv"
    header.write_text((tmp_path / "split.csv").read_text().splitlines()[0] + "\n")
    no_rows = f"error: {header}: no rows (only a header)"
    base = ["--data", str(data_folder), "--manifest", str(header)]
    assert refused(["data", "summary", *base], capsys).startswith(no_rows)
    assert refused(["data", "split", *base, "--out", str(tmp_path / "copy.csv")], capsys).startswith(no_rows)
    assert not (tmp_path / "copy.csv").exists()
    train = ["finetune", *base, "--image-size", "16", "--finetune-epochs", "1", "--quiet"]
    assert refused([*train, "--out", str(tmp_path / "run")], capsys).startswith(no_rows)
    assert not (tmp_path / "run").exists()


def test_a_header_only_metadata_csv_is_refused_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path / "data", ham_rows())
    csv = folder / "metadata.csv"
    csv.write_text(csv.read_text().splitlines()[0] + "\n")
    err = refused(["data", "summary", "--data", str(folder)], capsys)
    assert err.startswith(f"error: {csv}: no rows (only a header)")


def test_a_manifest_missing_a_class_on_a_side_names_itself_and_the_missing_rows(
    data_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = pd.read_csv(tmp_path / "split.csv", dtype=str)
    short = tmp_path / "short.csv"
    split[~((split["split"] == "val") & split["image_id"].str.startswith("I_akiec"))].to_csv(short, index=False)
    err = refused(["data", "summary", "--data", str(data_folder), "--manifest", str(short)], capsys)
    assert err.startswith(f"error: {short}: class 'akiec' is absent from the val split in this manifest")
    assert "rows may be missing" in err


SHIPPED = REPO / "weights" / "model.safetensors"


def test_a_teacher_of_another_data_folder_is_refused_when_its_split_cannot_be_shown(
    data_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped weights record their manifest's checksum but no split_sha256; their split settings (seed 0,
    default fractions) match any default run, so a teacher trained on all of HAM10000 taught a run on other
    images without a word, though the help says the teacher must be of the same split."""
    argv = ["finetune", "--data", str(data_folder), "--image-size", "16", "--finetune-epochs", "1", "--quiet"]
    err = refused(
        [*argv, "--distill-from", str(SHIPPED), "--distill-weight", "0.5", "--out", str(tmp_path / "r")], capsys
    )
    assert err.startswith(f"error: {SHIPPED}: cannot be shown to share this run's split")
    assert "not its images' sides (split_sha256)" in err and "--data ../shared/data/ham10000" in err
    assert not (tmp_path / "r").exists()


def test_start_weights_and_teachers_without_split_sha256_are_judged_by_their_manifest(
    ham_root: Path, data_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same rule for --init-weights and --distill-from, in the trainer and the app: weights recording only
    manifest_sha256 pass on the split that manifest is (also at another label fraction), and are refused
    elsewhere; weights recording no checksum at all are still judged by their split settings."""
    shipped = read_meta(SHIPPED)
    assert "split_sha256" not in shipped and shipped["manifest_sha256"]
    whole = DataConfig(data_dir=str(ham_root))
    assert weights_split_problem(shipped, whole, split_dataset(whole)) is None
    fewer_labels = DataConfig(data_dir=str(ham_root), label_fraction=0.5)
    assert weights_split_problem(shipped, fewer_labels, split_dataset(fewer_labels)) is None
    other = DataConfig(data_dir=str(data_folder))
    assert "cannot be shown to share" in str(weights_split_problem(shipped, other, split_dataset(other)))
    settings_only = {k: v for k, v in shipped.items() if k != "manifest_sha256"}
    assert weights_split_problem(settings_only, other, split_dataset(other)) is None

    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({**shipped, "ensemble": None, "stages": ["finetune"]}))
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: pytest.fail("launched"))
    options = {"data": str(data_folder), "finetune_epochs": 1}
    path = str(folder / "model.safetensors")
    for extra, role in (({"init_weights": path}, ""), ({"distill_from": path, "distill_weight": 0.5}, "teacher ")):
        with pytest.raises(jobs.JobError, match=f"^{role}{path}: cannot be shown to share"):
            jobs.start_job("finetune", {**options, **extra}, tmp_path / "runs", name="x")
    trainer = Trainer(RunConfig(stage="finetune", data=other), tmp_path / "t", init_weights=str(folder))
    trainer.dataset = split_dataset(other)
    with pytest.raises(TrainingError, match=f"^{folder}: cannot be shown to share this run's split"):
        trainer._check_same_split(shipped)


def test_weights_whose_json_cannot_rebuild_their_split_name_that_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """'the weights' JSON has no training config or manifest_sha256' named no file."""
    from dermai.data import DIAGNOSES
    from dermai.model import SimCLRResNet18
    from dermai.weights import save_weights

    meta = {"classes": list(DIAGNOSES), "image_size": 32, "stages": ["finetune"]}
    weights = save_weights(SimCLRResNet18(len(DIAGNOSES)), tmp_path / "w" / "model.safetensors", meta)
    named = f"error: {tmp_path / 'w' / 'model.json'}: the weights' JSON has no training config"
    out = ["--out", str(tmp_path / "e.json"), "--predictions", str(tmp_path / "e.csv")]
    assert refused(["evaluate", "--weights", str(tmp_path / "w"), *out], capsys).startswith(named)
    assert refused(["calibrate", "--weights", str(weights)], capsys).startswith(named)


def test_an_ood_percentile_above_100_says_no_percentile_lies_there() -> None:
    """It ended "…a lower cut-off would flag most in-distribution images", which is about 0.99, not 200."""
    with pytest.raises(ValueError, match=r"got 200: no percentile lies above 100") as above:
        check_percentile(200)
    assert "lower cut-off" not in str(above.value)
    with pytest.raises(ValueError, match=r"got 0.99: a lower cut-off would flag most"):
        check_percentile(0.99)


def test_a_weights_folder_of_several_files_and_no_model_safetensors_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "FOLDER/model.safetensors: weights file not found", a file nobody named."""
    for name in ("b", "a"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    err = refused(["predict", "--weights", str(tmp_path), str(image)], capsys)
    assert err == (
        f"error: {tmp_path}: holds several weights files (a.safetensors, b.safetensors) and no model.safetensors; "
        "name the one to use"
    )


def test_predict_with_uncalibrated_weights_says_why_there_is_no_tier(
    ham_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tier read "unavailable" with no reason, and the footer still claimed validated cut-offs."""
    from dermai.data import DIAGNOSES
    from dermai.model import SimCLRResNet18
    from dermai.weights import save_weights

    torch.manual_seed(0)
    meta = {"classes": list(DIAGNOSES), "image_size": 32, "stages": ["finetune"]}
    weights = save_weights(SimCLRResNet18(len(DIAGNOSES)), tmp_path / "w" / "model.safetensors", meta)
    assert cli.main(["predict", "--weights", str(weights), str(ham_root / "images" / "ISIC_0024306.jpg")]) == 0
    out, err = capsys.readouterr()
    assert f"warning: {weights}: No validated operating points are stored with these weights" in err
    assert "unavailable" in out and "validated on held-out" not in out
    assert "No tiers: these weights store no validated cut-offs" in out


def test_a_finished_run_copied_with_plain_cp_reads_finished(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cp -r` stamps every file with the copy's time: the lock file then looked taken after the run's end record,
    and `runs` listed the finished run as "interrupted"; a stopped run so copied still reads as continued."""
    runs = tmp_path / "runs"
    for name, status in (("done", "finished"), ("halted", "stopped")):
        run = stopped_run(runs, name)
        status_record(run, status, time.time() - 3000)
        (run / ".owner").write_text("123")  # the trainer's lock file, as `cp -r` dates it: now
        (run / "job.log").write_text("python -m dermai finetune …\n")
    assert OWNER_FILE == ".owner" and jobs.LOG_NAME == "job.log"
    assert run_status.run_status(runs / "done", runs).status == "finished"
    assert run_status.run_status(runs / "halted", runs).status == "interrupted"
    assert cli.main(["runs", "--runs", str(runs)]) == 0
    listed = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert listed["done"] == "finished"


def test_age_nan_is_refused_like_any_other_non_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--age nan` was taken as no age ("context": null) while `abc` and `inf` were refused."""
    for typed in ("nan", " NaN "):
        with pytest.raises(ContextError, match=r"^age: .* is not a number of years"):
            parse_context(typed)
    assert parse_context(float("nan")) == PatientContext()  # a missing cell (a DataFrame's NaN) is no age
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    assert refused(["predict", "--age", "nan", str(image)], capsys) == "error: age: 'nan' is not a number of years"


def test_a_metadata_row_with_extra_fields_names_its_row_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pandas took the extra leading fields as the row's index: "row 2: age: 'back' is not a number of years"."""
    image = tmp_path / "good.png"
    image.write_bytes(b"")
    metadata = tmp_path / "m.csv"
    metadata.write_text("image_id,age,sex,localization\ngood,50,male,back,extra,cols\n")
    err = refused(["predict", "--metadata", str(metadata), str(image)], capsys)
    assert err.startswith(f"error: {metadata}, row 2: 6 fields but the header names 4 columns")
    assert "column 5 ('extra') has no name" in err and "not a number" not in err


def test_an_unknown_site_in_a_metadata_csv_is_a_warning_naming_the_file_and_row(
    ham_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sites are kept as written in a CSV (datasets name them their own way, ISIC's "head/neck"): the image is
    scored without it, and the warning now says which file and row, as a bad age or sex in it is refused."""
    image = tmp_path / "good.jpg"
    image.write_bytes((ham_root / "images" / "ISIC_0024306.jpg").read_bytes())
    metadata = tmp_path / "m.csv"
    metadata.write_text("image_id,age,sex,localization\ngood,50,male,moon\n")
    assert cli.main(["predict", "--metadata", str(metadata), str(image)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {metadata}, row 2: site 'moon' is not a body site this model knows (" in err
    metadata.write_text("image_id,age,sex,localization\ngood,50,mal,back\n")
    assert refused(["predict", "--metadata", str(metadata), str(image)], capsys).startswith(
        f"error: {metadata}, row 2: sex: 'mal' is not one of"
    )


def test_runs_refuses_an_empty_delete_and_a_force_with_nothing_to_delete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both were ignored without a word: the runs were listed, and nothing said the option did nothing."""
    stopped_run(tmp_path / "runs", "kept")
    runs = ["runs", "--runs", str(tmp_path / "runs")]
    assert refused([*runs, "--delete", ""], capsys) == (
        "error: --delete needs a run's name (as `runs` lists them), got an empty one"
    )
    assert refused([*runs, "--delete", "  "], capsys).startswith("error: --delete needs a run's name")
    assert refused([*runs, "--force"], capsys).startswith("error: --force goes with --delete NAME")
    assert (tmp_path / "runs" / "kept" / "config.json").exists()
