"""Class activation maps through pytorch-grad-cam, and the plausibility measures the evaluator reports.

The library's CAM objects register forward hooks on the target layer for their whole life, and every forward
pass through the model then appends to their activation lists — so constructing one per call leaks memory,
and keeping one around leaks it into every plain prediction. `SaliencyExplainer` therefore builds each CAM
object once and attaches its hooks only for the duration of one `explain` call. During that call the target
layer's output is cut from the graph above it: every gradient-based CAM needs gradients at that layer only,
so the backward pass runs through the pooling and classifier instead of the whole trunk (~4× faster on CPU).

The explainer carries the served calibration (temperature and training log prior, `calibrated_probs`): a model
trained on class-balanced batches has logits whose argmax is not the diagnosis the user is shown, so "the
predicted class" and "malignant" are both taken from softmax(logits / T + log prior), as served.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from dermai.config import IMAGENET_MEAN, IMAGENET_STD
from dermai.inference import malignant_probability
from dermai.preprocess import eval_batch

CAM_METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
}

# The overlay's colour map: viridis (dark purple low, bright yellow high), whose lightness rises with the score for
# every reader. JET's red peak, the usual Grad-CAM map, is about as dark as its low blue to a red-green
# colour-blind reader (one man in twelve), who could not tell where the model looked most.
OVERLAY_COLORMAP = cv2.COLORMAP_VIRIDIS
# The overlay's legend, one line under it on Predict and in the HTML report. Without it a bright patch reads as
# "the malignant part" of the lesion, which the map never says.
OVERLAY_LEGEND = (
    "Bright colours (yellow, green) mark the regions that most raised the explained score, dark ones (purple, "
    "blue) those that mattered least: the map shows where the model looked, not where the lesion is malignant."
)


def overlay_caption(method: str | None) -> str:
    """The overlay's caption, the same on Predict and in the HTML report (which said "…: where the model
    looked" where the page said nothing); what the map shows is `OVERLAY_LEGEND`'s, under it on both."""
    return f"{method or 'saliency'} overlay"


def served_logits(logits: torch.Tensor, temperature: float, log_prior: Sequence[float] | None) -> torch.Tensor:
    """logits / T + log prior: the scores whose softmax is what `dermai.inference.calibrated_probs` serves."""
    z = logits / temperature
    return z + torch.as_tensor(log_prior, dtype=z.dtype, device=z.device) if log_prior else z


def served_top_class(logits: torch.Tensor, temperature: float, log_prior: Sequence[float] | None) -> int:
    """The class shown as the top diagnosis for one image's logits (K,) or (1, K): the served argmax, which
    the raw logits' argmax (pytorch-grad-cam's default target) misses when the log prior is not flat."""
    return int(served_logits(logits.detach().float().reshape(-1), temperature, log_prior).argmax())


class MalignantTarget:
    """CAM target: the served p_malignant, the summed calibrated probability of the malignant classes (mel, bcc,
    akiec, or 'malignant') — with the log prior, so its gradient is that of the score the tiers are cut on."""

    def __init__(
        self, classes: Sequence[str], temperature: float = 1.0, log_prior: Sequence[float] | None = None
    ) -> None:
        # malignant_probability of the identity matrix marks the malignant columns: one definition for both.
        columns = np.flatnonzero(malignant_probability(np.eye(len(classes)), classes))
        if columns.size == 0:
            raise ValueError(f"no malignant class among {list(classes)}")
        if log_prior and len(log_prior) != len(classes):
            raise ValueError(f"log prior has {len(log_prior)} entries for {len(classes)} classes")
        self.columns = torch.as_tensor(columns)
        self.temperature = temperature
        self.log_prior = list(log_prior) if log_prior else None

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(served_logits(model_output, self.temperature, self.log_prior), dim=-1)
        return probs.index_select(-1, self.columns.to(probs.device)).sum(dim=-1)


def _cut_graph(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    """Forward hook: the layer's output as a fresh leaf that requires grad, so backward stops here."""
    return output.detach().requires_grad_(True)


class SaliencyExplainer:
    """One CAM method on one model, built once and reused for every `explain` call."""

    def __init__(
        self,
        model: nn.Module,
        method: str = "gradcam",
        target_layer: nn.Module | None = None,
        classes: Sequence[str] | None = None,
        temperature: float = 1.0,
        log_prior: Sequence[float] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if method not in CAM_METHODS:
            raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")
        self.model = model
        self.method = method
        self.classes = list(classes) if classes is not None else None
        self.temperature = temperature
        self.log_prior = list(log_prior) if log_prior else None  # the served calibration, see module docstring
        self.mean, self.std = tuple(mean), tuple(std)
        layers = [target_layer] if target_layer is not None else list(model.cam_layers)
        self.cam = CAM_METHODS[method](model=model, target_layers=layers)
        self.cam.activations_and_grads.release()  # hooks are attached per call, see module docstring
        if method == "scorecam":
            self.cam.batch_size = 64  # the library's default of 16 means 32 small forward passes per call

    def _target(self, target: int | str, classes: Sequence[str] | None) -> MalignantTarget | ClassifierOutputTarget:
        if isinstance(target, str):
            if classes is None:
                raise ValueError(f"target {target!r} needs the class names")
            if target == "malignant":
                return MalignantTarget(classes, self.temperature, self.log_prior)
            if target not in classes:
                raise ValueError(f"unknown target {target!r}; choose from {list(classes)} or 'malignant'")
            return ClassifierOutputTarget(list(classes).index(target))
        return ClassifierOutputTarget(int(target))

    def predicted_class(self, input_tensor: torch.Tensor) -> int:
        """The served top class of one image (model in eval mode), fixed before the CAM runs: left to the
        library, it would be the raw argmax, and re-chosen per augmented view under `aug_smooth`."""
        with torch.no_grad(), torch.autocast(input_tensor.device.type, enabled=False):
            logits = self.model(input_tensor.float())
        return served_top_class(logits, self.temperature, self.log_prior)

    @contextlib.contextmanager
    def _hooked(self) -> Iterator[None]:
        """Attach the graph cut and the CAM's recording hooks (in that order) for one call, then clean up."""
        recorder = self.cam.activations_and_grads
        handles = []
        for layer in self.cam.target_layers:
            handles.append(layer.register_forward_hook(_cut_graph))
            handles.append(layer.register_forward_hook(recorder.save_activation))
            handles.append(layer.register_forward_hook(recorder.save_gradient))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            recorder.clear()
            self.cam.outputs = None  # holds the last graph (backward ran with retain_graph=True)
            self.model.zero_grad(set_to_none=True)

    def explain(
        self,
        input_tensor: torch.Tensor,
        target: int | str | None = None,
        classes: Sequence[str] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """Heatmap (S, S) float32 in [0, 1] for one preprocessed image (1, 3, S, S), in fp32.

        `target`: None = the predicted class (the served top class, see `predicted_class`), a class index or
        name, or "malignant" (the served p_malignant); names need `classes` (here or at construction).
        """
        if input_tensor.ndim != 4 or input_tensor.shape[0] != 1:
            raise ValueError(f"expected one image shaped (1, 3, S, S), got {tuple(input_tensor.shape)}")
        classes = classes if classes is not None else self.classes
        was_training = self.model.training
        self.model.eval()
        # ScoreCAM writes tqdm progress bars to stderr; they would garble the CLI's output.
        quiet = contextlib.redirect_stderr(io.StringIO()) if self.method == "scorecam" else contextlib.nullcontext()
        try:
            chosen = self._target(self.predicted_class(input_tensor) if target is None else target, classes)
            with self._hooked(), torch.enable_grad(), torch.autocast(input_tensor.device.type, enabled=False), quiet:
                heatmap = self.cam(
                    input_tensor.float(),
                    targets=[chosen],
                    aug_smooth=aug_smooth,
                    eigen_smooth=eigen_smooth,
                )[0]
        finally:
            self.model.train(was_training)
        return np.clip(np.nan_to_num(heatmap.astype(np.float32)), 0.0, 1.0)

    def heatmap(
        self, pixels: np.ndarray, target: int | str | None = None, aug_smooth: bool = False, eigen_smooth: bool = False
    ) -> np.ndarray:
        """`explain` for uint8 pixels (S, S, 3) as made by `dermai.preprocess.resize_input`."""
        x = eval_batch(np.asarray(pixels, dtype=np.uint8), self.mean, self.std)
        device = next(self.model.parameters()).device
        return self.explain(x.to(device), target, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)


def overlay(
    image_rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: int = OVERLAY_COLORMAP
) -> np.ndarray:
    """The heatmap, resized to the original image and coloured, blended over it: uint8 (H, W, 3)."""
    image = np.asarray(image_rgb, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image shaped (H, W, 3), got {image.shape}")
    h, w = image.shape[:2]
    resized = cv2.resize(np.asarray(heatmap, dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    coloured = cv2.applyColorMap(np.uint8(np.clip(resized, 0, 1) * 255), colormap)
    coloured = cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * coloured.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _mask_like(heatmap: np.ndarray, mask: np.ndarray | Image.Image) -> np.ndarray:
    """A lesion mask (boolean, or 0-255 with >= 128 = lesion) as a boolean array at the heatmap's size."""
    pixels = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask)
    if pixels.ndim == 3:
        pixels = pixels[..., 0]
    binary = pixels if pixels.dtype == bool else pixels >= 128
    h, w = np.asarray(heatmap).shape[:2]
    return cv2.resize(binary.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def cam_mass_in_mask(heatmap: np.ndarray, mask: np.ndarray | Image.Image) -> float:
    """Share of the heatmap's total mass inside the lesion mask (0 for an all-zero heatmap)."""
    cam = np.clip(np.asarray(heatmap, dtype=np.float64), 0, None)
    total = cam.sum()
    return float(cam[_mask_like(cam, mask)].sum() / total) if total > 0 else 0.0


def pointing_game_hit(heatmap: np.ndarray, mask: np.ndarray | Image.Image) -> bool:
    """True when the heatmap's peak falls inside the lesion mask (Zhang et al. 2018's pointing game). A flat
    heatmap (all zero: the CAM found nothing) has no peak and points nowhere, so it is a miss, not whatever
    pixel (0, 0) happens to be."""
    cam = np.asarray(heatmap)
    if cam.size == 0 or np.ptp(cam) == 0:
        return False
    return bool(_mask_like(cam, mask).flat[int(np.argmax(cam))])
