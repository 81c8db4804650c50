import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from dermai.data import DIAGNOSES
from dermai.metrics import (
    TIER_MEANINGS,
    assign_tier,
    binary_metrics,
    choose_operating_points,
    clustered_wilson_interval,
    multiclass_metrics,
    paired_bootstrap,
    subgroup_metrics,
    threshold_for_sensitivity,
    threshold_for_specificity,
    wilson_interval,
)

CLASSES = list(DIAGNOSES)


def _binary_data(n: int = 400, prevalence: float = 0.2, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * y - 1)))
    return y, p


def _sens(y, p, thr):
    return np.mean(p[y == 1] >= thr)


def _spec(y, p, thr):
    return np.mean(p[y == 0] < thr)


def test_binary_metrics_match_sklearn():
    y, p = _binary_data()
    m = binary_metrics(y, p, n_boot=200)
    pred = (p >= 0.5).astype(int)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert m["auprc"] == pytest.approx(average_precision_score(y, p))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["prevalence"] == pytest.approx(y.mean())
    assert m["n"] == 400 and m["n_positive"] == int(y.sum())


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    y, p = _binary_data()
    m = binary_metrics(y, p, n_boot=200, seed=3)
    lo, hi = m["auroc_ci"]
    assert lo < m["auroc"] < hi
    assert 0.02 < hi - lo < 0.3
    assert m["auroc_ci_resamples"] == 200
    assert binary_metrics(y, p, n_boot=200, seed=3)["auroc_ci"] == m["auroc_ci"]


def test_group_bootstrap_is_wider_when_images_repeat_a_lesion():
    y, p = _binary_data(n=100)
    y4, p4, group = np.repeat(y, 4), np.repeat(p, 4), np.repeat(np.arange(100), 4)
    by_image = binary_metrics(y4, p4, n_boot=300)["auroc_ci"]
    by_lesion = binary_metrics(y4, p4, n_boot=300, group=group)["auroc_ci"]
    assert by_lesion[1] - by_lesion[0] > 1.5 * (by_image[1] - by_image[0])


def test_bootstrap_skips_single_class_resamples():
    y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    p = np.linspace(0, 1, 10)
    m = binary_metrics(y, p, n_boot=100)
    assert 0 < m["auroc_ci_resamples"] < 100
    assert m["auroc_ci"] == [1.0, 1.0]


def test_all_benign_baseline():
    y = np.array([0] * 98 + [1] * 2)
    p = np.linspace(0, 1, 100)
    m = binary_metrics(y, p, n_boot=10)
    assert m["baseline_all_benign"] == {"accuracy": 0.98, "balanced_accuracy": 0.5}


def test_operating_summaries_and_named_thresholds():
    y, p = _binary_data()
    m = binary_metrics(y, p, thresholds={"refer": 0.3, "urgent": 0.7}, n_boot=10)
    at95 = m["specificity_at_95_sensitivity"]
    assert at95["threshold"] == threshold_for_sensitivity(y, p, 0.95)
    assert at95["sensitivity"] >= 0.95
    assert at95["specificity"] == pytest.approx(_spec(y, p, at95["threshold"]))
    at90 = m["sensitivity_at_90_specificity"]
    assert at90["specificity"] >= 0.90
    assert at90["sensitivity"] == pytest.approx(_sens(y, p, at90["threshold"]))

    refer = m["thresholds"]["refer"]
    tp, fp = int(np.sum((p >= 0.3) & (y == 1))), int(np.sum((p >= 0.3) & (y == 0)))
    fn, tn = int(y.sum()) - tp, int((y == 0).sum()) - fp
    assert refer["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert refer["specificity"] == pytest.approx(tn / (tn + fp))
    assert refer["ppv"] == pytest.approx(tp / (tp + fp))
    assert refer["npv"] == pytest.approx(tn / (tn + fn))
    assert refer["sensitivity_ci"] == pytest.approx(list(wilson_interval(tp, tp + fn)))
    assert refer["specificity_ci"] == pytest.approx(list(wilson_interval(tn, tn + fp)))
    assert refer["threshold"] == 0.3


def test_binary_metrics_is_json_ready():
    y, p = _binary_data()
    m = binary_metrics(y, p, thresholds={"never": 2.0}, n_boot=10)
    assert json.loads(json.dumps(m, allow_nan=False)) == m
    assert m["thresholds"]["never"]["ppv"] is None


def test_binary_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="both"):
        binary_metrics(np.zeros(5), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="0 \\(benign\\)"):
        binary_metrics(np.array([0, 1, 2]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="length"):
        binary_metrics(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))


def test_wilson_known_values():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I.
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_clustered_wilson_counts_repeat_photos_of_a_lesion_once():
    rng = np.random.default_rng(3)
    hits = (rng.random(60) < 0.8).astype(int)
    cases = np.arange(60)
    alone = clustered_wilson_interval(hits, cases)
    # the same 60 lesions photographed 5 times each, every photo agreeing with its lesion: no new evidence
    repeated = clustered_wilson_interval(np.repeat(hits, 5), np.repeat(cases, 5))
    assert repeated == pytest.approx(alone)
    assert alone == pytest.approx(wilson_interval(hits.sum() * 59 / 60, 59))  # one photo each: deff = n / (n - 1)
    # counted as 300 independent photos, the interval would be far narrower than the lesions allow
    naive = wilson_interval(5 * hits.sum(), 300)
    assert naive[1] - naive[0] < 0.5 * (repeated[1] - repeated[0])
    assert clustered_wilson_interval(hits, None) == wilson_interval(hits.sum(), 60)
    # every photo caught (or none): no spread to measure, so the lesions, not the photos, are the cases
    assert clustered_wilson_interval(np.ones(8), np.arange(8) % 2) == pytest.approx(wilson_interval(2, 2))
    assert clustered_wilson_interval(np.zeros(8), np.arange(8) % 2) == pytest.approx(wilson_interval(0, 2))
    all_caught = clustered_wilson_interval(np.ones(50), np.arange(50) % 2)  # 50 photos of 2 lesions
    assert all_caught[0] < 0.5 and all_caught[1] == 1.0  # not 0.929, as if 50 lesions had all been caught
    assert clustered_wilson_interval(np.ones(8), np.arange(8)) == pytest.approx(wilson_interval(8, 8))  # 8 lesions
    assert clustered_wilson_interval(np.array([1, 1, 0]), np.zeros(3)) == wilson_interval(2 / 3, 1)  # one lesion
    with pytest.raises(ValueError, match="one entry per image"):
        clustered_wilson_interval(hits, cases[:-1])


def test_sensitivity_intervals_widen_for_lesions_seen_in_several_images():
    y, p = _binary_data(n=300, seed=4)
    lesion = np.arange(300) // 3  # three photos per lesion, labels and scores nearly the same within one
    y = y[lesion * 3]
    p = np.clip(p[lesion * 3] + np.random.default_rng(5).normal(0, 0.01, 300), 0, 1)
    by_image = binary_metrics(y, p, thresholds={"refer": 0.3}, n_boot=20)["thresholds"]["refer"]
    by_lesion = binary_metrics(y, p, thresholds={"refer": 0.3}, n_boot=20, group=lesion)["thresholds"]["refer"]
    assert by_lesion["sensitivity"] == by_image["sensitivity"]
    assert by_image["ci_method"] == "Wilson"
    assert "lesion" in by_lesion["ci_method"]
    for key in ("sensitivity_ci", "specificity_ci"):
        (lo_i, hi_i), (lo_l, hi_l) = by_image[key], by_lesion[key]
        assert lo_l < lo_i and hi_l > hi_i
        assert (hi_l - lo_l) > 1.4 * (hi_i - lo_i)  # about sqrt(3) wider
    rows = subgroup_metrics(y, p, {"all": ["x"] * 300}, threshold=0.3, n_boot=20, group=lesion)
    assert rows[0]["sensitivity_ci"] == pytest.approx(by_lesion["sensitivity_ci"])


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_threshold_for_sensitivity_is_largest_meeting_target(target):
    y, p = _binary_data(seed=7)
    thr = threshold_for_sensitivity(y, p, target)
    assert _sens(y, p, thr) >= target
    higher = np.unique(p[p > thr])
    assert all(_sens(y, p, t) < target for t in higher)
    _, tpr, roc_thr = roc_curve(y, p, drop_intermediate=False)
    assert thr == roc_thr[np.argmax(tpr >= target)]


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_threshold_for_specificity_is_smallest_meeting_target(target):
    y, p = _binary_data(seed=8)
    thr = threshold_for_specificity(y, p, target)
    assert _spec(y, p, thr) >= target
    lower = np.unique(p[p < thr])
    assert all(_spec(y, p, t) < target for t in lower)


def test_threshold_exact_fractions():
    # 20 positives: 95% sensitivity is exactly 19 of them, so the cut-off is the 19th highest positive score.
    y = np.array([1] * 20 + [0] * 10)
    p = np.concatenate([np.linspace(0.5, 0.99, 20), np.linspace(0.0, 0.6, 10)])
    assert threshold_for_sensitivity(y, p, 0.95) == pytest.approx(np.sort(p[:20])[1])
    # 10 negatives: 90% specificity leaves the top negative (0.6) flagged; the next score up is the cut-off.
    assert threshold_for_specificity(y, p, 0.90) == pytest.approx(np.min(p[p > np.sort(p[20:])[8]]))


def test_choose_operating_points_and_tiers():
    y, p = _binary_data(seed=2)
    ops = choose_operating_points(y, p, refer_sensitivity=0.95, urgent_specificity=0.9)
    assert set(ops) == {"refer", "urgent"}
    assert ops["refer"]["target"] == 0.95 and ops["urgent"]["target"] == 0.9
    assert ops["refer"]["threshold"] == threshold_for_sensitivity(y, p, 0.95)
    assert ops["urgent"]["threshold"] == threshold_for_specificity(y, p, 0.9)
    assert ops["refer"]["sensitivity"] >= 0.95
    assert ops["urgent"]["specificity"] >= 0.9
    assert ops["urgent"]["sensitivity"] == pytest.approx(_sens(y, p, ops["urgent"]["threshold"]))
    assert json.loads(json.dumps(ops)) == ops


def test_operating_point_targets_must_be_fractions():
    # 95 (a percentage) once failed inside numpy with "zero-size array"; 0 would refer nobody.
    y, p = _binary_data(seed=2)
    with pytest.raises(ValueError, match=r"refer sensitivity must be a fraction in \(0, 1\], e.g. 0.95; got 95"):
        choose_operating_points(y, p, refer_sensitivity=95)
    with pytest.raises(ValueError, match="urgent specificity"):
        choose_operating_points(y, p, urgent_specificity=0.0)
    with pytest.raises(ValueError, match="sensitivity target"):
        threshold_for_sensitivity(y, p, 1.5)
    assert choose_operating_points(y, p, refer_sensitivity=1.0)["refer"]["sensitivity"] == 1.0


def test_assign_tier_boundaries():
    ops = {"refer": {"threshold": 0.2}, "urgent": {"threshold": 0.6}}
    assert assign_tier(0.0, ops) == "routine"
    assert assign_tier(np.nextafter(0.2, 0), ops) == "routine"
    assert assign_tier(0.2, ops) == "refer"
    assert assign_tier(np.nextafter(0.6, 0), ops) == "refer"
    assert assign_tier(0.6, ops) == "urgent"
    assert assign_tier(1.0, ops) == "urgent"
    assert set(TIER_MEANINGS) == {"urgent", "refer", "routine", "ungradable"}  # ungradable: `dermai.predict`
    assert all("not a diagnosis" in text for text in TIER_MEANINGS.values())


def _multiclass_data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(7, size=n, p=[0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])
    logits = rng.normal(size=(n, 7))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def test_multiclass_metrics_match_sklearn():
    y, probs = _multiclass_data()
    assert len(np.unique(y)) == 7
    m = multiclass_metrics(y, probs, CLASSES)
    pred = probs.argmax(axis=1)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["macro_auroc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    recalls = recall_score(y, pred, average=None)
    assert list(m["per_class_recall"].values()) == pytest.approx(list(recalls))
    for k, name in enumerate(CLASSES):
        assert m["per_class_auroc"][name] == pytest.approx(roc_auc_score(y == k, probs[:, k]))
    assert m["notes"] == []
    assert json.loads(json.dumps(m, allow_nan=False)) == m


def test_multiclass_absent_class_is_skipped_with_note():
    y, probs = _multiclass_data()
    keep = y != 3  # no dermatofibroma
    y, probs = y[keep], probs[keep]
    m = multiclass_metrics(y, probs, CLASSES)
    assert m["per_class_auroc"]["df"] is None
    assert m["per_class_recall"]["df"] is None
    assert m["support"]["df"] == 0
    assert len(m["notes"]) == 1 and m["notes"][0].startswith("df")
    present = [m["per_class_auroc"][c] for c in CLASSES if c != "df"]
    assert m["macro_auroc"] == pytest.approx(np.mean(present))
    assert m["balanced_accuracy"] == pytest.approx(np.mean([m["per_class_recall"][c] for c in CLASSES if c != "df"]))
    assert len(m["confusion_matrix"]) == 7 and m["confusion_matrix"][3] == [0] * 7


def test_multiclass_rejects_wrong_shape():
    with pytest.raises(ValueError, match="shaped"):
        multiclass_metrics(np.array([0, 1]), np.zeros((2, 3)), CLASSES)


def test_paired_bootstrap_difference_interval_and_p_value() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    a = y + rng.normal(0, 1.0, 400)  # a weak model
    b = y + rng.normal(0, 0.5, 400)  # a clearly better one
    out = paired_bootstrap(y, a, b, roc_auc_score, n_boot=300)
    assert out["a"] == pytest.approx(roc_auc_score(y, a)) and out["b"] == pytest.approx(roc_auc_score(y, b))
    assert out["difference"] == pytest.approx(out["b"] - out["a"]) and out["difference"] > 0.05
    lo, hi = out["difference_ci"]
    assert 0 < lo < out["difference"] < hi and out["resamples"] == 300
    assert out["p_value"] == pytest.approx(2 / 301)  # every resample agrees: the least 300 resamples can show
    reverse = paired_bootstrap(y, b, a, roc_auc_score, n_boot=300)
    assert reverse["difference_ci"] == pytest.approx([-hi, -lo])
    twin = y + rng.normal(0, 1.0, 400)  # as good as `a`, its own noise: a difference of chance only
    noisy = paired_bootstrap(y, a, twin, roc_auc_score, n_boot=300)
    assert noisy["difference_ci"][0] < 0 < noisy["difference_ci"][1] and noisy["p_value"] > 0.05


def test_paired_bootstrap_resamples_groups_together() -> None:
    y = np.array([0, 0, 0, 1, 1, 0])
    index = np.arange(6.0)  # scores that name the image, to see which images each resample drew
    drawn: list[np.ndarray] = []

    def metric(labels: np.ndarray, scores: np.ndarray) -> float:
        drawn.append(scores.astype(int))
        return float(labels.mean())

    group = np.array(["L1", "L1", "L1", "L2", "L3", "L3"])
    paired_bootstrap(y, index, index, metric, n_boot=30, group=group)
    counts = np.array([np.bincount(d, minlength=6) for d in drawn])
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 1] == counts[:, 2]).all()  # L1 whole or not at all
    assert (counts[:, 4] == counts[:, 5]).all()
    assert len({len(d) for d in drawn}) > 1  # sizes vary with the lesions drawn: not an image resample
    with pytest.raises(ValueError, match="scores for 6 and 5 images, labels for 6"):
        paired_bootstrap(y, index, index[:5], metric)


def test_subgroup_metrics_score_each_group_and_leave_small_ones_without_auroc() -> None:
    rng = np.random.default_rng(0)
    y = np.array([1] * 20 + [0] * 40 + [1] * 3 + [0] * 30)
    p = np.concatenate([rng.uniform(0.6, 1, 20), rng.uniform(0, 0.4, 40), rng.uniform(0, 1, 33)])
    p[60:63] = [0.9, 0.2, 0.05]  # the small group's malignant scores: two below the cut-off
    fields = {"sex": ["female"] * 60 + ["male"] * 33, "age": ["under 30", "70 and over"] * 46 + ["unknown"]}
    rows = subgroup_metrics(y, p, fields, threshold=0.5, n_boot=100, group=np.arange(93) // 2)
    assert [(r["field"], r["group"], r["n"], r["n_malignant"]) for r in rows] == [
        ("sex", "female", 60, 20),
        ("sex", "male", 33, 3),
        ("age", "70 and over", 46, 11),  # the larger group first; ties keep sorted order
        ("age", "under 30", 46, 12),
        ("age", "unknown", 1, 0),
    ]
    female, male = rows[0], rows[1]
    assert female["auroc"] == 1.0 and female["auroc_ci"] == pytest.approx([1.0, 1.0])  # separable: all resamples 1
    assert female["sensitivity"] == 1.0 and female["specificity"] == 1.0
    assert male["auroc"] is None and male["auroc_ci"] is None  # 3 malignant: below SUBGROUP_MIN_PER_CLASS
    assert male["sensitivity"] == pytest.approx(1 / 3) and male["n"] == 33
    assert rows[4]["sensitivity"] is None and rows[4]["auroc"] is None  # no malignant image: undefined
    assert "sensitivity" not in subgroup_metrics(y, p, {"sex": fields["sex"]}, n_boot=10)[0]  # no cut-off given
    json.dumps(rows)
    with pytest.raises(ValueError, match="subgroup field 'sex': 2 labels for 93 images"):
        subgroup_metrics(y, p, {"sex": ["a", "b"]})
    ordered = subgroup_metrics(y, p, fields, n_boot=10, order={"age": ["unknown", "under 30", "70 and over"].index})
    assert [r["group"] for r in ordered if r["field"] == "age"] == ["unknown", "under 30", "70 and over"]
    assert [r["group"] for r in ordered if r["field"] == "sex"] == ["female", "male"]  # no order: largest first


def test_paired_bootstrap_p_value_is_never_zero_and_counts_like_a_permutation_test() -> None:
    """B resamples cannot support p below about 2 / (B + 1); the p used to be exactly 0 when all agreed."""
    y = np.array([0, 1] * 50)
    a, b = np.zeros(100), y.astype(float)  # B is perfect, A is chance: every resample favours B
    out = paired_bootstrap(y, a, b, roc_auc_score, n_boot=99)
    assert out["resamples"] == 99 and out["p_value"] == pytest.approx(2 / 100)
    same = paired_bootstrap(y, a, a.copy(), roc_auc_score, n_boot=99)
    assert same["p_value"] == 1.0  # every difference is 0: both signs, capped at 1
