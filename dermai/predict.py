"""Predictor: one uploaded image → calibrated probabilities, malignancy score, triage tier and OOD verdict,
and on request a saliency overlay.

Everything that turns pixels into numbers is shared with evaluation — `resize_input` and
`dermai.inference.forward_pixels` (same preprocessing, precision and TTA) — so a prediction's tier means what
the validated operating points say it means.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image

from dermai.context import (
    PatientContext,
    age_band,
    context_probs,
    known_values,
    parse_context,
    usable_context,
    weighted_fields,
)
from dermai.inference import calibrated_probs, forward_pixels, malignant_probability, normalisation
from dermai.intake import MIN_SIDE, IntakeResult, read_image
from dermai.metrics import SUBGROUP_MIN_PER_CLASS, TIER_MEANINGS, assign_tier, wilson_interval
from dermai.ood import OODStats, ood_scores, pixel_verdict
from dermai.preprocess import meta_input_size, resize_input, to_image_orientation
from dermai.weights import LoadedWeights, WeightsError, load_weights, untrained_classifier, weak_validation

if TYPE_CHECKING:  # imported on first use: pytorch-grad-cam pulls in OpenCV and matplotlib
    from dermai.saliency import SaliencyExplainer

ImageInput = Image.Image | bytes | str | os.PathLike[str] | BinaryIO | IntakeResult
# the note of an image whose features lie beyond the OOD cut-off (the Predict page shows its own box instead)
OOD_NOTE = "the image does not look like the dermoscopy images this model was trained on; its scores are unreliable"
# beside the numbers of an ungradable image in every JSON record of a prediction (predict --json, the Predict
# page's JSON report): kept for the record, as the worklist CSV keeps them, but never to be read as a result
UNRELIABLE_NOTE = (
    "the image is ungradable: p_malignant and the probabilities are the model's output on an image it cannot "
    "read, unreliable and not a result"
)
TRAINED_ASPECT = 4 / 3  # HAM10000's 600×450 photos: the shape the model learned lesions in
ASPECT_NOTED = 2.0  # an image this many times longer (long side : short side) than that is said to be distorted
UNAVAILABLE_MEANING = (
    "No validated operating points are stored with these weights (run `python -m dermai calibrate`), so no "
    "triage tier can be given. The probabilities are shown for research use only."
)


@dataclass
class Prediction:
    """One image's result; `tier_sensitivity`/`tier_specificity` are the validation figures of the cut-off
    that defines the tier (for "routine", the refer cut-off it falls below)."""

    probabilities: dict[str, float]
    p_malignant: float
    tier: str
    tier_meaning: str
    tier_sensitivity: float | None
    tier_specificity: float | None
    ood: bool | None
    ood_score: float | None
    ood_threshold: float | None
    warnings: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0
    context: dict[str, Any] | None = None  # the patient context that entered the result, when any did
    p_malignant_image_only: float | None = None  # the image's own score, shown beside one with context
    # per field given: p_malignant with every field minus p_malignant without this one (what it added)
    context_effects: dict[str, float] | None = None
    tta: bool = False  # averaged over the 8 flips/rotations
    tta_validated: bool | None = None  # the TTA setting the tier's cut-offs were validated with (None: no cut-offs)
    # the refer/urgent thresholds on p_malignant that decided the tier (None: no cut-offs), and whether they are
    # the patient-context model's (context entered the score) rather than the image model's
    cut_offs: dict[str, float] | None = None
    cut_offs_with_context: bool = False
    # the validation split's malignant and benign counts behind tier_sensitivity/specificity (None: weights
    # calibrated before the counts were recorded)
    tier_counts: dict[str, int] | None = None
    # False for weakly validated weights (`weak_weights_note`): their cut-offs' figures are no validation
    tier_reliable: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON record, plus `unreliable`: why its scores are no result (`UNRELIABLE_NOTE`) for
        an ungradable image, else None, so that a program or a filed record does not take its numbers at face
        value."""
        return {**asdict(self), "unreliable": UNRELIABLE_NOTE if self.ungradable else None}

    @property
    def ungradable(self) -> bool:
        """Whether the model cannot read the image: its score and probabilities are then no result, and the
        page and report show them as unreliable, never as a low score (0.000 reads as reassurance)."""
        return self.tier == "ungradable"

    @property
    def top_diagnosis(self) -> str:
        """The diagnosis shown first (highest probability; the first of a tie), as the CLI and worklist do."""
        return max(self.probabilities, key=self.probabilities.__getitem__)


@dataclass
class SaliencyResult:
    """A CAM heatmap at the model's input size, in the image's orientation, and its overlay on the original (oriented)
    image."""

    heatmap: np.ndarray  # (S, S) float32 in [0, 1]
    overlay: np.ndarray  # (H, W, 3) uint8
    method: str
    target: int | str | None  # None: the predicted class


def validated_tta(meta: Mapping[str, Any]) -> bool:
    """Whether the weights' cut-offs (tiers) were fitted on test-time-augmented scores: `serving.tta` as
    `dermai.serving` records it (`calibrate --tta`, ensembles), else `tta_recommended` (scripts/ship_default.py),
    else False. A tier's validated sensitivity and specificity hold only for scores made the same way, so this
    is the TTA setting predict and evaluate use unless told otherwise."""
    serving = meta.get("serving")
    if isinstance(serving, Mapping) and isinstance(serving.get("tta"), bool):
        return serving["tta"]
    recommended = meta.get("tta_recommended")
    return recommended if isinstance(recommended, bool) else False


def on_off(flag: bool) -> str:
    return "on" if flag else "off"


def tta_mismatch(meta: Mapping[str, Any], used: bool | None) -> str | None:
    """The caution for scores made with another TTA setting than the weights' cut-offs were validated with;
    None when they match, when no setting was chosen (`used` None: the validated one) or there are no cut-offs."""
    validated = validated_tta(meta)
    if used is None or bool(used) == validated or not meta.get("operating_points"):
        return None
    return (
        f"test-time augmentation is {on_off(bool(used))}, but these weights' tier cut-offs were validated with it "
        f"{on_off(validated)}: the tiers and their validated sensitivity and specificity describe the other setting"
    )


def weak_weights_note(meta: Mapping[str, Any]) -> str | None:
    """The caveat every prediction of weakly validated weights carries (`weights.weak_validation`), or None:
    the report, JSON and worklist CSV are what gets filed, so the caveat must travel with the result, not
    only sit in a banner on the page."""
    weak = weak_validation(dict(meta))
    return None if weak is None else f"these weights are not validated well enough for triage: {weak}"


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def point_counts(point: Mapping[str, Any]) -> dict[str, int] | None:
    """The malignant and benign validation counts an operating point's figures rest on
    (`metrics.choose_operating_points`), or None for weights calibrated before they were recorded (or a
    hand-edited JSON whose counts are not positive whole numbers)."""
    counts = {"malignant": point.get("n_malignant"), "benign": point.get("n_benign")}
    if all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts.values()):
        return {name: int(n) for name, n in counts.items()}
    return None


def _rate_with_interval(name: str, rate: float, n: int, of: str) -> str:
    k = round(rate * n)
    low, high = wilson_interval(k, n)
    return f"{name} {rate:.2f} (95% CI {low:.2f}–{high:.2f}; {k} of {n} {of})"


def validation_figures(sensitivity: float, specificity: float, counts: Mapping[str, int] | None) -> str:
    """A cut-off's validation sensitivity and specificity as the Predict page, Home and the HTML report all
    print them: with their Wilson 95% intervals and the counts they rest on, since 0.95 of 21 malignant
    lesions is far less sure than 0.95 of 300; without counts (older weights), the bare figures and why no
    interval is given."""
    if not counts:
        return (
            f"sensitivity {sensitivity:.2f}, specificity {specificity:.2f} (no interval: these weights do not "
            "record how many validation images the figures rest on)"
        )
    return (
        f"{_rate_with_interval('sensitivity', sensitivity, counts['malignant'], 'malignant')}, "
        f"{_rate_with_interval('specificity', specificity, counts['benign'], 'benign')}"
    )


def cut_off_validation(prediction: Prediction) -> str | None:
    """The line under a tier, on the Predict page and in the report, saying how its cut-off did on validation,
    with intervals and counts where the weights record them (`validation_figures`); None without figures. For
    weakly validated weights (`Prediction.tier_reliable`: a quick run's) it must not say "validated": their
    banner and caveat say those figures are not reliable, and a reader takes the line beside the tier first."""
    p = prediction
    if p.tier_sensitivity is None or p.tier_specificity is None:
        return None
    figures = validation_figures(p.tier_sensitivity, p.tier_specificity, p.tier_counts)
    if not p.tier_reliable:
        return f"Cut-off set at {figures} on the validation split; not reliable for these weights."
    return f"Cut-off validated at {figures} on the validation split."


SUBGROUP_FIELD_NAMES = {"sex": "sex", "age": "age", "site": "body site"}


def subgroup_notes(meta: Mapping[str, Any], context: PatientContext | None) -> list[str]:
    """A caution for each given age, sex or body site whose group the model ranked clearly worse on its test
    split (AUROC below the lower end of the overall 95% interval), and for each whose group it could not be
    scored on there (too few malignant or benign images, or none at all: `unvalidated_note`), from the
    subgroup figures the weights record; none when they record none. The score stays the model's: the note
    says how far to trust it."""
    test = meta.get("test_metrics") if isinstance(meta.get("test_metrics"), Mapping) else {}
    rows, interval, overall = test.get("subgroups"), test.get("auroc_ci"), test.get("auroc")
    if context is None or not isinstance(rows, list) or not isinstance(interval, list) or overall is None:
        return []
    given = {"sex": context.sex, "site": context.site, "age": None if context.age is None else age_band(context.age)}
    rows = [row for row in rows if isinstance(row, Mapping)]
    notes = []
    for name in ("sex", "site", "age"):  # the order evaluation records them in
        if given[name] is None or not any(row.get("field") == name for row in rows):
            continue  # not given, or the report scored no group of this field
        row = next((r for r in rows if r.get("field") == name and r.get("group") == given[name]), None)
        label = f"{SUBGROUP_FIELD_NAMES[name]} {given[name]}"
        auroc = None if row is None else row.get("auroc")
        if not isinstance(auroc, float | int):
            notes.append(unvalidated_note(label, row))
        elif auroc < interval[0]:
            notes.append(
                f"{label}: on its test split this model ranked such lesions worse (AUROC {auroc:.3f} over "
                f"{row.get('n', '?')} images) than overall ({overall:.3f}); weigh its score and tier with that in mind"
            )
    return notes


def unvalidated_note(label: str, row: Mapping[str, Any] | None) -> str:
    """Why a given group's performance was never checked: its test split had no such images (`row` None), or
    too few malignant or benign ones to score (`metrics.SUBGROUP_MIN_PER_CLASS`). Said as loudly as a group
    scored worse: a context that moves the score into a group nobody validated is no safer than a known-bad one."""
    if row is None:
        why = "its test split had no such images"
    else:
        n, malignant = row.get("n", "?"), row.get("n_malignant", "?")
        why = (
            f"its test split had only {n} such images, {malignant} of them malignant: too few to score "
            f"(fewer than {SUBGROUP_MIN_PER_CLASS} malignant or benign)"
        )
    return (
        f"{label}: this model's performance for this group was not validated ({why}); weigh its score and tier "
        "with that in mind"
    )


def aspect_note(size: tuple[int, int]) -> str | None:
    """The caution for an image (width, height) whose long side is more than ASPECT_NOTED times longer, relative
    to its short side, than the training photos' 4:3: squashed into the model's input, its lesion has a shape
    the model never saw (a 5:1 strip of a real lesion scored 0.75 where its whole photo scored 0.49), and nothing
    else says so. None for an ordinary photo (a phone's 16:9, a 2:1 crop) and for one too small to grade."""
    ratio = max(size) / max(1, min(size))
    if ratio <= TRAINED_ASPECT * ASPECT_NOTED or min(size) < MIN_SIDE:
        return None
    return (
        f"the image is {ratio:.1f}:1, far from the 4:3 of the dermoscopy photos the model learned from: squashed "
        "into its input, the lesion's shape is distorted and the score is less reliable; crop around the lesion "
        "nearer 4:3"
    )


class Predictor:
    """A loaded model with its serving metadata; reuse one instance (CAM objects are cached per method).

    Safe to share between threads (e.g. Streamlit sessions): model calls are serialised, because a forward
    pass running while a CAM's hooks are attached would be recorded into that CAM.
    """

    def __init__(self, loaded: LoadedWeights) -> None:
        meta = loaded.meta
        self.model = loaded.model.eval()
        self.path = loaded.path
        self.classes = list(meta["classes"])
        self.input_size = meta_input_size(meta)  # a square size, or (height, width)
        self.mean, self.std = normalisation(meta)
        self.temperature = float(meta.get("temperature") or 1.0)
        self.log_prior = meta.get("log_prior")  # training prior, for models trained on balanced batches
        self.operating_points = meta.get("operating_points") or None
        self.meta = meta
        self.context_model = meta.get("context") or None
        self.tta_validated = validated_tta(meta)  # the TTA setting `predict` uses unless told otherwise
        self.weak_note = weak_weights_note(meta)  # first among every prediction's warnings, when any
        self.ood_stats = OODStats.from_weights(loaded.extra, meta)
        self._explainers: dict[str, SaliencyExplainer] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_weights(cls, path: str | os.PathLike[str] | None = None) -> Predictor:
        """Load with safetensors (never torch.load); default: the shipped weights/model.safetensors. Weights
        whose classifier never learned (a pretraining run) are refused: their probabilities mean nothing."""
        loaded = load_weights(path)
        untrained = untrained_classifier(loaded.meta)
        if untrained:
            raise WeightsError(f"{loaded.path}: {untrained}; predict with a fine-tuned model")
        return cls(loaded)

    def read(self, image: ImageInput, name: str | None = None) -> IntakeResult:
        """Intake once, to pass the result to both `predict` and `explain`; errors name the file as `name`
        (default: a path as given, else "image")."""
        if isinstance(image, IntakeResult):
            return image
        if name is None:
            name = str(image) if isinstance(image, str | os.PathLike) else "image"
        return read_image(image, name)

    @property
    def context_fields(self) -> list[str]:
        """The context fields this model uses (a table and a weight above 0); [] without a context model."""
        return weighted_fields(self.meta)

    @property
    def context_sites(self) -> list[str]:
        """The body sites the context model knows ([] without a context model)."""
        return known_values(self.meta, "site")

    def parse_context(self, age: Any = None, sex: Any = None, site: Any = None) -> PatientContext | None:
        """Checked patient context from user input, or None when nothing was given; raises ContextError
        naming a bad field (a site is checked against the model's sites when it has a context model)."""
        context = parse_context(age, sex, site, sites=self.context_sites if self.context_model else None)
        return None if context.is_empty() else context

    def predict(self, image: ImageInput, tta: bool | None = None, context: PatientContext | None = None) -> Prediction:
        """Calibrated probabilities, p_malignant, tier and OOD verdict; `tta` averages logits over the 8
        flips/rotations (None: as the tiers were validated, `validated_tta`); `context` (age, sex, site) adds its
        evidence when the weights carry a context model (`dermai.context`), with the tiers validated for it.
        Raises IntakeError for unusable images."""
        start = time.perf_counter()
        tta = self.tta_validated if tta is None else bool(tta)
        intake = self.read(image)
        pixels = resize_input(intake.image, self.input_size)
        with self._lock:
            logits, features = forward_pixels(
                self.model, pixels[None], mean=self.mean, std=self.std, with_features=True, tta=tta
            )
        probs = calibrated_probs(logits, {"temperature": self.temperature, "log_prior": self.log_prior})
        p_mal = float(malignant_probability(probs, self.classes)[0])
        notes = [self.weak_note] if self.weak_note else []
        distorted = aspect_note(intake.image.size)
        notes += list(intake.warnings) + ([distorted] if distorted else []) + subgroup_notes(self.meta, context)
        points, used, image_only, effects = self.operating_points, None, None, None
        if context is not None and not self.context_model and not context.is_empty():
            notes.append("these weights carry no patient-context model: the age, sex and site were not used")
        elif context is not None and self.context_model:
            context, left_out = usable_context(self.meta, context)
            notes += left_out
            if not context.is_empty():
                image_only, used = p_mal, context.given()
                others = [context.without([name]) for name in used]
                all_probs, _ = context_probs(logits.repeat(1 + len(others), axis=0), self.meta, [context, *others])
                p_all = malignant_probability(all_probs, self.classes)
                probs, p_mal = all_probs[:1], float(p_all[0])
                effects = {name: p_mal - float(p) for name, p in zip(used, p_all[1:], strict=True)}
                points = self.context_model.get("operating_points") or points
        verdict = pixel_verdict(pixels)
        stats = self.ood_stats
        score = None if stats is None else float(ood_scores(features, stats)[0])
        ood = True if verdict else (None if stats is None or score is None else score > stats.threshold)
        if verdict == "blank":
            notes.append("the image is a single flat colour: there is nothing to assess")
        elif verdict == "noise":
            notes.append(
                "the image has no photograph's smooth structure (noise, text or a fine pattern): there is nothing "
                "to assess"
            )
        elif verdict == "colourless":
            notes.append(
                "the image has no colour (greyscale): the model reads the lesion's colours and was trained on colour "
                "dermoscopy only, so it cannot grade this image; use the original colour photo"
            )
        elif ood:
            notes.append(OOD_NOTE)
        # An image the model cannot read must not come out "routine", which reads as reassurance.
        ungradable = bool(ood) or min(intake.image.size) < MIN_SIDE
        tier, meaning, sens, spec, counts = self._tier(p_mal, points, ungradable)
        return Prediction(
            probabilities={c: float(p) for c, p in zip(self.classes, probs[0], strict=True)},
            p_malignant=p_mal,
            tier=tier,
            tier_meaning=meaning,
            tier_sensitivity=sens,
            tier_specificity=spec,
            ood=ood,
            ood_score=score,
            ood_threshold=None if stats is None else float(stats.threshold),
            warnings=notes,
            elapsed_ms=(time.perf_counter() - start) * 1000.0,
            context=used,
            p_malignant_image_only=image_only,
            context_effects=effects,
            tta=tta,
            tta_validated=self.tta_validated if points else None,
            cut_offs={t: float(points[t]["threshold"]) for t in ("refer", "urgent") if t in points} if points else None,
            cut_offs_with_context=points is not self.operating_points,
            tier_counts=counts,
            tier_reliable=self.weak_note is None,
        )

    def _tier(
        self, p_malignant: float, points: dict[str, Any] | None, ungradable: bool = False
    ) -> tuple[str, str, float | None, float | None, dict[str, int] | None]:
        """(tier, its meaning, the validation sensitivity and specificity of the cut-off behind it, and the
        counts they rest on)."""
        if not points:
            return "unavailable", UNAVAILABLE_MEANING, None, None, None
        if ungradable:
            return "ungradable", TIER_MEANINGS["ungradable"], None, None, None
        tier = assign_tier(p_malignant, points)
        point = points["urgent" if tier == "urgent" else "refer"]
        sensitivity, specificity = point.get("sensitivity"), point.get("specificity")
        figures = _optional_float(sensitivity), _optional_float(specificity)
        return tier, TIER_MEANINGS[tier], *figures, point_counts(point)

    def explainer(self, method: str = "gradcam") -> SaliencyExplainer:
        """The cached CAM explainer for a method (built on first use)."""
        from dermai.saliency import SaliencyExplainer

        if method not in self._explainers:
            self._explainers[method] = SaliencyExplainer(
                self.model,
                method,
                classes=self.classes,
                temperature=self.temperature,
                log_prior=self.log_prior,
                mean=self.mean,
                std=self.std,
            )
        return self._explainers[method]

    def explain(
        self,
        image: ImageInput,
        method: str = "gradcam",
        target: int | str | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        shown: Prediction | None = None,
    ) -> SaliencyResult:
        """CAM heatmap (input size) and overlay (original size); target: None = predicted class, a class
        index or name, or "malignant".

        The predicted class is the calibrated top class of this single view; pass the image's `predict`
        result as `shown` to explain its `top_diagnosis` instead, which TTA or patient context can change."""
        from dermai.saliency import overlay

        if target is None and shown is not None:
            target = shown.top_diagnosis
        intake = self.read(image)
        pixels = resize_input(intake.image, self.input_size)
        with self._lock:
            explainer = self.explainer(method)
            heatmap = explainer.heatmap(pixels, target, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
        heatmap = to_image_orientation(heatmap, *intake.image.size)  # a portrait image's map, turned back
        return SaliencyResult(heatmap, overlay(np.asarray(intake.image), heatmap), method, target)
