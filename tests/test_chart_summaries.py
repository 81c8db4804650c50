"""Every chart's text alternative (WCAG 1.1.1): the summary functions beside the figure builders, from real numbers
and from empty, partial and NaN data, and the caption each page shows under its chart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dermai import jobs
from dermai.calibration import reliability_bins
from dermai.plots import (
    class_distribution_summary,
    compare_runs_summary,
    confusion_summary,
    embedding_summary,
    label_efficiency_summary,
    pr_summary,
    reliability_summary,
    roc_summary,
    training_curves_summary,
)
from dermai.train import read_metrics
from dermai.ui import dataset_view
from dermai.ui.predict_view import probabilities_summary
from tests.conftest import HAM
from tests.test_app_pages import alerts, app_env, assert_clean, json_only_env, page  # noqa: F401
from tests.test_compare import make_run
from tests.test_jobs import held

NAN = float("nan")


def fine_tuning(aurocs: list[float], losses: list[float]) -> list[dict]:
    """A fine-tuning stage's records as the trainer writes them (0-based epochs): one step per loss, one epoch
    record per AUROC."""
    steps = [{"kind": "step", "stage": "finetune", "epoch": 0, "step": i, "loss": v} for i, v in enumerate(losses)]
    epochs = [{"kind": "epoch", "stage": "finetune", "epoch": i, "val_auroc": v} for i, v in enumerate(aurocs)]
    return steps + epochs


def captions(at) -> list[str]:  # noqa: ANN001
    return [c.value for c in at.caption]


def test_training_summary_names_first_last_and_best_epoch_counted_from_one() -> None:
    records = fine_tuning([0.712, 0.85, 0.905, 0.9], [5.2, 3.0, 1.3])
    assert training_curves_summary(records) == (
        "finetune: validation AUROC rose from 0.712 (epoch 1) to 0.900 (epoch 4); best 0.905 (epoch 3); "
        "loss fell from 5.2 to 1.3 over 3 logged steps."
    )
    assert "to 0.905 (epoch 3, best)" in training_curves_summary(fine_tuning([0.712, 0.85, 0.905], [5.2]))


def test_training_summary_says_one_epoch_no_validation_nan_and_nothing_without_an_exception() -> None:
    assert training_curves_summary(fine_tuning([0.7], [2.0])) == (
        "finetune: validation AUROC 0.700 at epoch 1 (one epoch validated); loss 2 after one logged step."
    )
    steps_only = fine_tuning([], [2.0, 1.5])
    assert training_curves_summary(steps_only) == "finetune: loss fell from 2 to 1.5 over 2 logged steps."
    nan_epochs = [{"kind": "epoch", "stage": "finetune", "epoch": 0, "val_auroc": NAN}]
    assert training_curves_summary(nan_epochs) == "finetune: no validation AUROC recorded yet."
    nan_then_real = fine_tuning([NAN, 0.8], [NAN, 1.0])  # a NaN epoch is left out, not read as the first
    assert training_curves_summary(nan_then_real) == (
        "finetune: validation AUROC 0.800 at epoch 2 (one epoch validated); loss 1 after one logged step."
    )
    assert training_curves_summary([]) == "No training steps or epochs logged yet."
    assert training_curves_summary([{"kind": "serving", "val_auroc": 0.9}]) == "No training steps or epochs logged yet."


def test_training_summary_says_each_stage_and_a_weight_average() -> None:
    pretrain = [{"kind": "step", "stage": "pretrain", "step": i, "loss": v} for i, v in enumerate([6.0, 4.5])]
    swa = {"kind": "swa", "stage": "finetune", "val_auroc": 0.91, "epochs_averaged": 2, "kept": True}
    said = training_curves_summary(pretrain + fine_tuning([0.8, 0.85], [1.0, 0.9]) + [swa])
    assert said.startswith("pretrain: loss fell from 6 to 4.5 over 2 logged steps. finetune: validation AUROC rose")
    assert said.endswith("weight average of 2 epochs (kept as the run's weights): validation AUROC 0.910.")


def test_compare_summary_gives_each_runs_best_epoch_and_last_value() -> None:
    runs = {"a": fine_tuning([0.80, 0.86, 0.85], [1.0]), "b": fine_tuning([0.82, 0.84], [1.0])}
    assert compare_runs_summary(runs) == (
        "a: best val_auroc 0.860 at epoch 2 of 3; 0.850 at its last, epoch 3. b: best val_auroc 0.840 at epoch 2 of 2."
    )
    assert compare_runs_summary({"a": fine_tuning([0.8], [1.0])}, "val_bacc") == "a: no val_bacc recorded."
    assert compare_runs_summary({"nan": fine_tuning([NAN], [])}) == "nan: no val_auroc recorded."
    assert compare_runs_summary({}) == "No runs to compare."


def le_table(rows: list[tuple]) -> pd.DataFrame:
    columns = ["fraction", "init", "auroc_mean", "auroc_sd", "bacc_mean", "bacc_sd"]
    return pd.DataFrame(rows, columns=columns)


def test_label_efficiency_summary_gives_each_start_at_the_smallest_and_largest_fraction() -> None:
    table = le_table(
        [
            (1.0, "simclr", 0.88, 0.01, 0.61, 0.02),
            (0.1, "simclr", 0.81, 0.02, 0.45, 0.03),
            (0.3, "random", 0.77, 0.02, 0.44, 0.02),
            (0.1, "random", 0.70, 0.03, 0.38, 0.04),
            (1.0, "random", 0.86, 0.01, 0.58, 0.02),
        ]
    )
    assert label_efficiency_summary(table) == (
        "random: test AUROC 0.700 at labelled fraction 0.1 and 0.860 at 1; balanced accuracy 0.380 and 0.580. "
        "simclr: test AUROC 0.810 at labelled fraction 0.1 and 0.880 at 1; balanced accuracy 0.450 and 0.610."
    )


def test_label_efficiency_summary_says_one_fraction_nan_and_an_empty_table() -> None:
    assert label_efficiency_summary(le_table([(0.5, "random", NAN, NAN, 0.4, NAN)])) == (
        "random: test AUROC n/a and balanced accuracy 0.400 at labelled fraction 0.5 (one fraction only)."
    )
    assert label_efficiency_summary(le_table([])) == "No label-efficiency results to show."


def test_split_summary_gives_each_splits_images_and_malignant_share() -> None:
    df = pd.DataFrame(
        {
            "split": ["test", "train", "train", "train", "train", "val", "extra"],
            "dx": ["mel", "nv", "nv", "mel", "nv", "nv", "nv"],
            "malignant": [1, 0, 0, 1, 0, 0, None],
        }
    )
    assert class_distribution_summary(df) == (
        "Images per diagnosis in 4 splits. train: 4 images, 25.0% malignant; val: 1 image, 0.0% malignant; "
        "test: 1 image, 100.0% malignant; extra: 1 image. The largest class is nv (5 of 7 images)."
    )
    assert class_distribution_summary(df.iloc[:0]) == "No images to count."


def test_embedding_summary_counts_points_per_diagnosis_in_the_maps_order() -> None:
    points = pd.DataFrame({"dx": ["nv", "nv", "mel", "benign", "nv"], "x": 0.0, "y": 0.0, "image_id": list("abcde")})
    assert embedding_summary(points) == (
        "A 2-D projection of the model's trunk features: 5 images, one point each, coloured and shaped by "
        "diagnosis (mel 1, nv 3, benign 1)."
    )
    assert embedding_summary(points.iloc[:0]) == "No images on the map."


def test_roc_pr_and_reliability_summaries_give_the_charts_figures() -> None:
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.55, 0.7, 0.4])  # misses one malignant (0.4), flags one benign (0.55)
    assert roc_summary(y, p, {"screening": {"threshold": 0.5}}) == (
        "AUROC 0.833 over 5 images (2 malignant); screening cut-off: sensitivity 0.500, specificity 0.667."
    )
    assert roc_summary(np.zeros(3), np.array([0.1, 0.2, 0.3])) == "No ROC curve: the 3 images are all of one class."
    assert pr_summary(y, p).startswith("AUPRC 0.833, against a prevalence of 0.400")
    assert pr_summary(np.zeros(2), np.array([0.1, 0.2])).startswith("No precision–recall curve")
    assert reliability_summary(reliability_bins(y, p)) == (
        "5 of 10 risk bins hold images. Farthest from perfect calibration: mean predicted 0.400 against 1.000 "
        "observed malignant (1 image)."
    )
    assert reliability_summary([{"bin_lo": 0.0, "bin_hi": 1.0, "mean_pred": None, "frac_pos": None, "count": 0}]) == (
        "No reliability points: no image was scored."
    )


def test_confusion_summary_gives_each_classs_recall_and_the_commonest_mistake() -> None:
    assert confusion_summary([[8, 2, 0], [3, 5, 0], [0, 0, 0]], ["nv", "mel", "df"]) == (
        "Share of each true class predicted correctly: nv 80.0% (8 of 10), mel 62.5% (5 of 8). "
        "Most frequent mistake: mel predicted as nv (3 images)."
    )
    assert confusion_summary([[4, 0], [0, 2]], ["nv", "mel"]).endswith("mel 100.0% (2 of 2).")
    assert confusion_summary([[0, 0], [0, 0]], ["nv", "mel"]) == "No images in the confusion matrix."


def test_probabilities_summary_ranks_every_diagnosis_as_the_bars_do() -> None:
    assert probabilities_summary({"nv": 0.1, "mel": 0.853, "bkl": NAN, "df": 0.047, "akiec": None}) == (
        "Diagnosis probabilities, most likely first: mel 85.3%, nv 10.0%, df 4.7%, bkl not available, "
        "akiec not available."
    )
    assert probabilities_summary({}) == "No diagnosis probabilities."


# Pages: each chart has its summary under it, with the figures of the data it was drawn from.


def test_dataset_page_says_each_splits_images_under_the_chart(json_only_env: Path) -> None:  # noqa: F811
    at = page("dataset").run()
    assert_clean(at)
    meta = dataset_view.with_class_names(dataset_view.browse_dataset(str(json_only_env.parent.parent / "data")).meta)
    expected = class_distribution_summary(meta)
    assert expected in captions(at)
    assert sum(int(n) for n in re.findall(r": (\d+) images?", expected)) == len(meta) == 14
    at.multiselect(key="ds_dx").set_value(["mel"]).run()  # the filtered chart, the filtered words
    (split,) = meta["split"].unique()
    assert (
        f"Images per diagnosis in 1 split. {split}: 2 images, 100.0% malignant. "
        "The largest class is mel (2 of 2 images)."
    ) in captions(at)


def test_training_page_describes_a_runs_curves_and_the_comparison(app_env: Path) -> None:  # noqa: F811
    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    make_run(runs, "lr-high", 1e-3, [0.80, 0.86, 0.85])
    make_run(runs, "lr-low", 3e-4, [0.82, 0.84])
    at = page("training").run()
    assert_clean(at)
    shown = at.selectbox(key="train_run").value
    expected = training_curves_summary(read_metrics(runs / shown))
    assert expected in captions(at) and "(epoch 1)" in expected and "loss stayed at" not in expected
    at.selectbox(key="train_run").set_value("lr-high").run()
    assert "finetune: validation AUROC fell from 0.800 (epoch 1) to 0.850 (epoch 3)" not in captions(
        at
    )  # it rose: the words follow the numbers
    assert any(
        c.startswith("finetune: validation AUROC rose from 0.800 (epoch 1) to 0.850 (epoch 3); best 0.860 (epoch 2)")
        for c in captions(at)
    ), captions(at)
    at.multiselect(key="compare_runs").set_value(["lr-high", "lr-low"]).run()
    assert_clean(at)
    assert (
        "lr-high: best val_auroc 0.860 at epoch 2 of 3; 0.850 at its last, epoch 3. "
        "lr-low: best val_auroc 0.840 at epoch 2 of 2."
    ) in captions(at)
    at.radio(key="compare_key").set_value("val_bacc").run()
    assert_clean(at)
    assert any(c.startswith("lr-high: best val_bacc 0.660 at epoch 2 of 3") for c in captions(at)), captions(at)


def test_the_live_curves_summary_refreshes_with_the_chart(app_env: Path) -> None:  # noqa: F811
    runs = Path(jobs.runs_dir())
    run = runs / "cli-live"
    holder = held(run)  # a trainer from the command line holds the folder
    try:
        (run / "config.json").write_text(json.dumps({"config": {"stage": "finetune", "train": {}}}))
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fine_tuning([0.75], [2.5])))
        at = page("training").run()
        assert_clean(at)
        first = "finetune: validation AUROC 0.750 at epoch 1 (one epoch validated); loss 2.5 after one logged step."
        assert first in captions(at)
        more = fine_tuning([0.75, 0.81], [2.5, 1.9])
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in more))
        at.run()  # as the fragment's 2 s refresh does
        assert_clean(at)
        assert first not in captions(at)
        assert (
            "finetune: validation AUROC rose from 0.750 (epoch 1) to 0.810 (epoch 2, best); "
            "loss fell from 2.5 to 1.9 over 2 logged steps."
        ) in captions(at)
    finally:
        holder.kill()
        holder.wait()


def test_evaluation_page_describes_its_charts_with_the_headline_figures(app_env: Path) -> None:  # noqa: F811
    at = page("evaluation").run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert_clean(at)
    auroc = next(m.value for m in at.metric if m.label == "AUROC (test)")
    said = captions(at)
    assert any(c.startswith(f"AUROC {auroc} over ") and " malignant)" in c for c in said), said
    assert any(c.startswith("AUPRC ") and "against a prevalence of" in c for c in said), said
    assert any(c.startswith("Share of each true class predicted correctly: ") for c in said), said
    assert any(" risk bins hold images." in c for c in said), said
    at.number_input(key="eval_limit").set_value(50).run()
    next(b for b in at.button if b.label == "Compute map").click()
    at.run()
    assert_clean(at)
    mapped = [c for c in captions(at) if c.startswith("A 2-D projection of the model's trunk features: ")]
    (chart,) = [c for c in at.get("plotly_chart") if "trunk features" in c.proto.spec]
    n = int(re.search(r"\((?:test), (\d+) images\)", chart.proto.spec).group(1))  # the map's title: its points
    assert len(mapped) == 1 and mapped[0].split(": ", 1)[1].startswith(f"{n} images, one point each"), mapped
    per_dx = mapped[0].split("diagnosis (")[1].rstrip(").").split(", ")
    assert sum(int(part.split()[1]) for part in per_dx) == n > 0


def test_evaluation_page_describes_the_label_efficiency_curves(app_env: Path, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "summary.csv").write_text(
        "fraction,init,auroc_mean,auroc_sd,bacc_mean,bacc_sd\n"
        "0.1,random,0.70,0.01,0.38,0.02\n1.0,random,0.86,0.01,0.58,0.02\n"
        "0.1,simclr,0.81,0.02,0.45,0.03\n1.0,simclr,0.88,,0.61,\n"
    )
    at = page("evaluation").run()
    at.text_input(key="eval_le").set_value(str(tmp_path)).run()
    assert_clean(at)
    assert (
        "random: test AUROC 0.700 at labelled fraction 0.1 and 0.860 at 1; balanced accuracy 0.380 and 0.580. "
        "simclr: test AUROC 0.810 at labelled fraction 0.1 and 0.880 at 1; balanced accuracy 0.450 and 0.610."
    ) in captions(at)


def test_predict_page_says_the_probabilities_under_their_bars(app_env: Path) -> None:  # noqa: F811
    at = page("predict").run()
    image = HAM / "images" / "ISIC_0024306.jpg"
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg")
    at.run()
    assert_clean(at)
    said = next(c for c in captions(at) if c.startswith("Diagnosis probabilities, most likely first: "))
    shares = [float(part.rsplit(" ", 1)[1].rstrip("%.")) for part in said.split(": ", 1)[1].split(", ")]
    assert len(shares) == 7 and shares == sorted(shares, reverse=True) and abs(sum(shares) - 100) < 1, said
    assert not any("Diagnosis probabilities" in text for text in alerts(at))
