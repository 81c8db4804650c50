"""Text from outside (an upload's file name, typed ids, a run name) reaching markdown, HTML, CSV cells and file
names: each shows or is written as itself, never as markup, a formula or a path elsewhere."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dermai.safe_write import spreadsheet_csv
from dermai.ui import formatting, predict_view
from tests import test_app_pages
from tests.conftest import HAM
from tests.test_app_pages import REPO, TIMEOUT, alerts, assert_clean, page

app_env = test_app_pages.app_env  # the pages' fixtures: HAM10000, tiny weights and an empty runs folder

HOSTILE = "$x$ **b** _i_ [l](javascript:alert(1)) <b>&lt;.png"  # a formula, bold, italics, a link, HTML


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("__scan__.jpg", r"\_\_scan\_\_.jpg"),
        ("ISIC_0024306, a-b.c (1)", "ISIC_0024306, a-b.c (1)"),  # nothing markdown acts on: as typed
        ("$5 lesion.png", r"\$5 lesion.png"),
        ("[l](javascript:alert(1))", r"\[l\](javascript:alert(1))"),
        ("<b>x</b> &lt; `c` ~~s~~ a*b*c", r"\<b\>x\</b\> \&lt; \`c\` \~\~s\~\~ a\*b\*c"),
        ("a\n# heading\n- item", "a # heading - item"),  # one line: no heading or list
        ("# h.jpg", r"\# h.jpg"),
        ("1. x.jpg", r"1\. x.jpg"),
        ("-2.jpg", r"\-2.jpg"),
        # Streamlit's shortcodes: a colour (":red[b]" showed "[b]" in red), emoji, an icon, its logo
        ("a :red[b].jpg", r"a &#58;red\[b\].jpg"),
        (":smile: :+1: :material/home:", "&#58;smile: &#58;+1: &#58;material/home:"),
        ("x :streamlit: :Streamlit:y", "x :streamlit&#58; :Streamlit&#58;y"),  # its closing colon (the only one read)
        ("a:100: 1:smile: 1:red[b]", r"a&#58;100: 1&#58;smile: 1&#58;red\[b\]"),  # straight after a letter or digit
        (r"C:\scans 12:30 1:1 a:b", r"C:\\scans 12:30 1:1 a:b"),  # a colon opening nothing stays as typed
    ],
)
def test_markdown_plain_escapes_what_markdown_would_act_on(text: str, shown: str) -> None:
    assert formatting.markdown_plain(text) == shown


def test_an_unreadable_upload_with_a_markdown_name_is_named_literally(app_env: Path) -> None:
    at = page("predict").run()
    at.file_uploader[0].set_value([(HOSTILE, b"not an image", "image/png")]).run()
    assert_clean(at)
    said = [e.value for e in at.error if e.value.startswith("Cannot analyse this file: ")]
    assert len(said) == 1 and said[0].startswith(f"Cannot analyse this file: {formatting.markdown_plain(HOSTILE)}: ")
    assert "$x$" not in said[0] and "**b**" not in said[0] and "[l](" not in said[0]


def test_the_worklist_detail_of_an_unreadable_upload_names_it_literally(app_env: Path) -> None:
    at = page("predict").run()
    image = ("ISIC_0024306.jpg", (HAM / "images" / "ISIC_0024306.jpg").read_bytes(), "image/jpeg")
    at.file_uploader[0].set_value([image, (HOSTILE, b"not an image", "image/png")]).run()
    at.selectbox(key="pred_detail").set_value(HOSTILE).run()
    assert_clean(at)
    said = [e.value for e in at.error if e.value.startswith("Cannot analyse this file: ")]
    assert len(said) == 1 and said[0].startswith(f"Cannot analyse this file: {formatting.markdown_plain(HOSTILE)}: ")
    assert "$x$" not in said[0]


def test_augmentation_lab_names_typed_ids_literally(app_env: Path) -> None:
    at = page("augmentation").run()
    at.text_input(key="aug_ids").set_value("ISIC_0024306, $x$, **b**").run()
    assert_clean(at)
    assert [w.value for w in at.warning] == [r"Not in the data folder, so not shown: \$x\$, \*\*b\*\*"]
    at.text_input(key="aug_ids").set_value("_i_").run()
    assert [e.value for e in at.error] == [r"None of these ids is in the data folder: \_i\_"]


def test_augmentation_lab_names_an_unusable_upload_literally(app_env: Path) -> None:
    at = page("augmentation").run()
    at.radio(key="aug_source").set_value("Upload one").run()
    at.file_uploader(key="aug_upload").upload(HOSTILE, b"not an image", "image/png").run()
    assert_clean(at)
    said = [e.value for e in at.error]
    assert len(said) == 1 and said[0].startswith(f"Cannot use this file: {formatting.markdown_plain(HOSTILE)}: ")
    assert alerts(at) == said


FORMULAS = ['=HYPERLINK("http://x","a")', "+1", "-2", "@cmd", "\tt", "\rr"]


def test_evaluate_predictions_csv_defuses_formula_cells_and_keeps_numbers(tmp_path: Path) -> None:
    from dermai.evaluate import write_outputs

    predictions = pd.DataFrame(
        {
            "image_id": [*FORMULAS, "ISIC_0024306"],
            "dx": ["nv"] * 7,
            "p_malignant": [-0.25, 0.5, 1.0, 0.0, 0.125, 0.75, 0.375],  # a negative number stays a number
            "malignant": [0, 1, 0, 1, 0, 1, 0],
        }
    )
    write_outputs({"split": "all"}, predictions, tmp_path / "report.json", tmp_path / "preds.csv")
    back = pd.read_csv(tmp_path / "preds.csv", keep_default_na=False)
    assert list(back["image_id"]) == [f"'{name}" for name in FORMULAS] + ["ISIC_0024306"]
    assert back["p_malignant"].tolist() == predictions["p_malignant"].tolist()
    assert back["malignant"].tolist() == predictions["malignant"].tolist()
    assert list(back["dx"]) == ["nv"] * 7


def test_spreadsheet_csv_quotes_only_text_cells_that_start_like_a_formula() -> None:
    table = pd.DataFrame({"name": ["=1+1", "a=b", "-x", None], "score": [-1.5, 2.0, None, 3.0]})
    lines = spreadsheet_csv(table, float_format="%.1f").decode().split("\r\n")
    assert lines == ["name,score", "'=1+1,-1.5", "a=b,2.0", "'-x,", ",3.0", ""]


@pytest.mark.parametrize(
    ("upload", "stem"),
    [
        ("../../etc/passwd.jpg", "passwd"),  # a path in the name: its last part only
        ("C:\\scans\\lesion.jpg (2)", "lesion_2"),  # a browser that sends the whole Windows path
        ('a<b>:"c|?*.jpg', "a_b___c___"),  # characters a Windows file name cannot hold
        ("new\nline.jpg", "new_line"),
        ("", "image"),
        ("folder/", "image"),
        ("x.jpg", "x"),  # an ordinary name as before
    ],
)
def test_an_uploads_download_names_stay_one_plain_file_name(upload: str, stem: str) -> None:
    assert predict_view.download_stem(upload) == stem


@pytest.mark.parametrize("field", ["Run name (optional)", "Ensemble name (optional)"])
def test_training_refuses_a_markdown_run_name_naming_it_literally(app_env: Path, field: str) -> None:
    from dermai import jobs

    at, runs, what = test_app_pages.start_named(field, " $x$ **b** ")
    refused = [e.value for e in at.error if e.value.startswith("Not started: ")]
    assert refused == [
        rf"Not started: {what} '\$x\$ \*\*b\*\*': use letters, digits, '.', '\_' and '-' only (not "
        "first), at most 100 characters"
    ]
    assert sorted(p.name for p in runs.iterdir()) == ["fine"] and jobs.current_job(runs) is None


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("CON", "a device name on Windows"),
        ("nul.txt", "a device name on Windows"),
        ("lpt1", "a device name on Windows"),
        ("run1.", "ends in '.', which Windows drops (it would be 'run1' there)"),
    ],
)
def test_a_run_name_windows_cannot_hold_is_refused_before_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, said: str
) -> None:
    from dermai import jobs

    def no_launch(*args: object) -> None:
        raise AssertionError("a job was launched")  # not a real training process when the check fails

    monkeypatch.setattr(jobs, "_launch", no_launch)
    runs = tmp_path / "runs"
    with pytest.raises(jobs.JobError, match=f"^run name '{name}': {re.escape(said)}"):
        jobs.start_job("both", {}, runs, name=name)
    with pytest.raises(jobs.JobError, match=f"^ensemble name '{name}': "):
        jobs.start_ensemble_job(["a", "b"], runs, name=name)
    assert not runs.exists() or list(runs.iterdir()) == []
    assert jobs.check_run_name("CONSOLE.v2") == "CONSOLE.v2" and jobs.check_run_name("com10") == "com10"


class _Tags(HTMLParser):
    """Each start tag of a page with its attributes, and its text, as a browser would read them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_html_report_shows_hostile_names_as_text_and_adds_no_tag_or_attribute() -> None:
    from dermai.report import prediction_html
    from tests.test_report import prediction

    name = "\"'><script>alert(1)</script>&amp; <img src=x onerror=alert(1)>\nx.jpg"
    weights = "runs/<b>w</b>\"'/model.safetensors"
    method = "gradcam' onerror='alert(1)"
    given = prediction(
        context={"age": 70.0, "site": "<i>back</i>"},
        context_effects={"age": 0.01, "site": -0.02},
        p_malignant_image_only=0.5,
        warnings=["note about <script>x</script> & 'quotes'"],
    )
    image = np.full((8, 8, 3), 100, np.uint8)
    parser = _Tags()
    parser.feed(prediction_html(given, name, weights, image, image, method))
    tags = [tag for tag, _ in parser.tags]
    assert "script" not in tags and "i" not in tags and tags.count("img") == 2  # the image and its overlay only
    assert all(not key.startswith("on") for _, attrs in parser.tags for key in attrs)
    images = [attrs for tag, attrs in parser.tags if tag == "img"]
    assert all(set(attrs) == {"src", "alt"} and attrs["src"].startswith("data:image/png;base64,") for attrs in images)
    text = "".join(parser.text)
    assert f"dermai report: {name}" in text and name in text and weights in text  # shown as typed, "&amp;" too
    assert "site <i>back</i>" in text and "note about <script>x</script> & 'quotes'" in text
    assert images[1]["alt"].startswith("gradcam' onerror='alert(1)")


def _cut_out_png() -> bytes:
    """A PNG half see-through: read with a note (put on white) that starts with the file's name."""
    cut_out = Image.new("RGBA", (600, 450), (180, 120, 90, 255))
    cut_out.paste((0, 0, 0, 0), (0, 0, 300, 450))
    buffer = io.BytesIO()
    cut_out.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("where", ["predict", "augmentation"])
def test_an_uploads_reading_notes_name_it_literally(app_env: Path, where: str) -> None:
    from dermai.intake import read_image

    name = "$x$ **cut**.png"
    at = page(where).run()
    if where == "augmentation":
        at.radio(key="aug_source").set_value("Upload one").run()
        at.file_uploader(key="aug_upload").upload(name, _cut_out_png(), "image/png").run()
    else:
        at.file_uploader[0].set_value([(name, _cut_out_png(), "image/png")]).run()
    assert_clean(at)
    note = next(w for w in read_image(_cut_out_png(), name).warnings if "transparent" in w)
    shown = [w.value for w in at.warning if "transparent" in w.value]
    assert shown == [formatting.markdown_plain(note)] and shown[0].startswith(r"\$x\$ \*\*cut\*\*.png: ")


def test_a_run_folder_made_outside_the_app_is_named_literally(app_env: Path) -> None:
    import os
    import time

    from dermai import jobs

    runs = Path(jobs.runs_dir())
    name = "$x$ **b**"  # train --out takes any folder name
    (runs / name).mkdir(parents=True)
    (runs / name / "config.json").write_bytes(b'{"config": \xff}')
    then = time.time() - 3600  # quiet for an hour: not a trainer still writing, so deletable
    os.utime(runs / name / "config.json", (then, then))
    at = page("training").run()
    at.selectbox(key="train_run").set_value(name).run()
    assert_clean(at)
    shown = formatting.markdown_plain(name)
    said = [e.value for e in at.error if e.value.startswith("Cannot show run ")]
    assert len(said) == 1 and said[0].startswith(r"Cannot show run \$x\$ \*\*b\*\*: ")
    assert f"{formatting.markdown_plain(str(runs / name / 'config.json'))}: cannot be read" in said[0]
    next(b for b in at.button if b.label == rf"Delete {shown}").click().run()
    assert_clean(at)
    assert rf"Deleted run {shown}: 0.00 GB freed." in alerts(at) and not (runs / name).exists()


def test_code_span_shows_a_path_with_backticks_whole() -> None:
    """A folder named "scan`s" ended Evaluation's and the sidebar's code spans early and spilled the rest as
    markdown; the fence is now longer than any run of backticks in the path (CommonMark)."""
    assert formatting.code_span("/data/ham") == "`/data/ham`"
    assert formatting.code_span("/data/scan`s") == "``/data/scan`s``"
    assert formatting.code_span("`a``") == "``` `a`` ```"


def test_a_data_folder_named_like_markdown_is_named_literally_in_errors(app_env: Path, tmp_path: Path) -> None:
    """The sidebar's warning and the pages' "Cannot read the data folder" error (pages._common.plain_errors and
    or_stop) showed an exception's text as markdown: a typed folder "$x$ **b**" read as a formula and bold."""
    typo = str(tmp_path / "$x$ **b**")
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT)
    at.session_state["data_dir"] = typo  # as the sidebar's box sets it
    at.run()
    assert_clean(at)
    shown = formatting.markdown_plain(typo)
    assert [w.value for w in at.sidebar.warning] == [f"{shown}: no such folder: enter another folder above."]
    at.switch_page("pages/dataset.py").run()
    assert [e.value for e in at.error] == [
        f"Cannot read the data folder: {shown}: no such folder (enter another data folder in the sidebar)"
    ]
    assert r"\$x\$ \*\*b\*\*" in shown
