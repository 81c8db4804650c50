"""Saliency: every CAM method gives a valid heatmap, the CAM object is built once and leaves no hooks behind,
the graph cut changes nothing, the targets are the served scores (calibrated top class, served p_malignant),
overlays keep the original size, and the plausibility measures are right."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from dermai.data import DIAGNOSES
from dermai.ensemble import EnsembleModel
from dermai.inference import calibrated_probs, malignant_probability
from dermai.model import SimCLRResNet18
from dermai.saliency import (
    CAM_METHODS,
    MalignantTarget,
    SaliencyExplainer,
    cam_mass_in_mask,
    overlay,
    pointing_game_hit,
    served_top_class,
)

CLASSES = list(DIAGNOSES)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> SimCLRResNet18:
    torch.manual_seed(0)
    return SimCLRResNet18(len(CLASSES)).eval()


def image_tensor(size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_each_method_gives_a_heatmap_in_unit_range(model: SimCLRResNet18, method: str) -> None:
    # layer2 (128 channels, 4×4 at 32 px) keeps ScoreCAM's one-forward-per-channel cheap and the map non-trivial
    explainer = SaliencyExplainer(model, method, target_layer=model.trunk.layer2[-1], classes=CLASSES)
    for target in (None, "malignant"):
        heatmap = explainer.explain(image_tensor(32), target=target)
        assert heatmap.shape == (32, 32) and heatmap.dtype == np.float32
        assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0
    assert len(model.trunk.layer2[-1]._forward_hooks) == 0


def test_cam_object_is_built_once_and_leaves_no_hooks(model: SimCLRResNet18) -> None:
    explainer = SaliencyExplainer(model, "gradcam", classes=CLASSES)
    cam = explainer.cam
    first = explainer.explain(image_tensor(32), target="nv")
    second = explainer.explain(image_tensor(32), target=5, aug_smooth=True, eigen_smooth=True)
    assert explainer.cam is cam
    assert first.shape == second.shape == (32, 32)
    assert len(model.cam_layer._forward_hooks) == 0
    with torch.no_grad():
        model(image_tensor(64))  # a plain prediction afterwards records nothing
    assert cam.activations_and_grads.activations == [] and cam.activations_and_grads.gradients == []
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_graph_cut_matches_the_librarys_own_result(model: SimCLRResNet18) -> None:
    x = image_tensor(96, seed=4)
    with GradCAM(model=model, target_layers=[model.cam_layer]) as reference:
        expected = reference(x, targets=[ClassifierOutputTarget(4)])[0]
    model.zero_grad(set_to_none=True)
    ours = SaliencyExplainer(model, "gradcam").explain(x, target=4)
    assert expected.max() > 0  # a 3×3 map with structure, not a constant
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_heatmap_from_uint8_pixels_matches_explain(model: SimCLRResNet18) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    explainer = SaliencyExplainer(model, "gradcam++", classes=CLASSES, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = (torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.25
    np.testing.assert_allclose(explainer.heatmap(pixels, "bkl"), explainer.explain(x, "bkl"), atol=1e-5)


def test_targets_and_errors(model: SimCLRResNet18) -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0, -1.0, 3.0, 0.5, 0.0]])
    probs = torch.softmax(logits, dim=-1)[0]
    assert MalignantTarget(CLASSES)(logits)[0].item() == pytest.approx((probs[0] + probs[1] + probs[4]).item())
    assert MalignantTarget(CLASSES, temperature=2.0)(logits[0]).item() == pytest.approx(
        torch.softmax(logits[0] / 2, -1)[[0, 1, 4]].sum().item()
    )
    assert MalignantTarget(["benign", "malignant"])(torch.tensor([0.0, 0.0])).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no malignant class"):
        MalignantTarget(["a", "b"])
    with pytest.raises(ValueError, match="unknown CAM method"):
        SaliencyExplainer(model, "fullgrad")
    explainer = SaliencyExplainer(model, "eigencam")
    with pytest.raises(ValueError, match="needs the class names"):
        explainer.explain(image_tensor(32), target="mel")
    with pytest.raises(ValueError, match="unknown target"):
        explainer.explain(image_tensor(32), target="melanoma", classes=CLASSES)
    with pytest.raises(ValueError, match="one image"):
        explainer.explain(torch.zeros(2, 3, 32, 32))


def test_malignant_target_is_the_served_p_malignant() -> None:
    logits = np.array([[1.0, 2.0, 0.0, -1.0, 3.0, 0.5, 0.0], [0.2, -0.4, 1.5, 0.0, -2.0, 0.3, 0.9]])
    # HAM10000-like training frequencies (nv ≈ 67 %, df ≈ 1 %): a prior gap of ~4 nats between nv and df
    meta = {"temperature": 1.7, "log_prior": np.log([0.033, 0.051, 0.11, 0.011, 0.111, 0.67, 0.014]).tolist()}
    served = malignant_probability(calibrated_probs(logits, meta), CLASSES)
    target = MalignantTarget(CLASSES, meta["temperature"], meta["log_prior"])
    ours = target(torch.tensor(logits, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, served, rtol=1e-10)
    without_prior = MalignantTarget(CLASSES, meta["temperature"])(torch.tensor(logits, dtype=torch.float64)).numpy()
    assert np.abs(without_prior - served).min() > 0.05  # the prior matters here, so the check above can fail
    with pytest.raises(ValueError, match="log prior has 2 entries"):
        MalignantTarget(CLASSES, 1.0, [0.0, 0.0])


def prior_favouring(cls: int, n: int = len(CLASSES)) -> list[float]:
    """A training log prior with 90 % of the images in one class: enough to move an untrained model's argmax."""
    prior = np.full(n, 0.1 / (n - 1))
    prior[cls] = 0.9
    return np.log(prior).tolist()


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_predicted_class_target_is_the_calibrated_top_class(model: SimCLRResNet18, method: str) -> None:
    x = image_tensor(96, seed=4)
    with torch.no_grad():
        logits = model(x)[0]
    raw_top = int(logits.argmax())
    shown = int(logits.argmin())  # the prior lifts the raw logits' last class to the top
    log_prior = prior_favouring(shown)
    probs = calibrated_probs(logits[None].numpy(), {"temperature": 1.5, "log_prior": log_prior})
    assert int(probs.argmax()) == shown != raw_top
    assert served_top_class(logits, 1.5, log_prior) == shown
    layer = model.trunk.layer2[-1]  # a 12×12 map: the classes' heatmaps differ visibly
    explainer = SaliencyExplainer(
        model, method, target_layer=layer, classes=CLASSES, temperature=1.5, log_prior=log_prior
    )
    assert explainer.predicted_class(x) == shown
    predicted = explainer.explain(x)
    np.testing.assert_allclose(predicted, explainer.explain(x, target=shown), atol=1e-6)
    assert np.abs(predicted - explainer.explain(x, target=raw_top)).max() > 0.05
    uncalibrated = SaliencyExplainer(model, method, target_layer=layer, classes=CLASSES)
    np.testing.assert_allclose(uncalibrated.explain(x), uncalibrated.explain(x, target=raw_top), atol=1e-6)


def test_ensemble_predicted_class_and_malignant_use_the_calibration() -> None:
    torch.manual_seed(1)
    ensemble = EnsembleModel([SimCLRResNet18(len(CLASSES)).eval() for _ in range(2)]).eval()
    x = image_tensor(64, seed=2)
    with torch.no_grad():
        logits = ensemble(x)[0]  # the members' mean logits
    shown = int(logits.argmin())
    log_prior = prior_favouring(shown)
    explainer = SaliencyExplainer(ensemble, "gradcam", classes=CLASSES, temperature=1.2, log_prior=log_prior)
    assert explainer.predicted_class(x) == shown != int(logits.argmax())
    np.testing.assert_allclose(explainer.explain(x), explainer.explain(x, target=shown), atol=1e-6)
    heatmap = explainer.explain(x, target="malignant")
    assert heatmap.shape == (64, 64) and 0.0 <= heatmap.min() <= heatmap.max() <= 1.0
    assert all(len(layer._forward_hooks) == 0 for layer in ensemble.cam_layers)


def test_overlay_is_at_original_size_and_aligned() -> None:
    image = np.zeros((150, 200, 3), np.uint8)
    heatmap = np.zeros((32, 32), np.float32)
    heatmap[:16, :16] = 1.0  # hot top-left quadrant
    blended = overlay(image, heatmap, alpha=1.0)
    assert blended.shape == (150, 200, 3) and blended.dtype == np.uint8
    assert blended[10, 10, :2].min() > 200 and blended[10, 10, 2] < 60  # hot = bright yellow in viridis
    assert blended[140, 190].max() < 100 and blended[140, 190, 2] > blended[140, 190, 1]  # cold = dark purple
    grey = np.full((150, 200, 3), 90, np.uint8)
    assert np.array_equal(overlay(grey, heatmap, alpha=0.0), grey)
    with pytest.raises(ValueError, match="RGB"):
        overlay(np.zeros((10, 10), np.uint8), heatmap)


def test_mass_in_mask_and_pointing_game() -> None:
    mask = np.zeros((150, 200), np.uint8)
    mask[:, :100] = 255  # lesion = left half, at the original image's size
    uniform = np.ones((32, 32), np.float32)
    assert cam_mass_in_mask(uniform, mask) == pytest.approx(0.5)
    inside = np.zeros((32, 32), np.float32)
    inside[10, 5] = 1.0
    inside[20, 8] = 0.5
    assert cam_mass_in_mask(inside, mask) == pytest.approx(1.0)
    assert pointing_game_hit(inside, mask)
    outside = inside.copy()
    outside[3, 30] = 2.0
    assert cam_mass_in_mask(outside, mask) == pytest.approx(1.5 / 3.5)
    assert not pointing_game_hit(outside, mask)
    # a boolean mask, a PIL mask and a mask with values just under the threshold
    assert cam_mass_in_mask(uniform, mask >= 128) == pytest.approx(0.5)
    assert pointing_game_hit(inside, Image.fromarray(mask))
    assert cam_mass_in_mask(uniform, np.full((150, 200), 127, np.uint8)) == 0.0
    assert cam_mass_in_mask(np.zeros((32, 32)), mask) == 0.0
    # a flat map points nowhere: a miss, though pixel (0, 0), where argmax lands, lies inside the lesion
    assert not pointing_game_hit(np.zeros((32, 32)), mask) and not pointing_game_hit(uniform, mask)
