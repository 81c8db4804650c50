"""dermai.ui.sidebar_state: the sidebar's weights and data folder, their stamps, and its words for a bad folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dermai.data import DataError
from dermai.ui import dataset_view, sidebar_state
from tests.conftest import ham_rows, make_folder


def test_weights_mtime_resolves_a_folder_and_follows_both_files(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    weights.with_suffix(".json").write_text("{}")
    os.utime(weights, ns=(1_000, 1_000))
    os.utime(weights.with_suffix(".json"), ns=(2_000, 2_000))
    assert sidebar_state.weights_mtime(str(tmp_path)) == sidebar_state.weights_mtime(str(weights)) == (1_000, 2_000)
    os.utime(weights.with_suffix(".json"), ns=(3_000, 3_000))  # recalibrated: only the JSON is rewritten
    assert sidebar_state.weights_mtime(str(tmp_path)) == (1_000, 3_000)
    assert sidebar_state.weights_mtime(str(tmp_path / "absent.safetensors")) == (0, 0)


def test_metadata_stamp_changes_with_the_csv(tmp_path: Path) -> None:
    make_folder(tmp_path, ham_rows(n_lesions_per_dx=1, images_per_lesion=1))
    csv = tmp_path / "metadata.csv"
    os.utime(csv, ns=(5_000, 5_000))
    assert sidebar_state.metadata_stamp(tmp_path) == (str(csv), 5_000)
    os.utime(csv, ns=(6_000, 6_000))
    assert sidebar_state.metadata_stamp(str(tmp_path)) == (str(csv), 6_000)
    assert sidebar_state.metadata_stamp(tmp_path / "imgs") is None  # no CSV: loading the folder says why


def test_forget_weights_in_a_deleted_folder_only(tmp_path: Path) -> None:
    state = {sidebar_state.WEIGHTS_KEY: str(tmp_path / "runs" / "a" / "model.safetensors")}
    assert not sidebar_state.forget_weights_in(state, tmp_path / "runs" / "ab")  # a sibling whose name starts alike
    assert sidebar_state.WEIGHTS_KEY in state
    assert sidebar_state.forget_weights_in(state, tmp_path / "runs" / "a")
    assert sidebar_state.WEIGHTS_KEY not in state and not sidebar_state.forget_weights_in(state, tmp_path)


def test_a_data_folder_that_cannot_be_read_is_named_in_the_apps_words(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    assert sidebar_state.data_folder_problem(tmp_path / "nope") == f"{tmp_path / 'nope'}: no such folder"
    assert sidebar_state.data_folder_problem(tmp_path / "file.txt") == f"{tmp_path / 'file.txt'}: not a folder"
    assert sidebar_state.data_folder_problem(tmp_path / "empty") == f"{tmp_path / 'empty'}: no metadata CSV found"
    make_folder(tmp_path / "ok", ham_rows(n_lesions_per_dx=1, images_per_lesion=1))
    assert sidebar_state.data_folder_problem(tmp_path / "ok") is None
    with pytest.raises(DataError) as info:
        dataset_view.browse_dataset(str(tmp_path / "nope"))
    assert str(info.value) == f"{tmp_path / 'nope'}: no such folder (enter another data folder in the sidebar)"
    cli = "no data folder found; tried: /x (pass --data DIR or set DERMAI_DATA)"
    assert (
        sidebar_state.sidebar_words(cli) == "no data folder found; tried: /x (enter another data folder in the sidebar)"
    )
