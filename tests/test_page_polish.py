"""Small things people read on the pages: epochs counted from 1 wherever the Training page shows one (the files
on disk keep the trainer's 0-based index); the worklist's notes in full below its table; Evaluation's compare table
with short labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dermai import jobs, run_status
from dermai.config import RunConfig, to_dict
from dermai.plots import compare_runs_figure, training_curves_figure
from dermai.train import read_metrics
from dermai.ui import formatting, predict_view, runs_view
from tests.conftest import HAM
from tests.test_app_pages import app_env, assert_clean, page  # noqa: F401  (app_env: a fixture)
from tests.test_compare import make_run
from tests.test_jobs import held
from tests.test_page_leftovers import progress_texts


def test_epoch_words_count_from_one_as_completed_over_planned_does() -> None:
    assert runs_view.epoch_words("finetune", 0, 6) == "finetune, epoch 1 of 6"  # Runs table: "0/6"
    assert runs_view.epoch_words("finetune", 5, 6) == "finetune, epoch 6 of 6"
    assert runs_view.epoch_words("pretrain", 2) == "pretrain, epoch 3"  # no plan to read
    assert runs_view.epoch_words("finetune", None, 6) == "finetune, epoch -"  # no step logged yet


def test_planned_epochs_are_read_from_the_runs_config(tmp_path: Path) -> None:
    config = RunConfig()
    config.train.pretrain_epochs, config.train.finetune_epochs = 2, 6
    (tmp_path / "config.json").write_text(json.dumps({"config": to_dict(config)}))
    assert run_status.planned_epochs(tmp_path, "finetune") == 6 and run_status.planned_epochs(tmp_path, "pretrain") == 2
    assert run_status.planned_epochs(tmp_path, "ensemble") is None
    assert run_status.planned_epochs(tmp_path / "none", "finetune") is None  # no config.json yet
    (tmp_path / "config.json").write_text("[1")  # damaged: no plan, no exception
    assert run_status.planned_epochs(tmp_path, "finetune") is None


def test_the_live_view_says_epoch_1_of_6_while_the_first_epoch_trains(app_env: Path) -> None:  # noqa: F811
    runs = Path(jobs.runs_dir())
    run = runs / "cli-first"
    holder = held(run)  # a trainer from the command line holds the folder
    try:
        config = RunConfig()
        config.stage, config.train.finetune_epochs = "finetune", 6
        (run / "config.json").write_text(json.dumps({"config": to_dict(config)}))
        step = {"kind": "step", "stage": "finetune", "epoch": 0, "global_step": 3, "total_steps": 60}
        (run / "metrics.jsonl").write_text(json.dumps(step) + "\n")  # as the trainer writes it: 0-based
        at = page("training").run()
        assert_clean(at)
        assert any(t.startswith("cli-first: finetune, epoch 1 of 6 ·") for t in progress_texts(at)), progress_texts(at)
        assert "0/6" in " ".join(str(v) for v in at.dataframe[0].value["epochs"])  # the Runs table agrees
    finally:
        holder.kill()
        holder.wait()


def test_compare_runs_counts_the_best_epoch_from_one_as_its_curves_do(app_env: Path) -> None:  # noqa: F811
    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    make_run(runs, "a", 1e-3, [0.80, 0.84, 0.82])  # best: the second epoch (index 1 in metrics.jsonl)
    at = page("training").run()
    at.multiselect(key="compare_runs").set_value(["a"]).run()
    assert_clean(at)
    summary = at.dataframe[1]  # after the runs table
    assert list(summary.value["best_epoch"]) == [2]
    assert "counted from 1" in json.loads(summary.proto.columns)["best_epoch"]["help"]
    compared = compare_runs_figure({"a": read_metrics(runs / "a")})
    assert list(compared.data[0].x) == [1, 2, 3] and list(compared.data[0].y) == [0.80, 0.84, 0.82]
    assert (compared.layout.xaxis.tick0, compared.layout.xaxis.dtick) == (1, 1)  # no "1.5": no epoch has it
    curves = training_curves_figure(read_metrics(runs / "a"))
    assert {t.name: list(t.x) for t in curves.data}["finetune val_auroc"] == [1, 2, 3]
    assert (curves.layout.xaxis2.tick0, curves.layout.xaxis2.dtick) == (1, 1)
    assert read_metrics(runs / "a")[3]["epoch"] == 0  # the file keeps the trainer's index


def test_worklist_notes_are_listed_whole_without_the_name_they_repeat() -> None:
    table = pd.DataFrame(
        {
            "image": ["a.jpg", "b.jpg", "c.jpg", "a.jpg (2)"],
            "notes": [None, "b.jpg: not an image file this app can read", "  ", "a.jpg: cannot be read"],
        }
    )
    assert predict_view.worklist_notes(table) == [
        ("b.jpg", "not an image file this app can read"),
        ("a.jpg (2)", "a.jpg: cannot be read"),  # another name: the note as it is
    ]
    assert predict_view.worklist_notes(table.drop(columns="notes")) == []
    assert formatting.markdown_plain("__scan__ (1).jpg: $5") == r"\_\_scan\_\_ (1).jpg: \$5"


def test_the_worklist_lists_each_note_in_full_below_its_table(app_env: Path) -> None:  # noqa: F811
    at = page("predict").run()
    long_name = "scan_from_the_clinic_camera_2026_12_07_left_shoulder.png"
    image = ("ISIC_0024306.jpg", (HAM / "images" / "ISIC_0024306.jpg").read_bytes(), "image/jpeg")
    at.file_uploader[0].set_value([image, (long_name, b"not an image at all", "image/png")])
    at.run()
    assert_clean(at)
    table = next(d for d in at.dataframe if "rank" in d.value.columns)
    note = table.value.set_index("image").loc[long_name, "notes"]
    assert note.startswith(f"{long_name}: ") and len(note) > 80  # longer than the column shows
    listed = [m.value for m in at.markdown if m.value.startswith("Notes in full:")]
    assert len(listed) == 1 and formatting.markdown_plain(note.removeprefix(f"{long_name}: ")) in listed[0]
    assert f"**{formatting.markdown_plain(long_name)}**" in listed[0]
    assert "ISIC" not in listed[0]  # an image without notes is not listed
    config = json.loads(table.proto.columns)
    assert config["notes"]["help"].endswith("each in full below the table")


def paired(a: float, b: float, ci: list[float] | None) -> dict:
    """One figure of `evaluate.compare_weights`' result."""
    return {"a": a, "b": b, "difference": b - a, "difference_ci": ci, "p_value": 0.4 if ci else None}


COMPARED = {  # compare_weights' result: AUROC within noise, balanced accuracy without an interval
    "a": "a.safetensors",
    "b": "b.safetensors",
    "split": "val",
    "n_images": 40,
    "auroc": paired(0.81234, 0.83456, [-0.01, 0.05]),
    "balanced_accuracy": paired(0.5, 0.4, None),
}


def test_the_comparison_table_names_its_figures_briefly() -> None:
    table = runs_view.comparison_table(COMPARED)
    assert list(table["metric"]) == ["AUROC", "Bal. acc."]
    assert list(table.columns) == ["metric", "A", "B", "B − A", "95% CI low", "95% CI high", "p", "verdict"]
    assert table.loc[0, "B − A"] == pytest.approx(0.02222) and table.loc[0, "95% CI high"] == 0.05
    assert list(table["verdict"]) == ["no clear difference (the interval spans 0)", "no interval (too few resamples)"]
    assert table.loc[1, ["95% CI low", "95% CI high", "p"]].isna().all()
    assert list(runs_view.comparison_table({**COMPARED, "balanced_accuracy": None})["metric"]) == ["AUROC"]


def test_the_compare_table_fits_with_short_labels_and_says_the_rest_in_help(
    app_env: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dermai.evaluate

    challenger = Path(jobs.runs_dir()) / "challenger"
    challenger.mkdir(parents=True)
    for suffix in (".safetensors", ".json"):  # a copy: weights of the same split
        shutil.copy(app_env.with_suffix(suffix), challenger / f"model{suffix}")
    monkeypatch.setattr(dermai.evaluate, "compare_weights", lambda *args, **kwargs: COMPARED)  # no scoring
    at = page("evaluation").run()
    at.selectbox(key="cmp_other").set_value(str(challenger / "model.safetensors"))
    next(b for b in at.button if b.label == "Compare").click()
    at.run()
    assert_clean(at)
    table = next(d for d in at.dataframe if "verdict" in d.value.columns)
    assert list(table.value["metric"]) == ["AUROC", "Bal. acc."]
    config = json.loads(table.proto.columns)
    labels = {key: column["label"] for key, column in config.items() if key != "_index"}
    assert labels["95% CI low"] == "CI low" and labels["95% CI high"] == "CI high"
    assert max(len(label) for label in labels.values()) <= 7  # "95% CI high" and the metric names were cut
    assert "seven diagnoses" in config["metric"]["help"] and config["metric"]["pinned"]
    assert "95% interval of B − A" in config["95% CI low"]["help"] and config["p"]["help"]
