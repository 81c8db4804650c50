"""Patient context (dermai.context): parsing user input, the per-field tables fitted on training data, the
weights fitted on validation data, and how context enters the served probabilities (and leaves them alone
when none is given)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermai import context as ctx
from dermai.inference import calibrated_probs

K = 3


def test_parse_context_blanks_mean_not_given_and_bad_values_name_their_field() -> None:
    assert ctx.parse_context("", "unknown", None).is_empty()
    assert ctx.parse_context(" 65 ", "Male", "Back") == ctx.PatientContext(65.0, "male", "back")
    with pytest.raises(ctx.ContextError, match="age: 'sixty'"):
        ctx.parse_context(age="sixty")
    with pytest.raises(ctx.ContextError, match="age: 130 is outside"):
        ctx.parse_context(age=130)
    with pytest.raises(ctx.ContextError, match="sex: 'x' is not one of female, male"):
        ctx.parse_context(sex="x")
    with pytest.raises(ctx.ContextError, match="site: 'elbow' is not a body site this model knows \\(back, face\\)"):
        ctx.parse_context(site="elbow", sites=["back", "face"])
    assert ctx.parse_context(site="elbow").site == "elbow"  # no vocabulary given: not checked here
    assert ctx.parse_context(site="Palms/Soles").site == "acral"  # ISIC's general site names → HAM10000's


def test_contexts_from_rows_drop_unknowns() -> None:
    rows = pd.DataFrame(
        {"age": [50.0, np.nan, 300.0], "sex": ["female", "unknown", "other"], "localization": ["face", "", "unknown"]}
    )
    assert ctx.contexts_from_rows(rows) == [
        ctx.PatientContext(50.0, "female", "face"),
        ctx.PatientContext(),
        ctx.PatientContext(),
    ]


def test_category_table_is_a_smoothed_log_likelihood_ratio() -> None:
    # 100 images: class 0 on 'face' (20 of 20), classes 1/2 on 'back'; one 'ear' image of class 0.
    values = ["face"] * 20 + ["back"] * 79 + ["ear"]
    labels = np.array([0] * 20 + [1] * 40 + [2] * 39 + [0])
    table = ctx.category_table(values, labels, K)
    prior = np.bincount(labels, minlength=K) / 100
    counts = np.array([20, 0, 0])
    expected = np.log((counts + ctx.SMOOTHING * prior) / (20 + ctx.SMOOTHING)) - np.log(prior)
    np.testing.assert_allclose(table["face"], expected)
    assert table["face"][0] > 1.0 > 0 > table["face"][1]
    assert np.abs(table["ear"]).max() < np.abs(table["face"]).max() / 3  # one image barely moves the odds
    assert set(table) == {"face", "back", "ear"}


def test_age_table_follows_the_data_and_lookup_holds_ages_inside_its_range() -> None:
    rng = np.random.default_rng(0)
    ages = rng.integers(20, 81, 600).astype(float)
    labels = (ages > 55).astype(int) * 2  # class 2 old, class 0 young, class 1 never seen with an age
    table = ctx.age_table(list(ages) + [None], np.append(labels, 1), K)
    years = sorted(int(k) for k in table)
    assert years[0] == 20 and years[-1] == 80 and len(years) == 61
    old, young = ctx.lookup(table, "age", 75), ctx.lookup(table, "age", 25)
    assert old[2] > 0 > young[2] and young[0] > 0 > old[0]
    np.testing.assert_array_equal(ctx.lookup(table, "age", 110), table["80"])  # older: the oldest row
    np.testing.assert_array_equal(ctx.lookup(table, "age", 3.4), table["20"])
    np.testing.assert_array_equal(ctx.lookup(table, "age", 40.6), table["41"])


def test_field_terms_are_zero_where_a_field_is_missing_or_unseen() -> None:
    tables = {"site": {"face": [1.0, -1.0, 0.0]}, "sex": {"male": [0.5, 0.0, -0.5]}}
    contexts = [ctx.PatientContext(site="face"), ctx.PatientContext(site="scalp", sex="male"), ctx.PatientContext()]
    terms = ctx.field_terms(contexts, tables, K)
    np.testing.assert_array_equal(terms["site"], [[1, -1, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(terms["sex"], [[0, 0, 0], [0.5, 0, -0.5], [0, 0, 0]])


def served_meta() -> dict:
    return {
        "temperature": 1.5,
        "log_prior": np.log([0.2, 0.3, 0.5]).tolist(),
        "context": {
            "temperature": 2.0,
            "fields": {
                "site": {"weight": 0.5, "table": {"face": [1.0, -1.0, 0.0]}},
                "sex": {"weight": 0.0, "table": {"male": [3.0, 0.0, 0.0]}},
            },
        },
    }


def test_context_probs_leave_images_without_context_alone() -> None:
    meta = served_meta()
    logits = np.array([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]])
    contexts = [ctx.PatientContext(), ctx.PatientContext(site="face"), ctx.PatientContext(sex="male")]
    probs, used = ctx.context_probs(logits, meta, contexts)
    assert used.tolist() == [False, True, False]  # sex has weight 0: that image has no usable context
    np.testing.assert_allclose(probs[0], calibrated_probs(logits[:1], meta)[0])
    np.testing.assert_allclose(probs[2], calibrated_probs(logits[:1], meta)[0])
    expected = np.exp(logits[1] / 2.0 + np.log([0.2, 0.3, 0.5]) + 0.5 * np.array([1.0, -1.0, 0.0]))
    np.testing.assert_allclose(probs[1], expected / expected.sum())
    with pytest.raises(ctx.ContextError, match="no context model"):
        ctx.context_probs(logits, {"temperature": 1.0}, contexts)


def test_fit_weights_trusts_an_informative_field_and_drops_a_noise_field() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    labels = rng.integers(0, K, n)
    logits = 2.0 * np.eye(K)[labels] + rng.normal(0, 1.5, (n, K))  # a weak image model, temperature 1
    informative = 1.5 * np.eye(K)[labels] + rng.normal(0, 1.0, (n, K))  # evidence the image lacks
    noise = rng.normal(0, 1.0, (n, K))
    temperature, weights = ctx.fit_weights(logits, labels, {"good": informative, "noise": noise}, None)
    assert weights["good"] > 0.5 and weights["noise"] < 0.1
    assert 0.5 < temperature < 2.0
    assert all(w >= 0 for w in weights.values())


def test_fit_weights_fits_the_temperature_on_the_rows_served_with_context() -> None:
    # Rows without context are served image-only (the weights' own temperature), so they must not move the
    # context temperature: here they are overconfident by 4×, the rows with context well calibrated.
    rng = np.random.default_rng(2)
    n = 3000
    labels = rng.integers(0, K, n)
    logits = 2.0 * np.eye(K)[labels] + rng.normal(0, 1.5, (n, K))
    evidence = 1.5 * np.eye(K)[labels] + rng.normal(0, 1.0, (n, K))
    without = np.arange(n) < n // 2
    logits[without] *= 4.0
    evidence[without] = 0.0
    temperature, _ = ctx.fit_weights(logits, labels, {"age": evidence}, None)
    alone, _ = ctx.fit_weights(logits[~without], labels[~without], {"age": evidence[~without]}, None)
    assert temperature == pytest.approx(alone, rel=1e-6)
    assert 0.7 < temperature < 1.4
    with pytest.raises(ValueError, match="no validation image has context"):
        ctx.fit_weights(logits, labels, {"age": np.zeros((n, K))}, None)


def test_fit_tables_covers_the_fields_training_data_records() -> None:
    contexts = [ctx.PatientContext(age=float(20 + i % 50), site="back" if i % 2 else None) for i in range(40)]
    labels = np.arange(40) % K
    tables = ctx.fit_tables(contexts, labels, K)
    assert set(tables) == {"age", "site"}  # no sex recorded anywhere
    assert list(tables["site"]) == ["back"] and len(tables["age"]["20"]) == K


def test_read_context_csv_takes_ham_and_isic_columns_and_names_bad_rows(tmp_path) -> None:
    ham = tmp_path / "ham.csv"
    ham.write_text("lesion_id,image_id,dx,age,sex,localization\nL1,I1,nv,45.0,male,Back\nL2,I2,mel,,unknown,\n")
    assert ctx.read_context_csv(ham) == {
        "I1": ctx.PatientContext(45.0, "male", "back"),
        "I2": ctx.PatientContext(),
    }
    isic = tmp_path / "isic.csv"
    isic.write_text("image_name,age_approx,sex,anatom_site_general_challenge\nISIC_1,60,female,torso\n")
    assert ctx.read_context_csv(isic) == {"ISIC_1": ctx.PatientContext(60.0, "female", "trunk")}  # HAM's name
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,age,sex\nI1,40,male\nI2,forty,male\n")
    with pytest.raises(ctx.ContextError, match=r"bad.csv, row 3: age: 'forty' is not a number of years"):
        ctx.read_context_csv(bad)
    no_id = tmp_path / "no_id.csv"
    no_id.write_text("age,sex\n40,male\n")
    with pytest.raises(ctx.ContextError, match="no image id column"):
        ctx.read_context_csv(no_id)


def test_read_context_csv_refuses_an_image_on_two_rows_naming_both(tmp_path) -> None:
    twice = tmp_path / "twice.csv"
    twice.write_text("image_id,age,sex\nI1,40,female\nI2,50,male\n I1 ,70,male\n")  # the last row used to win
    with pytest.raises(ctx.ContextError, match=r"twice.csv, rows 2 and 4: image 'I1' is on both"):
        ctx.read_context_csv(twice)
    blank_ids = tmp_path / "blank_ids.csv"  # rows without an id match no image: not a clash
    blank_ids.write_text("image_id,age\nI1,40\n,50\n,60\n")
    assert ctx.read_context_csv(blank_ids)["I1"] == ctx.PatientContext(40.0)


def test_unknown_fields_are_the_ones_no_table_can_score() -> None:
    meta = served_meta()
    context = ctx.PatientContext(age=50.0, sex="male", site="torso")
    assert ctx.unknown_fields(meta, context) == ["age", "site"]  # no age table; 'torso' not a known site
    assert context.without(["age", "site"]) == ctx.PatientContext(sex="male")
    assert ctx.unknown_fields(meta, ctx.PatientContext(site="face")) == []


def test_usable_context_drops_unknown_values_and_zero_weight_fields_with_a_note() -> None:
    meta = served_meta()
    assert ctx.weighted_fields(meta) == ["site"]
    usable, notes = ctx.usable_context(meta, ctx.PatientContext(age=50.0, sex="male", site="face"))
    assert usable == ctx.PatientContext(site="face")
    assert notes == [
        "age 50.0 is not in this model's context tables: not used",
        "sex is not used by this model (its weight, fitted on validation, is 0)",
    ]
    assert ctx.usable_context(meta, ctx.PatientContext(site="face")) == (ctx.PatientContext(site="face"), [])
