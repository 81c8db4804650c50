"""Predictor and `python -m dermai predict` on a tiny untrained model written to a temp folder (no dependence
on any trained run): calibration, tiers, OOD verdicts, TTA, saliency and the CLI's output and errors."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dermai import cli, weights
from dermai.context import PatientContext
from dermai.data import DIAGNOSES
from dermai.inference import dihedral_views, forward_pixels, softmax_np
from dermai.intake import IntakeError
from dermai.metrics import TIER_MEANINGS
from dermai.model import SimCLRResNet18
from dermai.ood import fit_ood, ood_scores
from dermai.predict import Predictor
from dermai.preprocess import eval_batch, resize_input
from dermai.ui.weights_menu import model_card

REPO = Path(__file__).resolve().parent.parent
CLASSES = list(DIAGNOSES)
SIZE = 64
MEAN, STD = (0.6, 0.5, 0.45), (0.2, 0.2, 0.2)


def lesion_like(seed: int, size: tuple[int, int] = (200, 150)) -> Image.Image:
    """A smooth brownish blob on skin tone with noise, standing in for a dermoscopy image."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy, r = w / 2 + rng.normal(0, 10), h / 2 + rng.normal(0, 10), rng.uniform(25, 50)
    blob = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))[..., None]
    skin, lesion = np.array([220, 170, 150]), np.array([110, 60, 40]) + rng.normal(0, 15, 3)
    pixels = skin * (1 - blob) + lesion * blob + rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained model + serving metadata computed the way `dermai.serving` does: OOD statistics from
    features of 'training' and 'validation' images, operating points on its own scores."""
    torch.manual_seed(0)
    model = SimCLRResNet18(len(CLASSES)).eval()
    pixels = np.stack([resize_input(lesion_like(i), SIZE) for i in range(48)])
    with torch.no_grad():
        features = model.features(eval_batch(pixels, MEAN, STD)).numpy()
    stats = fit_ood(features[:32], features[32:], percentile=99.0)
    # 16 "validation" images make a tight cut-off that the tests' other synthetic lesions can fail, and a
    # flagged image is ungradable: the cut-off is raised above them (test_ood_verdicts sets its own).
    probes = np.stack([resize_input(lesion_like(i), SIZE) for i in range(100, 141)])
    with torch.no_grad():
        probe_scores = ood_scores(model.features(eval_batch(probes, MEAN, STD)).numpy(), stats)
    stats.threshold = max(stats.threshold, 2.0 * float(probe_scores.max()))
    meta = {
        "classes": CLASSES,
        "image_size": SIZE,
        "mean": list(MEAN),
        "std": list(STD),
        "temperature": 1.5,
        "operating_points": {
            "refer": {"threshold": 0.3, "sensitivity": 0.95, "specificity": 0.41, "target": 0.95},
            "urgent": {"threshold": 0.6, "sensitivity": 0.62, "specificity": 0.90, "target": 0.90},
        },
        "ood": stats.to_meta(),
    }
    return weights.save_weights(model, tmp_path_factory.mktemp("w") / "model.safetensors", meta, stats.to_tensors())


@pytest.fixture(scope="module")
def predictor(weights_path: Path) -> Predictor:
    return Predictor.from_weights(weights_path)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_prediction_fields_and_calibrated_probabilities(predictor: Predictor) -> None:
    result = predictor.predict(lesion_like(100))
    probs = result.probabilities
    assert list(probs) == CLASSES and sum(probs.values()) == pytest.approx(1.0)
    assert result.p_malignant == pytest.approx(probs["mel"] + probs["bcc"] + probs["akiec"])
    assert result.tier in {"routine", "refer", "urgent"} and result.tier_meaning == TIER_MEANINGS[result.tier]
    assert isinstance(result.ood, bool) and result.ood_threshold == predictor.ood_stats.threshold
    assert result.elapsed_ms > 0
    record = json.loads(json.dumps(result.to_dict()))
    assert record["probabilities"] == probs and record["ood_score"] == result.ood_score


def test_temperature_scales_log_odds(weights_path: Path) -> None:
    image = lesion_like(101)
    sharp, soft = Predictor.from_weights(weights_path), Predictor.from_weights(weights_path)
    sharp.temperature, soft.temperature = 1.0, 4.0
    p1 = np.log(list(sharp.predict(image).probabilities.values()))
    p4 = np.log(list(soft.predict(image).probabilities.values()))
    np.testing.assert_allclose(p1 - p1[0], 4.0 * (p4 - p4[0]), rtol=1e-6, atol=1e-9)
    assert not np.allclose(p1, p4)


def test_tier_follows_thresholds(weights_path: Path) -> None:
    predictor = Predictor.from_weights(weights_path)
    image = lesion_like(102)
    p = predictor.predict(image).p_malignant
    points = predictor.operating_points
    cases = [
        (p - 0.02, p - 0.01, "urgent", 0.62, 0.90),
        (p - 0.01, p + 0.01, "refer", 0.95, 0.41),
        (p + 0.01, p + 0.02, "routine", 0.95, 0.41),
    ]
    for refer, urgent, tier, sensitivity, specificity in cases:
        points["refer"]["threshold"], points["urgent"]["threshold"] = refer, urgent
        result = predictor.predict(image)
        assert (result.tier, result.tier_sensitivity, result.tier_specificity) == (tier, sensitivity, specificity)
        assert result.cut_offs == {"refer": refer, "urgent": urgent} and not result.cut_offs_with_context
    predictor.operating_points = None
    result = predictor.predict(image)
    assert result.tier == "unavailable" and result.tier_sensitivity is None and "calibrate" in result.tier_meaning
    assert result.cut_offs is None


def test_ood_verdicts(weights_path: Path) -> None:
    predictor = Predictor.from_weights(weights_path)
    image = lesion_like(103)
    score = predictor.predict(image).ood_score
    predictor.ood_stats.threshold = score + 1e-6
    passed = predictor.predict(image)
    assert passed.ood is False and passed.tier in {"routine", "refer", "urgent"}
    predictor.ood_stats.threshold = score - 1e-6
    flagged = predictor.predict(image)
    assert flagged.ood is True and any("does not look like" in w for w in flagged.warnings)
    # an image the model cannot read gets no tier from its unreliable score, whatever that score is
    assert flagged.tier == "ungradable" and flagged.tier_meaning == TIER_MEANINGS["ungradable"]
    assert (flagged.tier_sensitivity, flagged.tier_specificity) == (None, None)
    assert flagged.p_malignant == passed.p_malignant  # the score itself is still reported
    # a greyscale copy keeps the shape but not the colours the model reads: ungradable whatever its features say
    predictor.ood_stats.threshold = 1e9
    grey = predictor.predict(image.convert("L").convert("RGB"))
    assert grey.ood is True and grey.tier == "ungradable" and any("no colour (greyscale)" in w for w in grey.warnings)
    assert predictor.predict(image).tier != "ungradable"  # the colour original, under the same cut-off
    blank = predictor.predict(Image.new("RGB", (120, 90), (200, 150, 130)))
    assert blank.ood is True and any("flat colour" in w for w in blank.warnings) and blank.tier == "ungradable"
    predictor.ood_stats = None  # weights without OOD statistics
    assert predictor.predict(image).ood is None and predictor.predict(image).ood_score is None


def test_tta_averages_the_eight_views_and_is_rotation_invariant(predictor: Predictor) -> None:
    image = lesion_like(104, size=(SIZE, SIZE))  # square at the input size: rotating commutes with resizing
    plain, tta = predictor.predict(image), predictor.predict(image, tta=True)
    assert plain.probabilities != tta.probabilities
    with torch.no_grad():
        x = eval_batch(resize_input(image, SIZE), MEAN, STD)
        logits = torch.stack([predictor.model(v.contiguous()) for v in dihedral_views(x)]).mean(0)
    expected = torch.softmax(logits / predictor.temperature, dim=-1)[0].numpy()
    np.testing.assert_allclose(list(tta.probabilities.values()), expected, atol=0.01)  # bf16 autocast on some CPUs
    rotated = predictor.predict(image.transpose(Image.Transpose.ROTATE_90), tta=True)
    np.testing.assert_allclose(list(rotated.probabilities.values()), list(tta.probabilities.values()), atol=0.01)


def test_input_kinds_agree_and_bad_input_raises(predictor: Predictor, tmp_path: Path) -> None:
    image = lesion_like(105)
    path = tmp_path / "lesion.png"
    path.write_bytes(png_bytes(image))
    expected = predictor.predict(image).probabilities
    for source in (png_bytes(image), path, str(path), predictor.read(path)):
        assert predictor.predict(source).probabilities == expected
    small = predictor.predict(image.resize((20, 15)))
    assert any("too small to grade (20×15 px" in w for w in small.warnings)
    assert small.tier == "ungradable" and small.tier_sensitivity is None  # never a reassuring "routine"
    assert predictor.predict(image.resize((40, 32))).tier != "ungradable"
    with pytest.raises(IntakeError, match="not an image"):
        predictor.predict(b"not an image at all")


def test_explain_heatmap_overlay_and_cached_explainers(predictor: Predictor) -> None:
    image = lesion_like(106, size=(200, 150))
    result = predictor.explain(image)
    assert result.heatmap.shape == (SIZE, SIZE) and 0 <= result.heatmap.min() <= result.heatmap.max() <= 1
    assert result.overlay.shape == (150, 200, 3) and result.overlay.dtype == np.uint8
    assert predictor.explainer("gradcam") is predictor.explainer("gradcam")
    malignant = predictor.explain(image, method="hirescam", target="malignant")
    assert malignant.heatmap.shape == (SIZE, SIZE) and malignant.target == "malignant"
    assert set(predictor._explainers) == {"gradcam", "hirescam"}


def test_a_portrait_photo_is_served_as_its_landscape_original(predictor: Predictor) -> None:
    """The same lesion photographed with the camera turned (3:4 portrait) reaches the model as the 4:3 landscape
    image it was trained on, so it gets the same scores; its Grad-CAM map comes back in the portrait frame, on
    the same spot of the lesion."""
    landscape = lesion_like(107, size=(200, 150))
    portrait = landscape.transpose(Image.Transpose.ROTATE_90)  # 150 wide, 200 high
    assert np.array_equal(resize_input(portrait, SIZE), resize_input(landscape, SIZE))
    upright, turned = predictor.predict(landscape), predictor.predict(portrait)
    assert turned.probabilities == pytest.approx(upright.probabilities, abs=1e-6)
    assert turned.ood_score == pytest.approx(upright.ood_score, abs=1e-6)
    upright_map, turned_map = predictor.explain(landscape), predictor.explain(portrait)
    assert turned_map.overlay.shape == (200, 150, 3)
    assert np.allclose(turned_map.heatmap, np.rot90(upright_map.heatmap), atol=1e-6)  # as the photo was turned
    assert not np.allclose(turned_map.heatmap, upright_map.heatmap, atol=1e-3)  # (a map that would show a turn)


def test_explain_targets_what_the_prediction_shows(weights_path: Path) -> None:
    """With a training prior the shown top diagnosis is not the raw logits' argmax: the default CAM and the
    "malignant" CAM must explain the served numbers, not the raw ones."""
    predictor = Predictor.from_weights(weights_path)
    image = lesion_like(107)
    pixels = resize_input(image, SIZE)[None]
    logits, _ = forward_pixels(predictor.model, pixels, mean=MEAN, std=STD)  # as `predict` computes them
    raw_top, lifted = int(logits[0].argmax()), int(logits[0].argmin())
    prior = np.full(len(CLASSES), 0.1 / (len(CLASSES) - 1))
    prior[lifted] = 0.9
    predictor.log_prior = np.log(prior).tolist()
    prediction = predictor.predict(image)
    assert prediction.top_diagnosis == CLASSES[lifted] != CLASSES[raw_top]
    default = predictor.explain(image)
    np.testing.assert_allclose(default.heatmap, predictor.explain(image, target=CLASSES[lifted]).heatmap, atol=1e-6)
    assert np.abs(default.heatmap - predictor.explain(image, target=raw_top).heatmap).max() > 0.05
    malignant = predictor.explainer()._target("malignant", CLASSES)
    served = malignant(torch.from_numpy(logits).double()).item()
    assert served == pytest.approx(prediction.p_malignant, rel=1e-6)
    # a prediction whose shown top class differs (TTA or context can do that) pins the target to it
    other = next(i for i in range(len(CLASSES)) if i not in (raw_top, lifted))
    shown = replace(prediction, probabilities={c: float(i == other) for i, c in enumerate(CLASSES)})
    pinned = predictor.explain(image, shown=shown)
    assert pinned.target == CLASSES[other]
    np.testing.assert_allclose(pinned.heatmap, predictor.explain(image, target=other).heatmap, atol=1e-6)


def test_concurrent_predict_and_explain_match_sequential_results(predictor: Predictor) -> None:
    """Streamlit shares one Predictor between sessions: a forward pass must never leak into a running CAM."""
    images = [predictor.read(lesion_like(200 + i)) for i in range(3)]
    heatmaps = [predictor.explain(image, target="mel").heatmap for image in images]
    scores = [predictor.predict(image).p_malignant for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        cams = [pool.submit(predictor.explain, image, target="mel") for image in images * 2]
        preds = [pool.submit(predictor.predict, image) for image in images * 2]
        for i, future in enumerate(cams):
            np.testing.assert_allclose(future.result().heatmap, heatmaps[i % 3], atol=1e-6)
        assert [f.result().p_malignant for f in preds] == scores * 2


def test_default_weights_path_is_used(weights_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", weights_path)
    assert Predictor.from_weights().path == weights_path
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", weights_path.parent / "absent.safetensors")
    with pytest.raises(weights.WeightsError, match="not found"):
        Predictor.from_weights()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xfe{}", "model.json: not UTF-8 text"),
        (b"{not json", "model.json: not valid JSON"),
        (b"[]", "model.json: expected a JSON object, got a list"),
        (b"null", "model.json: expected a JSON object, got null"),
        ({"model": None}, "model.json: field 'model' must be an object, got null"),
        ({"model": {"dropout": 0.1}}, "model.json: unknown field 'model.dropout' (known: arch, "),
        ({"model": {"members": "two"}}, "model.json: field 'model.members' must be a positive integer, got 'two'"),
        ({"model": {"members": 0}}, "model.json: field 'model.members' must be a positive integer, got 0"),
        ({"model": {"arch": "vgg16"}}, "model.json: fields 'model', 'mean' or 'std' describe no usable network"),
        ({"classes": "mel,nv"}, "model.json: field 'classes' must list the class names"),
        ({"image_size": "64"}, "model.json: field 'image_size' must be a positive integer, got '64'"),
        ({"temperature": 0}, "model.json: field 'temperature' must be a number above 0, got 0"),
        ({"temperature": "hot"}, "model.json: field 'temperature' must be a number above 0, got 'hot'"),
        ({"log_prior": [0, 1]}, "model.json: field 'log_prior' must list one number per class (7), got [0, 1]"),
        ({"operating_points": {"refer": "x"}}, "model.json: field 'operating_points' must hold 'refer' and 'urgent'"),
        ({"ood": "x"}, "model.json: field 'ood' must hold a numeric 'threshold', got x"),
        ({"context": {"fields": "x"}}, "model.json: field 'context' must hold 'fields' (each with a 'table'"),
        (
            {"context": {"fields": {}, "temperature": 1.0, "operating_points": {"urgent": {"threshold": 0.5}}}},
            "model.json: field 'context.operating_points' must hold 'refer' and 'urgent'",
        ),
    ],
)
def test_garbled_or_foreign_json_is_a_weights_error_naming_file_and_field(
    weights_path: Path, tmp_path: Path, payload: bytes | dict, message: str
) -> None:
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(weights_path.read_bytes())
    good = json.loads(weights_path.with_suffix(".json").read_text())
    text = payload if isinstance(payload, bytes) else json.dumps({**good, **payload}).encode()
    copy.with_suffix(".json").write_bytes(text)
    with pytest.raises(weights.WeightsError) as caught:
        weights.load_weights(tmp_path)  # a folder, as the app's "Other weights file" box accepts
    assert str(caught.value).startswith(str(copy.with_suffix(".json"))) and message in str(caught.value)
    if isinstance(payload, bytes):
        with pytest.raises(weights.WeightsError, match="model.json: "):
            weights.read_meta(copy)


def test_untrained_classifier_reads_the_trainers_record() -> None:
    assert weights.untrained_classifier({}) is None  # hand-made JSON: cannot tell, not refused
    assert weights.untrained_classifier({"stages": ["finetune"], "status": "finished"}) is None
    assert weights.untrained_classifier({"stages": ["pretrain"], "status": "finished"}) == (
        "pretrain only — no trained classifier"
    )
    both = {"stages": ["pretrain", "finetune"], "status": "stopped", "val_metrics": {}}
    assert "stopped before fine-tuning" in str(weights.untrained_classifier(both))
    assert weights.untrained_classifier({**both, "val_metrics": {"stage": "finetune", "val_auroc": 0.8}}) is None
    assert weights.untrained_classifier({**both, "status": "finished"}) is None
    # an ensemble saved "stopped" by an older version, whose first member had stopped: its members were checked
    assert weights.untrained_classifier({"stages": ["finetune"], "status": "stopped", "ensemble": [{}, {}]}) is None


def test_cli_predict_json_on_a_real_image(ham_root: Path, weights_path: Path, tmp_path: Path, capsys) -> None:
    images = sorted((ham_root / "images").glob("ISIC_*.jpg"))[:2]
    code = cli.main(
        [
            "predict",
            *map(str, images),
            "--weights",
            str(weights_path),
            "--json",
            "--tta",
            "--cam",
            "eigencam",
            "--cam-out",
            str(tmp_path / "cams"),
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 2
    for line, image in zip(out, images, strict=True):
        record = json.loads(line)
        assert record["image"] == str(image) and set(record["probabilities"]) == set(CLASSES)
        assert record["tier"] in {"routine", "refer", "urgent"} and isinstance(record["ood"], bool)
        assert 0 <= record["p_malignant"] <= 1
        cam = Path(record["cam"])
        assert cam.name == f"{image.stem}_cam.png"
        with Image.open(cam) as written, Image.open(image) as original:
            assert written.size == original.size
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == [f"{i.stem}_cam.png" for i in images]


def test_cli_worklist_csv_into_an_unusable_place_fails_before_any_scoring(
    weights_path: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes(lesion_like(120)))
    (tmp_path / "afile").write_text("x")

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the output place was checked")

    monkeypatch.setattr(Predictor, "from_weights", never)
    for out, message in [
        (tmp_path / "afile" / "w.csv", f"{tmp_path / 'afile'} is a file, not a folder"),
        (tmp_path, f"cannot write {tmp_path}: it is a folder; name a file"),
    ]:
        code = cli.main(["predict", str(image), "--weights", str(weights_path), "--csv", str(out)])
        assert code == 2 and message in capsys.readouterr().err


def test_cli_worklist_csv_from_a_folder_keeps_going_past_a_bad_file(weights_path: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "clinic"
    (folder / "day2").mkdir(parents=True)
    for i, name in enumerate(["a.png", "day2/b.png", "c.png"]):
        (folder / name).write_bytes(png_bytes(lesion_like(120 + i)))
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "readme.txt").write_text("not an image")
    out = tmp_path / "worklist.csv"
    code = cli.main(["predict", str(folder), "--weights", str(weights_path), "--csv", str(out)])
    captured = capsys.readouterr()
    assert code == 1  # one file could not be read: listed, not fatal
    assert f"warning: {folder / 'bad.jpg'}: " in captured.err and "wrote " in captured.err
    table = pd.read_csv(out)
    assert len(table) == 4 and table["tier"].iloc[-1] == "unreadable"
    assert table["image"].iloc[-1] == str(folder / "bad.jpg")
    scored = table.iloc[:3]
    assert set(scored["image"]) == {str(folder / n) for n in ["a.png", "day2/b.png", "c.png"]}
    expected = {r["image"]: r for r in map(json.loads, _json_lines(folder, weights_path, capsys))}
    for _, row in scored.iterrows():
        assert row["p_malignant"] == pytest.approx(expected[row["image"]]["p_malignant"], abs=1e-4)
        assert row["tier"] == expected[row["image"]]["tier"]
    ranks = scored["tier"].map({"urgent": 0, "refer": 1, "ungradable": 2, "routine": 3}).to_numpy()
    assert (ranks[:-1] <= ranks[1:]).all()
    assert list(table.columns)[:3] == ["rank", "image", "tier"] and list(table["rank"]) == [1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clinic", "worklist.csv"]  # no temporary left behind


def _json_lines(folder: Path, weights_path: Path, capsys) -> list[str]:
    """Each readable image of `folder` scored on its own, as `predict --json` reports it."""
    images = [str(folder / n) for n in ["a.png", "day2/b.png", "c.png"]]
    assert cli.main(["predict", *images, "--weights", str(weights_path), "--json"]) == 0
    return capsys.readouterr().out.strip().splitlines()


def test_cli_all_readable_worklist_exits_zero(weights_path: Path, tmp_path: Path, capsys) -> None:
    image = tmp_path / "one.png"
    image.write_bytes(png_bytes(lesion_like(130)))
    out = tmp_path / "list.csv"
    assert cli.main(["predict", str(image), "--weights", str(weights_path), "--csv", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["image"] == str(image)  # stdout stays one JSON object per image
    assert pd.read_csv(out)["image"].tolist() == [str(image)]
    assert cli.main(["predict", str(tmp_path / "missing.png"), "--weights", str(weights_path)]) == 2
    assert "missing.png: no such file or folder" in capsys.readouterr().err


def test_cli_writes_a_printable_report_per_image(weights_path: Path, tmp_path: Path, capsys) -> None:
    image = tmp_path / "lesion <1>.png"
    image.write_bytes(png_bytes(lesion_like(140)))
    out = tmp_path / "reports"
    code = cli.main(["predict", str(image), "--weights", str(weights_path), "--json", "--report-out", str(out)])
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["report"] == str(out / "lesion <1>_report.html") and record["cam"] is None
    page = (out / "lesion <1>_report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "lesion &lt;1&gt;.png" in page and "lesion <1>" not in page
    assert record["tier"].upper() in page and f"{record['p_malignant']:.3f}" in page
    assert page.count("data:image/png;base64,") == 2 and "gradcam overlay" in page


def test_cli_corrupt_file_in_a_fresh_process(weights_path: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "scan.jpg"
    corrupt.write_bytes(png_bytes(lesion_like(109))[:200])
    proc = subprocess.run(
        [sys.executable, "-m", "dermai", "predict", str(corrupt), "--weights", str(weights_path), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: {corrupt}: ")


def test_cli_cam_choices_match_saliency_and_need_an_output_folder(weights_path: Path, capsys) -> None:
    from dermai.saliency import CAM_METHODS

    assert cli.CAM_CHOICES == tuple(CAM_METHODS)
    assert cli.main(["predict", "x.png", "--weights", str(weights_path), "--cam", "layercam"]) == 2
    assert (
        capsys.readouterr().err == "error: --cam needs --cam-out DIR (or --report-out DIR) to write the overlays to\n"
    )


@pytest.fixture(scope="module")
def context_weights(weights_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with a hand-made context block: 'face' favours melanoma; refer catches everyone."""
    folder = tmp_path_factory.mktemp("ctx")
    meta = json.loads(weights_path.with_suffix(".json").read_text())
    table = {"face": [0.0] * 4 + [2.0, -2.0, 0.0], "back": [0.0] * 7}
    meta["context"] = {
        "temperature": 1.5,
        "fields": {"site": {"weight": 1.0, "table": table}, "age": {"weight": 0.5, "table": {"40": [0.0] * 7}}},
        "operating_points": {
            "refer": {"threshold": 0.0, "sensitivity": 1.0, "specificity": 0.0, "target": 0.95},
            "urgent": {"threshold": 1.01, "sensitivity": 0.0, "specificity": 1.0, "target": 0.90},
        },
    }
    for suffix in (".safetensors",):
        (folder / f"model{suffix}").write_bytes(weights_path.with_suffix(suffix).read_bytes())
    (folder / "model.json").write_text(json.dumps(meta))
    return folder / "model.safetensors"


def test_patient_context_shifts_the_score_and_uses_its_own_tiers(weights_path: Path, context_weights: Path) -> None:
    image = lesion_like(103)
    plain = Predictor.from_weights(weights_path).predict(image)
    with_model = Predictor.from_weights(context_weights)
    assert with_model.context_sites == ["back", "face"]
    unchanged = with_model.predict(image, context=None)
    assert unchanged.probabilities == plain.probabilities and unchanged.tier == plain.tier
    assert unchanged.context is None and unchanged.p_malignant_image_only is None

    face = with_model.predict(image, context=with_model.parse_context(site="face", sex="female"))
    assert face.context == {"site": "face"}  # this context model has no sex table
    assert face.context_effects == pytest.approx({"site": face.p_malignant - plain.p_malignant})
    both = with_model.predict(image, context=with_model.parse_context(site="face", age=40))
    assert set(both.context_effects) == {"age", "site"}
    assert both.context_effects["age"] == pytest.approx(both.p_malignant - face.p_malignant)
    assert "sex 'female' is not in this model's context tables: not used" in face.warnings
    assert face.p_malignant_image_only == pytest.approx(plain.p_malignant)
    assert face.probabilities["mel"] > plain.probabilities["mel"] and face.p_malignant > plain.p_malignant
    assert face.tier == "refer" and face.tier_sensitivity == 1.0  # the context block's cut-offs
    assert with_model.parse_context("", None, "unknown") is None
    with pytest.raises(ValueError, match="site: 'elbow' is not a body site this model knows \\(back, face\\)"):
        with_model.parse_context(site="elbow")


def test_context_for_weights_without_a_context_model_is_reported_not_used(weights_path: Path) -> None:
    predictor = Predictor.from_weights(weights_path)
    image = lesion_like(104)
    result = predictor.predict(image, context=predictor.parse_context(age=70))
    assert result.probabilities == predictor.predict(image).probabilities and result.context is None
    assert any("no patient-context model" in w for w in result.warnings)


def test_empty_ood_and_context_blocks_are_served_as_none(weights_path: Path, tmp_path: Path) -> None:
    """A hand-written `"ood": {}` or `"context": {}` loads (`weights.check_serving_fields` lets it through) and
    is served as no block at all: no OOD verdict, context reported unused, and the model card says so."""
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(weights_path.read_bytes())
    meta = json.loads(weights_path.with_suffix(".json").read_text())
    copy.with_suffix(".json").write_text(json.dumps({**meta, "ood": {}, "context": {}}))
    predictor = Predictor.from_weights(copy)
    assert predictor.ood_stats is None and predictor.context_model is None
    assert predictor.context_fields == [] and predictor.context_sites == []
    image = lesion_like(104)
    result = predictor.predict(image, context=predictor.parse_context(age=70))
    assert result.ood is None and result.context is None
    assert result.probabilities == Predictor.from_weights(weights_path).predict(image).probabilities
    assert any("no patient-context model" in w for w in result.warnings)
    card = model_card(predictor.meta)
    assert card["ood"] is False and card["context"] is None


def test_cli_predict_with_context(context_weights: Path, tmp_path: Path, capsys) -> None:
    image = tmp_path / "lesion.png"
    lesion_like(105).save(image)
    assert cli.main(["predict", str(image), "--weights", str(context_weights), "--site", "face", "--age", "40"]) == 0
    out = capsys.readouterr().out
    assert "with patient context (age 40, site face); image alone: p " in out
    assert "; each field's effect: age " in out and ", site +" in out  # 'face' favours melanoma here
    assert cli.main(["predict", str(image), "--weights", str(context_weights), "--age", "forty"]) == 2
    assert "error: age: 'forty' is not a number of years" in capsys.readouterr().err


def test_context_values_outside_the_tables_are_dropped_with_a_warning(context_weights: Path) -> None:
    predictor = Predictor.from_weights(context_weights)
    image = lesion_like(106)
    result = predictor.predict(image, context=PatientContext(age=40.0, site="torso"))
    assert result.context == {"age": 40.0}
    assert "site 'torso' is not in this model's context tables: not used" in result.warnings
    only_unknown = predictor.predict(image, context=PatientContext(site="torso"))
    assert only_unknown.context is None and only_unknown.p_malignant == predictor.predict(image).p_malignant


def test_cli_predict_reads_each_images_context_from_a_csv(context_weights: Path, tmp_path: Path, capsys) -> None:
    for i, name in enumerate(("a", "b")):
        lesion_like(107 + i).save(tmp_path / f"{name}.png")
    csv = tmp_path / "meta.csv"
    csv.write_text("image_id,age,sex,localization\na,40,female,face\nb,,,\n")
    images = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert cli.main(["predict", *images, "--weights", str(context_weights), "--metadata", str(csv), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records[0]["context"] == {"age": 40.0, "site": "face"}  # no sex table in this context model
    assert records[1]["context"] is None and records[1]["p_malignant_image_only"] is None
    csv.write_text("image_id,age\na,40\n")
    assert cli.main(["predict", *images, "--weights", str(context_weights), "--metadata", str(csv)]) == 2
    err = capsys.readouterr()
    assert f"error: {csv}: no row for image 'b'" in err.err and "IMAGE" not in err.out  # nothing scored first
    assert (
        cli.main(["predict", images[0], "--weights", str(context_weights), "--metadata", str(csv), "--age", "4"]) == 2
    )
    assert "either --metadata or --age/--sex/--site" in capsys.readouterr().err


def test_subgroup_notes_caution_only_for_given_groups_ranked_clearly_worse() -> None:
    from dermai.predict import subgroup_notes

    rows = [
        {"field": "site", "group": "face", "n": 121, "auroc": 0.758},
        {"field": "site", "group": "trunk", "n": 220, "auroc": 0.97},
        {"field": "site", "group": "ear", "n": 11, "auroc": None},  # too few to say: not validated
        {"field": "age", "group": "70 and over", "n": 322, "auroc": 0.825},
        {"field": "sex", "group": "female", "n": 660, "auroc": 0.884},  # inside the overall interval
    ]
    meta = {"test_metrics": {"auroc": 0.894, "auroc_ci": [0.872, 0.916], "subgroups": rows}}
    notes = subgroup_notes(meta, PatientContext(age=75, sex="female", site="face"))
    assert notes == [
        "body site face: on its test split this model ranked such lesions worse (AUROC 0.758 over 121 images) than "
        "overall (0.894); weigh its score and tier with that in mind",
        "age 70 and over: on its test split this model ranked such lesions worse (AUROC 0.825 over 322 images) than "
        "overall (0.894); weigh its score and tier with that in mind",
    ]
    assert subgroup_notes(meta, PatientContext(site="trunk")) == []
    assert not any("ranked" in note for note in subgroup_notes(meta, PatientContext(age=69.5)))  # 50-69, not 70+
    assert subgroup_notes(meta, PatientContext(site="ear"))[0].startswith("body site ear: this model's performance")
    assert subgroup_notes(meta, None) == [] and subgroup_notes(meta, PatientContext()) == []
    assert subgroup_notes({"test_metrics": {"auroc": 0.9}}, PatientContext(site="face")) == []  # none recorded
    assert subgroup_notes({"test_metrics": [1]}, PatientContext(site="face")) == []  # an odd JSON: no caution


def test_the_shipped_model_cautions_about_face_lesions() -> None:
    from dermai.predict import subgroup_notes
    from dermai.weights import DEFAULT_WEIGHTS, read_meta

    notes = subgroup_notes(read_meta(DEFAULT_WEIGHTS), PatientContext(site="face"))
    assert len(notes) == 1 and notes[0].startswith("body site face: on its test split this model ranked")


def test_a_model_trained_at_a_non_square_frame_is_served_at_it(tmp_path: Path) -> None:
    """Weights whose JSON gives `image_width` (trained with `--image-width`) see each photo resized to height ×
    width, not squashed to a square: a 4:3 photo keeps its shape, a portrait one is turned first, and Grad-CAM
    maps come back in the photo's orientation."""
    torch.manual_seed(0)
    model = SimCLRResNet18(len(CLASSES)).eval()
    meta = {"classes": CLASSES, "image_size": 48, "image_width": 64, "mean": list(MEAN), "std": list(STD)}
    predictor = Predictor.from_weights(weights.save_weights(model, tmp_path / "model.safetensors", meta))
    assert predictor.input_size == (48, 64)
    image = lesion_like(108, size=(200, 150))
    pixels = resize_input(image, (48, 64))
    assert pixels.shape == (48, 64, 3)
    logits, _ = forward_pixels(model, pixels[None], mean=MEAN, std=STD)
    square, _ = forward_pixels(model, resize_input(image, 48)[None], mean=MEAN, std=STD)
    served = predictor.predict(image)
    assert served.probabilities == pytest.approx(
        dict(zip(CLASSES, softmax_np(logits)[0].tolist(), strict=True)), abs=1e-6
    )
    assert served.probabilities != pytest.approx(
        dict(zip(CLASSES, softmax_np(square)[0].tolist(), strict=True)), abs=1e-4
    )
    assert predictor.explain(image).heatmap.shape == (48, 64)
    portrait = image.transpose(Image.Transpose.ROTATE_90)
    assert predictor.predict(portrait).probabilities == pytest.approx(served.probabilities, abs=1e-6)
    assert predictor.explain(portrait).heatmap.shape == (64, 48)
    assert len(predictor.predict(image, tta=True).probabilities) == len(CLASSES)  # quarter turns run as 64×48

    broken = {**meta, "image_width": 0}
    weights.save_weights(model, tmp_path / "bad" / "model.safetensors", broken)
    with pytest.raises(weights.WeightsError, match="model.json: field 'image_width' must be a positive integer"):
        Predictor.from_weights(tmp_path / "bad" / "model.safetensors")


@pytest.mark.parametrize("size", [0, -3, True, 2.5, "96", (96,), (96, 0), (1, 2, 3)])
def test_an_input_size_is_a_positive_side_or_height_and_width(size: object) -> None:
    from dermai.preprocess import input_frame, size_label

    assert input_frame(96) == (96, 96) and input_frame([120, 160]) == (120, 160) and size_label((120, 160)) == "120×160"
    with pytest.raises(ValueError, match="an input size is a positive integer or \\(height, width\\)"):
        input_frame(size)  # type: ignore[arg-type]


def test_weights_whose_classifier_never_learned_are_refused_for_prediction(weights_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "pretrained" / "model.safetensors"
    copy.parent.mkdir()
    shutil.copy(weights_path, copy)
    meta = json.loads(weights_path.with_suffix(".json").read_text())
    copy.with_suffix(".json").write_text(json.dumps({**meta, "stages": ["pretrain"], "status": "finished"}))
    with pytest.raises(weights.WeightsError, match="pretrain only — no trained classifier; predict with a fine-tuned"):
        Predictor.from_weights(copy)
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes(lesion_like(121)))
    assert cli.main(["predict", str(image), "--weights", str(copy)]) == 2  # not tiers from a random classifier
    from dermai.serving import fit_serving

    with pytest.raises(weights.WeightsError, match="pretrain only — no trained classifier; fine-tune it before"):
        fit_serving(copy, tmp_path / "no-data-needed")  # refused before any data is read


def test_cli_evaluate_and_compare_check_their_outputs_before_scoring(
    weights_path: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dermai.evaluate

    def never(*args, **kwargs):
        raise AssertionError("scoring started before the output places were checked")

    monkeypatch.setattr(dermai.evaluate, "evaluate", never)
    monkeypatch.setattr(dermai.evaluate, "compare_weights", never)
    w = str(weights_path)
    for argv in (
        ["evaluate", "--weights", w, "--out", str(tmp_path), "--predictions", str(tmp_path / "p.csv")],
        ["evaluate", "--weights", w, "--out", str(tmp_path / "r.json"), "--predictions", str(tmp_path)],
        ["compare", w, w, "--out", str(tmp_path)],
    ):
        assert cli.main(argv) == 2
        assert f"cannot write {tmp_path}: it is a folder" in capsys.readouterr().err


def test_cli_predict_gives_images_sharing_a_name_their_own_row_and_files(
    weights_path: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "stem"
    for i, name in enumerate(["p1/lesion.jpg", "p2/lesion.jpg", "good.jpg", "good.png", "solo.png"]):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        lesion_like(130 + i).save(folder / name)
    out = tmp_path / "out"
    code = cli.main(["predict", str(folder), "--weights", str(weights_path), "--report-out", str(out)])
    assert code == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:-1] if not line.startswith(" ")]
    assert rows == ["good.jpg", "good.png", "p1/lesion.jpg", "p2/lesion.jpg", "solo.png"]
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"{s}_report.html" for s in ("good_jpg", "good_png", "p1_lesion_jpg", "p2_lesion_jpg", "solo")]


def test_cli_predict_into_a_closed_pipe_stops_quietly(weights_path: Path, tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes(lesion_like(122)))
    process = subprocess.Popen(
        [sys.executable, "-m", "dermai", "predict", str(image), "--weights", str(weights_path), "--json"],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # as `| head` does once it has its lines: the next write finds no reader
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and err == b""  # not "error: [Errno 32] Broken pipe"


def test_cli_warnings_name_the_default_weights_file_not_the_weights(capsys: pytest.CaptureFixture[str]) -> None:
    from dermai.weights import DEFAULT_WEIGHTS

    cli._warn_if_tta_differs(None, True)  # the shipped weights' cut-offs were validated without TTA
    assert capsys.readouterr().err.startswith(f"warning: the default weights ({DEFAULT_WEIGHTS}): test-time")
    assert cli._weights_label("w.safetensors") == "w.safetensors"


def test_validated_tta_is_the_serving_record_then_the_shipping_choice() -> None:
    from dermai.predict import tta_mismatch, validated_tta

    points = {"operating_points": {"refer": {"threshold": 0.3}, "urgent": {"threshold": 0.6}}}
    assert validated_tta({}) is False
    assert validated_tta({"serving": {"tta": True}}) is True
    assert validated_tta({"tta_recommended": True}) is True  # shipped before serving recorded it
    assert validated_tta({"serving": {"tta": False}, "tta_recommended": True}) is False  # the cut-offs' own record
    meta = {**points, "serving": {"tta": True}}
    assert tta_mismatch(meta, None) is None and tta_mismatch(meta, True) is None
    assert "with it on: the tiers" in tta_mismatch(meta, False)
    assert tta_mismatch({"serving": {"tta": True}}, False) is None  # no cut-offs: nothing validated to differ from


@pytest.fixture(scope="module")
def tta_weights(weights_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model, its JSON saying its cut-offs were fitted on test-time-augmented scores (`calibrate --tta`)."""
    folder = tmp_path_factory.mktemp("tta")
    shutil.copy(weights_path, folder / "model.safetensors")
    meta = json.loads(weights_path.with_suffix(".json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "serving": {"fitted_on": "val", "tta": True}}))
    return folder / "model.safetensors"


def test_predict_scores_as_the_cut_offs_were_validated_unless_told(tta_weights: Path, weights_path: Path) -> None:
    predictor = Predictor.from_weights(tta_weights)
    image = lesion_like(150)
    default, plain, tta = (
        predictor.predict(image),
        predictor.predict(image, tta=False),
        predictor.predict(image, tta=True),
    )
    assert default.tta is True and default.tta_validated is True
    assert default.p_malignant == pytest.approx(tta.p_malignant, abs=1e-9)
    assert plain.tta is False and plain.tta_validated is True and plain.p_malignant != pytest.approx(tta.p_malignant)
    assert Predictor.from_weights(weights_path).tta_validated is False  # no serving record: fitted without


def test_cli_predict_defaults_to_the_validated_tta_and_warns_when_told_otherwise(
    tta_weights: Path, tmp_path: Path, capsys
) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes(lesion_like(151)))
    assert cli.main(["predict", str(image), "--weights", str(tta_weights), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["tta"] is True and captured.err == ""
    assert cli.main(["predict", str(image), "--weights", str(tta_weights), "--json", "--no-tta"]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["tta"] is False and record["tta_validated"] is True
    assert captured.err == (
        f"warning: {tta_weights}: test-time augmentation is off, but these weights' tier cut-offs were validated "
        "with it on: the tiers and their validated sensitivity and specificity describe the other setting\n"
    )
    out = tmp_path / "list.csv"
    assert cli.main(["predict", str(image), "--weights", str(tta_weights), "--csv", str(out)]) == 0
    assert pd.read_csv(out)["tta"].tolist() == [True]  # the worklist records how each score was made
