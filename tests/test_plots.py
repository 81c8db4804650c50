import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from sklearn.metrics import roc_auc_score

from dermai.calibration import reliability_bins
from dermai.plots import (
    class_distribution_figure,
    confusion_figure,
    has_training_curves,
    label_efficiency_figure,
    pr_figure,
    reliability_figure,
    roc_figure,
    training_curves_figure,
)


@pytest.fixture
def binary():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.2).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=300) + 2 * y - 1)))
    return y, p


def test_roc_figure_marks_operating_points_on_these_data(binary):
    y, p = binary
    fig = roc_figure(y, p, {"refer": {"threshold": 0.2, "sensitivity": 0.0}, "urgent": {"threshold": 0.7}})
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["chance", "ROC", "refer", "urgent"]
    assert f"{roc_auc_score(y, p):.3f}" in fig.layout.title.text
    refer = fig.data[2]
    assert refer.y[0] == pytest.approx(np.mean(p[y == 1] >= 0.2))  # recomputed, not the passed-in figure
    assert refer.x[0] == pytest.approx(np.mean(p[y == 0] >= 0.2))
    assert len(roc_figure(y, p).data) == 2


def test_pr_figure(binary):
    y, p = binary
    fig = pr_figure(y, p)
    assert [t.name for t in fig.data] == ["prevalence", "PR"]
    assert fig.data[0].y[0] == pytest.approx(y.mean())
    assert "AUPRC" in fig.layout.title.text


def test_reliability_figure_skips_empty_bins(binary):
    y, p = binary
    bins = reliability_bins(y, p, n_bins=10)
    fig = reliability_figure(bins)
    assert [t.name for t in fig.data] == ["perfect calibration", "model"]
    filled = [b for b in bins if b["count"]]
    assert list(fig.data[1].x) == [b["mean_pred"] for b in filled]
    assert list(fig.data[1].customdata) == [b["count"] for b in filled]


def test_confusion_figure_rows_true():
    cm = [[5, 1, 0], [2, 8, 0], [0, 0, 0]]
    fig = confusion_figure(cm, ["a", "b", "c"])
    heat = fig.data[0]
    assert isinstance(heat, go.Heatmap)
    assert list(heat.y) == ["a", "b", "c"] and list(heat.x) == ["a", "b", "c"]
    assert np.asarray(heat.text).tolist() == cm
    assert np.asarray(heat.z)[1].tolist() == pytest.approx([0.2, 0.8, 0.0])
    assert np.asarray(heat.z)[2].tolist() == [0.0, 0.0, 0.0]
    assert fig.layout.yaxis.title.text == "true"


def test_label_efficiency_figure():
    rows = []
    for init in ("simclr", "random"):
        for frac in (1.0, 0.01, 0.1):
            rows.append(
                {"fraction": frac, "init": init, "auroc_mean": 0.8, "auroc_sd": 0.02, "bacc_mean": 0.6, "bacc_sd": 0.03}
            )
    fig = label_efficiency_figure(pd.DataFrame(rows))
    assert len(fig.data) == 4
    assert sorted(t.name for t in fig.data) == ["random", "random", "simclr", "simclr"]
    assert list(fig.data[0].x) == [0.01, 0.1, 1.0]
    assert list(fig.data[0].error_y.array) == [0.02] * 3
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type == "log"


def test_label_efficiency_colours_match_across_panels():
    """The legend is drawn from the AUROC panel; the balanced-accuracy lines must share its colours."""
    rows = [
        {"fraction": f, "init": init, "auroc_mean": 0.8, "auroc_sd": 0.02, "bacc_mean": 0.6, "bacc_sd": 0.03}
        for init in ("simclr", "random", "imagenet")
        for f in (0.1, 1.0)
    ]
    fig = label_efficiency_figure(pd.DataFrame(rows))
    by_init: dict[str, set] = {}
    for t in fig.data:
        by_init.setdefault(t.name, set()).update({t.line.color, t.marker.color, t.error_y.color})
        assert t.legendgroup == t.name
    assert all(len(c) == 1 for c in by_init.values())
    assert len({next(iter(c)) for c in by_init.values()}) == 3
    assert sum(t.showlegend for t in fig.data) == 3


def test_class_distribution_figure():
    df = pd.DataFrame(
        {"dx": ["nv", "nv", "mel", "bcc", "nv", "df"], "split": ["train", "train", "train", "val", "val", "test"]}
    )
    fig = class_distribution_figure(df)
    assert [t.name for t in fig.data] == ["train", "val", "test"]
    assert list(fig.data[0].x) == ["bcc", "df", "mel", "nv"]
    assert list(fig.data[0].y) == [0, 0, 1, 2]
    assert list(fig.data[1].y) == [1, 0, 0, 1]


def test_class_distribution_keeps_split_order_and_colours_across_filters():
    """Filtering to one diagnosis (test appearing first) must not reorder or repaint the splits."""
    df = pd.DataFrame({"dx": ["nv", "mel", "mel", "nv", "mel"], "split": ["train", "test", "val", "val", "train"]})
    whole = class_distribution_figure(df)
    only_mel = class_distribution_figure(df[df["dx"] == "mel"])
    for fig in (whole, only_mel):
        assert [t.name for t in fig.data] == ["train", "val", "test"]
    colours = [{t.name: t.marker.color for t in fig.data} for fig in (whole, only_mel)]
    assert colours[0] == colours[1]
    assert len(set(colours[0].values())) == 3


def test_class_distribution_without_val_keeps_the_other_colours():
    df = pd.DataFrame({"dx": ["nv", "mel"], "split": ["test", "train"]})
    fig = class_distribution_figure(df)
    full = class_distribution_figure(pd.DataFrame({"dx": ["nv"] * 3, "split": ["train", "val", "test"]}))
    assert [t.name for t in fig.data] == ["train", "test"]
    assert fig.data[1].marker.color == full.data[2].marker.color


def test_training_curves_figure_tolerates_missing_keys():
    records = [
        {"stage": "pretrain", "kind": "step", "step": 0, "loss": 5.0, "ntxent": 5.0},
        {"stage": "pretrain", "kind": "step", "step": 10, "loss": 4.0, "ntxent": 4.0},
        {"stage": "finetune", "kind": "step", "step": 0, "loss": 2.0, "ce": 1.5, "ntxent": 1.0, "lr": 1e-3},
        {"stage": "finetune", "kind": "step", "step": 10, "loss": 1.0, "ce": 0.5},
        {"stage": "finetune", "kind": "step", "step": 20, "loss": 1.0, "mask_loss": 0.3},
        {"stage": "finetune", "kind": "epoch", "epoch": 0, "val_auroc": 0.7, "val_bacc": 0.5, "val_acc": 0.6},
        {"stage": "finetune", "kind": "epoch", "epoch": 1, "val_auroc": 0.8},
    ]
    fig = training_curves_figure(records)
    names = [t.name for t in fig.data]
    assert names == [
        "pretrain loss (= ntxent)",  # pretraining's loss is its NT-Xent loss: one line
        "finetune loss",
        "finetune ce",
        "finetune ntxent",
        "finetune mask_loss",
        "finetune val_auroc",
        "finetune val_bacc",
        "finetune val_acc",
    ]
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["finetune ntxent"].x) == [0] and list(by_name["finetune ce"].y) == [1.5, 0.5]
    assert list(by_name["finetune val_auroc"].x) == [1, 2]  # epochs counted from 1
    assert by_name["finetune val_auroc"].xaxis == "x2"
    assert list(by_name["finetune mask_loss"].x) == [20] and list(by_name["finetune val_bacc"].y) == [0.5]
    assert len(training_curves_figure([]).data) == 0


def test_has_training_curves_only_with_a_step_or_epoch_record():
    serving = {"kind": "serving", "status": "fitted", "val_auroc": 0.9}
    status = {"kind": "status", "status": "finished"}
    assert not has_training_curves([serving, status])  # an ensemble run's whole stream
    assert not has_training_curves([])
    assert has_training_curves([serving, {"kind": "epoch", "epoch": 0, "val_auroc": 0.8}])
    assert has_training_curves([{"step": 0, "loss": 1.0}])  # no kind: a step record


def test_training_curves_mark_the_weight_average_after_its_last_epoch():
    records = [
        {"stage": "finetune", "kind": "epoch", "epoch": 0, "val_auroc": 0.80},
        {"stage": "finetune", "kind": "epoch", "epoch": 1, "val_auroc": 0.82},
        {"stage": "finetune", "kind": "swa", "epochs_averaged": 2, "val_auroc": 0.85, "kept": True},
    ]
    star = training_curves_figure(records).data[-1]
    assert star.name == "weight average of 2 epochs: val_auroc (kept)"
    assert list(star.x) == [2.5] and list(star.y) == [0.85] and star.xaxis == "x2"
    records[-1]["kept"] = False
    assert training_curves_figure(records).data[-1].name.endswith("(not kept)")


def test_roc_and_pr_axis_titles_fit_a_half_width_column_at_800_px(binary):
    """Evaluation draws ROC and PR side by side; at 800 px "1 − specificity (false-positive rate)" was cut."""
    y, p = binary
    for fig in (roc_figure(y, p), pr_figure(y, p)):
        assert len(fig.layout.xaxis.title.text) <= 20, fig.layout.xaxis.title.text
