"""Interrupted and killed work keeps what it finished and leaves nothing that misleads: a batch stopped by
Ctrl-C or an error, a hard-killed process's cache temporaries, a half-renamed evaluation, a lock that could
not be written. Interruption is simulated by raising KeyboardInterrupt from a patched function."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dermai import cli
from dermai.predict import Predictor
from tests.test_predict import lesion_like, png_bytes, weights_path  # noqa: F401 (weights_path is a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _clinic(folder: Path, n: int) -> list[Path]:
    """`n` lesion images in `folder`, named so that they are scored in this order."""
    folder.mkdir()
    images = [folder / f"{i}.png" for i in range(n)]
    for i, image in enumerate(images):
        image.write_bytes(png_bytes(lesion_like(120 + i)))
    return images


def _stop_at_call(monkeypatch: pytest.MonkeyPatch, n: int, error: BaseException) -> None:
    """Make the `n`-th `Predictor.predict` of the batch raise `error`, as a Ctrl-C or a crash there would."""
    real, calls = Predictor.predict, []

    def predict(self: Predictor, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == n:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict", predict)


@pytest.mark.parametrize(("error", "code"), [(KeyboardInterrupt(), 130), (RuntimeError("CUDA out of memory"), 2)])
def test_a_stopped_predict_batch_writes_the_rows_it_scored_as_a_partial_worklist(
    weights_path: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    code: int,
) -> None:
    images = _clinic(tmp_path / "clinic", 4)
    out = tmp_path / "worklist.csv"
    _stop_at_call(monkeypatch, 3, error)
    assert cli.main(["predict", str(tmp_path / "clinic"), "--weights", str(weights_path), "--csv", str(out)]) == code
    err = capsys.readouterr().err
    table = pd.read_csv(out)
    assert sorted(table["image"]) == [str(images[0]), str(images[1])]
    assert list(table["rank"]) == [1, 2] and table["p_malignant"].notna().all()
    assert f"wrote {out}: PARTIAL worklist, 2 of 4 images" in err and "rerun" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clinic", "worklist.csv"]  # no temporary left behind


def test_a_batch_stopped_before_any_score_writes_no_worklist(
    weights_path: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _clinic(tmp_path / "clinic", 2)
    out = tmp_path / "worklist.csv"
    out.write_text("the user's earlier worklist\n")
    _stop_at_call(monkeypatch, 1, KeyboardInterrupt())
    assert cli.main(["predict", str(tmp_path / "clinic"), "--weights", str(weights_path), "--csv", str(out)]) == 130
    assert out.read_text() == "the user's earlier worklist\n"  # an empty table would replace it with nothing
    assert "PARTIAL" not in capsys.readouterr().err
