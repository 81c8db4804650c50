"""The command line refuses an output whose last name Windows cannot hold ("runs/CON", "p.csv."), as the app
refuses such run names, before anything is made; and its predictions file is the Evaluation page's download."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest, app_test

import dermai.ensemble
import dermai.evaluate
import dermai.experiment
import dermai.train
from dermai import cli
from dermai.predict import Predictor
from tests import test_app_pages
from tests.conftest import HAM
from tests.test_app_pages import assert_clean, page

app_env = test_app_pages.app_env  # the pages' fixture: data, tiny weights and an empty runs folder


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command's work fails the test: a refused name must stop it before it starts."""

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command started although its output's name was refused")

    for module, name in (
        (dermai.train, "train"),
        (dermai.evaluate, "evaluate"),
        (dermai.evaluate, "compare_weights"),
        (dermai.ensemble, "build_ensemble"),
        (dermai.experiment, "label_efficiency"),
    ):
        monkeypatch.setattr(module, name, never)
    monkeypatch.setattr(Predictor, "from_weights", never)


def commands(out: Path, name: str) -> list[tuple[str, list[str]]]:
    """(flag, argv) of each command writing a file or folder, with that output named `out`/`name`."""
    bad, other = str(out / name), str(out / "fine.csv")
    return [
        ("--out", ["train", "--out", bad]),
        ("--out", ["pretrain", "--out", bad]),
        ("--out", ["finetune", "--out", bad]),
        ("--out", ["ensemble", "a.safetensors", "b.safetensors", "--out", bad]),
        ("--out", ["experiment", "label-efficiency", "--out", bad]),
        ("--out", ["data", "split", "--out", bad]),
        ("--out", ["evaluate", "--out", bad, "--predictions", other]),
        ("--predictions", ["evaluate", "--out", other, "--predictions", bad]),
        ("--out", ["compare", "a.safetensors", "b.safetensors", "--out", bad]),
        ("--csv", ["predict", "a.png", "--csv", bad]),
        ("--cam-out", ["predict", "a.png", "--cam-out", bad]),
        ("--report-out", ["predict", "a.png", "--report-out", bad]),
    ]


@pytest.mark.usefixtures("nothing_runs")
@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("CON", "a device name on Windows (CON, PRN, AUX, NUL, COM1-9, LPT1-9); pick another"),
        ("nul.txt", "a device name on Windows"),
        ("com1", "a device name on Windows"),
        ("run1.", "ends in '.', which Windows drops (it would be 'run1' there)"),
    ],
)
def test_every_output_flag_refuses_a_name_windows_cannot_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, said: str
) -> None:
    out = tmp_path / "runs"
    for flag, argv in commands(out, name):
        code = cli.main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, (argv, code, err)
        assert err.startswith(f"error: {flag} '{name}' ({out / name}): {said}"), (argv, err)
        assert not out.exists(), argv  # nothing made, not even the folder above


@pytest.mark.usefixtures("nothing_runs")
def test_a_bare_output_name_is_named_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--out", "lpt9.old"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --out 'lpt9.old': a device name on Windows (CON, PRN, AUX, NUL, COM1-9, LPT1-9); pick another"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["runs/CONSOLE.v2", "runs/com10", "runs/a.b", "runs/x/", ".", "..", "runs/.."])
def test_names_windows_holds_and_existing_folders_pass(value: str) -> None:
    args = cli.build_parser().parse_args(["evaluate", "--out", value, "--predictions", "p.csv"])
    cli._check_output_names(args)  # raises nothing


def test_a_trailing_slash_does_not_hide_the_name() -> None:
    args = cli.build_parser().parse_args(["ensemble", "a", "b", "--out", "runs/aux/"])
    with pytest.raises(ValueError, match=r"^--out 'aux' \(runs/aux/\): a device name on Windows"):
        cli._check_output_names(args)


def test_resume_continues_a_run_folder_made_already(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old run whose name the rule now refuses can still be resumed: --resume makes no new folder."""
    started: list[str] = []

    def fake_train(cfg: object, out: str, **kwargs: object) -> object:
        started.append(out)
        return dermai.train.TrainResult(status="finished", run_dir=Path(out), weights=None, best_score=None)

    monkeypatch.setattr(dermai.train, "train", fake_train)
    run = str(tmp_path / "con")
    assert cli.main(["finetune", "--out", run, "--resume", "--quiet"]) == 0
    assert started == [run]
    assert cli.main(["finetune", "--out", run, "--quiet"]) == 2  # a new run there is refused
    assert started == [run]


def test_an_experiment_continues_its_folder_made_already(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`experiment label-efficiency` resumes the grid in an existing --out folder, so an old one whose name the
    rule now refuses can still be carried on; a new folder of that name is refused before anything is made."""
    started: list[str] = []

    def fake_label_efficiency(base: object, out: str, *args: object, **kwargs: object) -> pd.DataFrame:
        started.append(out)
        return pd.DataFrame()

    monkeypatch.setattr(dermai.experiment, "label_efficiency", fake_label_efficiency)
    folder = tmp_path / "con"
    argv = ["experiment", "label-efficiency", "--out", str(folder)]
    assert cli.main(argv) == 2  # new: refused, nothing made
    assert started == [] and not folder.exists()
    folder.mkdir()  # made before the rule
    assert cli.main(argv) == 0
    assert started == [str(folder)]


class _KeptStorage(MemoryMediaFileStorage):
    """AppTest's in-memory media storage, each instance kept, so a download's bytes can be read after the run."""

    made: list[MemoryMediaFileStorage] = []

    def __init__(self, media_endpoint: str) -> None:
        super().__init__(media_endpoint)
        _KeptStorage.made.append(self)


def downloaded(at: AppTest, label: str) -> bytes:
    """The bytes the browser gets from the page's download button `label`."""
    url = next(b.proto.url for b in at.download_button if b.label == label)
    return _KeptStorage.made[-1].get_file(url.rsplit("/", 1)[-1]).content


def test_the_pages_predictions_download_is_the_clis_predictions_file(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same model and split give the same file from both, at full precision (the page rounded to 4 places)."""
    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", _KeptStorage)
    at = page("evaluation").run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert_clean(at)
    assert at.radio(key="eval_split").value == "test"
    page_bytes = downloaded(at, "Download per-image predictions (CSV)")

    report, written = tmp_path / "r.json", tmp_path / "p.csv"
    argv = ["evaluate", "--weights", str(app_env), "--data", str(HAM), "--out", str(report)]
    assert cli.main([*argv, "--predictions", str(written), "--n-boot", "0"]) == 0, capsys.readouterr().err
    assert page_bytes == written.read_bytes()
    scores = pd.read_csv(io.BytesIO(page_bytes))["p_malignant"].astype(str)
    assert scores.str.len().max() > 6  # not rounded to 4 places: '0.1234' is 6 characters


def test_the_evaluation_page_shows_a_sound_context_fits_tiers_with_the_fields_the_weights_weigh(
    app_env: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """`show_context` (the tiny model's own fit is weak, so its figures would stay in the unreliable box): the
    caption names the fields of the weights' context model, which the page now passes to it."""
    import streamlit as st

    from dermai.context import fields_text, weighted_fields
    from dermai.weights import read_meta

    real, calls = dermai.evaluate.evaluate, []

    def sound_fit(*args: object, **kwargs: object) -> tuple[dict, pd.DataFrame]:
        report, predictions = real(*args, **kwargs)
        ctx = report["context"]
        ctx.pop("unreliable", None)
        ctx["balanced_accuracy"] = ctx["balanced_accuracy"] or 0.3
        calls.append(ctx)
        return report, predictions

    monkeypatch.setattr(dermai.evaluate, "evaluate", sound_fit)
    st.cache_data.clear()  # a report cached by another test would skip the patched scoring
    request.addfinalizer(st.cache_data.clear)  # and this doctored one must not reach a later test of the process
    at = page("evaluation").run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert_clean(at)
    assert len(calls) == 1 and calls[0]["thresholds"]
    assert "With context" in [m.label for m in at.metric]
    used = fields_text(weighted_fields(read_meta(app_env)))
    assert f"Each image with the {used} its metadata records, as `predict` would score it" in [
        c.value for c in at.caption
    ]
