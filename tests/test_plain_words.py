"""Figures and headers a person reads without hovering: the worklist's columns in plain words, and a patient-context
fit on too few validation images kept out of the headline figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dermai.cli import _print_prediction
from dermai.predict import Prediction
from tests.conftest import HAM
from tests.test_app_pages import app_env, assert_clean, page  # noqa: F401  (app_env: a fixture)


def prediction(ood: bool | None) -> Prediction:
    probs = {"mel": 0.7, "nv": 0.3}
    return Prediction(probs, 0.7, "urgent", "meaning", 0.95, 0.6, ood, 1.0, 2.0, [])


def test_the_worklist_headers_say_in_words_what_p_top_and_ood_were(app_env: Path) -> None:  # noqa: F811
    at = page("predict").run()
    names = ["ISIC_0024306.jpg", "ISIC_0025964.jpg"]
    at.file_uploader[0].set_value([(n, (HAM / "images" / n).read_bytes(), "image/jpeg") for n in names])
    at.run()
    assert_clean(at)
    table = next(d for d in at.dataframe if "rank" in d.value.columns)
    config = json.loads(table.proto.columns)
    assert config["p_top_diagnosis"]["label"] == "its probability"  # beside "top diagnosis"; was "p(top)"
    assert config["ood"]["label"] == "unlike training images"  # was "OOD"
    assert config["ood"]["help"].startswith("Out of distribution (OOD): yes, the image is unlike")
    assert "top diagnosis's probability" in config["p_top_diagnosis"]["help"]
    assert set(table.value["ood"]) <= {"yes", "no", None}  # the verdict reads as an answer to the header


@pytest.mark.parametrize(("ood", "said"), [(True, "YES"), (False, "no"), (None, "n/a")])
def test_the_terminal_table_heads_the_ood_column_as_the_page_does(
    ood: bool | None, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _print_prediction("a.jpg", prediction(ood), {"cam": None, "report": None}, header=True)
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[-3:] == ["UNLIKE", "TRAINING", "IMAGES"] and " OOD" not in header
    assert row.split()[-1] == said and "mel 0.70" in row
