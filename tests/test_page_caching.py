"""Work a page's rerun must not repeat (tests/test_app_pages.py's fixtures): a widget change leaves the data folder
unlisted, its CSV, an experiment's summary and the weights unread, and an image not explained again, while a file
changed on disk is read again."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io
import pytest
import streamlit as st

from dermai import plots
from dermai.splits import summary_table
from dermai.ui import dataset_view, evaluation_view, sidebar_state
from tests.conftest import HAM, ham_rows, make_folder
from tests.test_app_pages import REPO, app_env, assert_clean, copy_tiny_run, page  # noqa: F401  (app_env: a fixture)
from tests.test_bench_errors import run_bench


def counted(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Replace module.name by a wrapper that counts its calls (the page calls it through the module)."""
    calls = [0]
    real: Callable[..., Any] = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.fixture
def small_folder(app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    """A writable 28-image HAM-style folder as the app's data folder, every page cache emptied (they outlive an
    AppTest: one per process)."""
    root = make_folder(tmp_path / "data", ham_rows(n_lesions_per_dx=2, images_per_lesion=2))
    monkeypatch.setenv("DERMAI_DATA", str(root))
    st.cache_data.clear()
    st.cache_resource.clear()
    return root


def touch_later(path: Path) -> None:
    """A new mtime for `path`, a second on: a file system's coarse clock cannot hide the change."""
    later = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(later, later))


def images_caption(at: Any) -> str:
    return next(c.value for c in at.caption if " images · " in c.value)


def test_a_widget_change_on_the_dataset_page_neither_lists_the_folder_nor_reads_its_csv_again(
    small_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    searches = counted(monkeypatch, sidebar_state, "find_metadata_csv")
    reads = counted(monkeypatch, dataset_view, "browse_dataset")
    at = page("dataset").run()
    assert_clean(at)
    first = searches[0]  # the stamp's search, and the check of the folder before it is read
    assert first >= 1 and reads[0] == 1
    summaries = counted(monkeypatch, sys.modules["pages._common"], "summary_table")  # imported by the first run
    detail = at.selectbox(key="ds_detail")
    detail.set_value(detail.options[1]).run()
    assert_clean(at)
    at.radio(key="ds_kind").set_value("malignant").run()
    assert_clean(at)
    assert (searches[0], reads[0], summaries[0]) == (first, 1, 0)
    assert "28 images" in images_caption(at)


def test_an_edited_metadata_csv_is_read_again_on_the_next_rerun(
    small_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = counted(monkeypatch, dataset_view, "browse_dataset")
    at = page("dataset").run()
    assert "28 images" in images_caption(at)
    before = at.table[0].value
    csv = small_folder / "metadata.csv"
    pd.read_csv(csv).iloc[:-2].to_csv(csv, index=False)  # the last lesion's two images dropped
    touch_later(csv)
    at.run()
    assert_clean(at)
    assert reads[0] == 2
    assert "26 images" in images_caption(at)
    after = at.table[0].value  # the whole folder's counts: read again too
    assert after.to_numpy().sum() == before.to_numpy().sum() * 26 // 28
    assert after.equals(summary_table(dataset_view.browse_dataset(str(small_folder))).astype(after.dtypes))


def test_a_metadata_csv_renamed_is_found_at_its_new_name(small_folder: Path) -> None:
    at = page("dataset").run()
    assert_clean(at)
    (small_folder / "metadata.csv").rename(small_folder / "HAM_metadata.csv")
    (small_folder / "imgs").rename(small_folder / "images")  # the folder's mtime changes, whatever the clock
    at.run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    assert "28 images" in images_caption(at)
    assert sidebar_state.metadata_stamp(small_folder)[0] == str(small_folder / "HAM_metadata.csv")


@pytest.fixture
def experiment(app_env: Path, tmp_path: Path) -> Path:  # noqa: F811
    """A writable copy of the shipped label-efficiency summary, every page cache emptied."""
    folder = tmp_path / "experiment"
    folder.mkdir()
    shutil.copy(REPO / "docs" / "label_efficiency" / "summary.csv", folder / "summary.csv")
    st.cache_data.clear()
    st.cache_resource.clear()
    return folder


def evaluation_page(folder: Path) -> Any:
    at = page("evaluation")
    at.session_state["eval_le"] = str(folder)  # as its text box sets it
    return at.run()


def efficiency_chart(at: Any) -> dict[str, Any]:
    """The label-efficiency figure as the page sent it (the one chart before Evaluate or Compute map)."""
    (chart,) = at.get("plotly_chart")
    return json.loads(chart.proto.spec)


def test_a_widget_change_on_the_evaluation_page_does_not_read_or_draw_the_experiment_again(
    experiment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = counted(monkeypatch, evaluation_view, "read_label_efficiency")
    draws = counted(monkeypatch, plots, "label_efficiency_figure")  # the page imports it on each run
    at = evaluation_page(experiment)
    assert_clean(at)
    assert (reads[0], draws[0]) == (1, 1)
    shown = efficiency_chart(at)
    at.number_input(key="eval_limit").set_value(300).run()
    assert_clean(at)
    assert (reads[0], draws[0]) == (1, 1)
    assert efficiency_chart(at) == shown
    drawn = plots.label_efficiency_figure(evaluation_view.read_label_efficiency(experiment))  # as before the cache
    assert shown == json.loads(plotly.io.to_json(drawn, validate=False))


def test_a_rewritten_experiment_summary_is_read_again_and_a_removed_folder_is_said(
    experiment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = evaluation_page(experiment)
    assert len(at.dataframe[0].value) == 6
    summary = experiment / "summary.csv"
    pd.read_csv(summary).iloc[:4].to_csv(summary, index=False)  # the experiment re-run with fewer fractions
    touch_later(summary)
    at.run()
    assert_clean(at)
    assert len(at.dataframe[0].value) == 4
    assert len(efficiency_chart(at)["data"][0]["x"]) == 2  # two fractions per start left, not three
    shutil.rmtree(experiment)
    at.run()
    assert_clean(at)
    assert [e.value for e in at.error] == [f"Cannot read the experiment: {experiment}: no such folder"]


def test_predict_loads_the_model_and_explains_an_image_once_until_its_weights_are_saved_again(
    app_env: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dermai.predict import Predictor

    weights = copy_tiny_run(app_env, tmp_path / "run") / "model.safetensors"  # touched below: not the shared one
    monkeypatch.setenv("DERMAI_WEIGHTS", str(weights))
    st.cache_data.clear()
    st.cache_resource.clear()
    loads = counted(monkeypatch, Predictor, "from_weights")
    real_explain = Predictor.explain
    explained = [0]

    def explain(self: Predictor, *args: Any, **kwargs: Any) -> Any:
        explained[0] += 1
        return real_explain(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "explain", explain)
    image = HAM / "images" / "ISIC_0024306.jpg"
    at = page("predict").run()
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg").run()
    assert_clean(at)
    assert (loads[0], explained[0]) == (1, 1)
    at.slider(key="pred_opacity").set_value(0.7).run()  # only the overlay's blend changes
    assert_clean(at)
    assert (loads[0], explained[0]) == (1, 1)
    touch_later(weights)  # e.g. calibrated again: another model
    at.run()
    assert_clean(at)
    assert (loads[0], explained[0]) == (2, 2)


def test_the_page_benchmark_names_a_data_folder_it_cannot_use(tmp_path: Path) -> None:
    done = run_bench("page_render.py", "--data", str(tmp_path / "none"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: --data {tmp_path / 'none'}: no images/ISIC_0024306.jpg there" in done.stderr, done.stderr


def test_the_page_benchmark_names_missing_weights(ham_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    done = run_bench("page_render.py", "--weights", str(missing), "--data", str(ham_root))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: {missing}: weights file not found" in done.stderr, done.stderr
