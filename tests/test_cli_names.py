"""The command line refuses an output whose last name Windows cannot hold ("runs/CON", "p.csv."), as the app
refuses such run names, before anything is made."""

from __future__ import annotations

from pathlib import Path

import pytest

import dermai.ensemble
import dermai.evaluate
import dermai.experiment
import dermai.train
from dermai import cli
from dermai.predict import Predictor


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
