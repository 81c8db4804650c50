"""The Weights lists and what they say about a model: the choices, cautions, the model card's figures and its
serving and patient-context summaries. The pages lay these out; the weights are read by dermai.weights.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dermai.context import weak_fit
from dermai.data import same_file
from dermai.ensemble import input_sizes_text
from dermai.jobs import runs_dir
from dermai.predict import point_counts, validation_figures
from dermai.run_status import is_running
from dermai.ui.formatting import is_number
from dermai.ui.sidebar_state import default_weights
from dermai.ui.training_form import TRAIN_FORM_LABELS
from dermai.weights import (
    DEFAULT_WEIGHTS,
    WeightsError,
    failed_calibration,
    read_meta,
    untrained_classifier,
    weak_validation,
)

SHIPPED_LABEL = "shipped model"  # weights/model.safetensors in the sidebar's Weights list


MetaReader = Callable[[str], dict[str, Any]]
"""Reads a weights file's JSON or raises WeightsError: `weights.read_meta`, or the pages' cached copy of it."""


def weight_choices(
    runs: str | os.PathLike[str] | None = None, current: str | None = None, read: MetaReader = read_meta
) -> dict[str, str]:
    """Weights file → label: the shipped weights, every run's model.safetensors below the runs folder, and the
    session's current choice, in that order. A run whose JSON cannot be read is listed as such (choosing it
    then shows why), and weights whose classifier never trained say so, so nobody predicts with them. A run
    still running is left out (unless it is the current choice, labelled "(running)"): its trainer saves the
    weights minutes before calibrating them, and an ensemble job its weights before fitting them. `read` reads
    each JSON: the pages pass their cache, so the sidebar and the Evaluation page's list read each run's once."""
    choices: dict[str, str] = {}
    shipped = DEFAULT_WEIGHTS
    # Short: the sidebar cut "shipped weights/model.safetensors" off; its help names the file.
    choices[str(shipped)] = SHIPPED_LABEL + ("" if shipped.exists() else " (missing)")
    root = runs_dir(runs)
    if root.is_dir():
        for path in sorted(root.rglob("model.safetensors")):
            where = path.parent.relative_to(root)
            if any(part.startswith(".") for part in where.parts):  # hidden: e.g. a run being deleted
                continue
            if not is_running(path.parent, root):
                choices[str(path)] = _run_label(str(where), path, read)
            elif str(path) == current:
                choices[str(path)] = f"{where} (running)"
    if current and current not in choices:
        choices[current] = f"{Path(current).parent.name}/{Path(current).name}"
        with contextlib.suppress(WeightsError):  # unreadable: the pages say why when it is used
            untrained = untrained_classifier(read(current))
            choices[current] += f" ({untrained})" if untrained else ""
    return choices


def same_split_choices(choices: Mapping[str, str], current: str, read: MetaReader = read_meta) -> dict[str, str]:
    """The `weight_choices` other than `current` that were trained on its split (the same manifest checksum),
    the only ones a paired comparison can score on the same images; weights whose split is unknown (an
    unreadable JSON, or none recorded) stay, and comparing them says why. `read` as for `weight_choices`."""
    try:
        mine = read(current).get("manifest_sha256")
    except WeightsError:
        mine = None
    out = {}
    for path, label in choices.items():
        if path == current:
            continue
        try:
            theirs = read(path).get("manifest_sha256")
        except WeightsError:
            theirs = None
        if mine is None or theirs is None or theirs == mine:
            out[path] = label
    return out


def compare_choices(
    choices: Mapping[str, str], current: str, split: str, read: MetaReader = read_meta
) -> dict[str, str]:
    """The weights Evaluation offers as B for Compare's `split`: on "all" (an external folder, scored less the
    images either model saw: `evaluate.unseen_rows`) every `weight_choices` but `current`, whatever its split;
    on val or test only those of `current`'s split (`same_split_choices`), whose held-out images are A's."""
    if split == "all":
        return {path: label for path, label in choices.items() if path != current}
    return same_split_choices(choices, current, read)


def no_comparison_hint(meta: Mapping[str, Any], split: str = "val") -> str:
    """What Evaluation says when `compare_choices` offers no B: on val or test, which run can be compared (the
    same data folder, Seed and Limit images, so the same manifest: `same_split_choices`), since "train a run"
    sent users to a Quick check, whose 300-image split never matches the shipped model's; on all (an external
    folder), where any split is offered, only that there are no other weights."""
    if split == "all":
        return (
            "No other weights to compare with: train a run on the Training page, or choose other weights in the "
            "sidebar."
        )
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    seed, limit = data.get("seed"), data.get("limit")
    if isinstance(seed, int) and (limit is None or isinstance(limit, int)):
        limited = f"Limit images {limit}" if limit else "Limit images 0 (every image)"
        needed = f"{TRAIN_FORM_LABELS['seed']} {seed} and {limited}"
    else:
        needed = f"the same {TRAIN_FORM_LABELS['seed']} and {TRAIN_FORM_LABELS['limit']} as these weights"
    return (
        "No other weights of this split to compare with. Only a run on the same split can be compared: one "
        f"trained on this data folder with {needed} (a Quick check, limited to 300 images, never is). Or choose "
        "other weights in the sidebar."
    )


def _run_label(name: str, path: Path, read: MetaReader = read_meta) -> str:
    """ "name (status)", "name (status, pretrain only — no trained classifier)" or "name (unreadable JSON)"."""
    try:
        meta = read(str(path))
    except WeightsError:
        return f"{name} (unreadable JSON)"
    status = str(meta.get("status", "?"))
    untrained = untrained_classifier(meta)
    return f"{name} ({status}, {untrained})" if untrained else f"{name} ({status})"


def untrained_advice(reason: str) -> str:
    """What to tell a clinician about weights whose classifier never trained (`untrained_classifier`)."""
    return (
        f"{reason[0].upper()}{reason[1:]}: its probabilities would mean nothing, so Predict refuses these weights."
        " Fine-tune them first: resume the run, or on the Training page start a run with stage finetune from"
        " them (“Start from a finished run”); or choose fine-tuned weights in the sidebar."
    )


def weights_cautions(meta: Mapping[str, Any]) -> list[str]:
    """The banners Home, Predict and Evaluation show above anything read from these weights: validated on too
    few images or no better than chance (`weights.weak_validation`), and a calibration that found no
    temperature (`weights.failed_calibration`); [] for weights validated and calibrated as they should be.
    One function, so that no page says less than another about the same weights."""
    cautions = []
    if weak := weak_validation(dict(meta)):
        cautions.append(
            f"**These weights are not validated well enough for triage:** {weak}. Choose other weights in the sidebar."
        )
    if failed := failed_calibration(dict(meta)):
        cautions.append(f"**Calibration failed:** {failed}.")
    return cautions


def tier_table_title(meta: Mapping[str, Any], tested: bool) -> str:
    """The heading of Home's tier table. Weakly validated weights' (`weights.weak_validation`: a quick run's) must
    not call their cut-offs validated: the banner just above says they are not reliable."""
    if weak_validation(dict(meta)):
        return "Triage tiers (cut-offs set on validation; not reliable for these weights)"
    if tested:
        return "Triage tiers (cut-offs set on validation, re-checked once on test)"
    return "Triage tiers (validated on the validation split)"


def unused_fields_text(unused: Mapping[str, str]) -> str:
    """The context fields a model does not ask for, each with its reason (`context.unused_fields`): "sex (its
    weight … is 0 …)" for one, not "sex (sex: …)", which named it twice; "sex, site (sex: …; site: …)" for more."""
    if len(unused) == 1:
        ((name, reason),) = unused.items()
        return f"{name} ({reason})"
    return f"{', '.join(unused)} ({'; '.join(f'{name}: {reason}' for name, reason in unused.items())})"


def default_model_label() -> str:
    """The default model in words, as the Training page names where “Use default model” goes: the
    shipped model, or the file $DERMAI_WEIGHTS names (which the sidebar's list no longer offers once another
    is chosen)."""
    default = default_weights()
    if same_file(default, DEFAULT_WEIGHTS):
        return f"the {SHIPPED_LABEL} (weights/model.safetensors)"
    return f"the default model ({default}, from DERMAI_WEIGHTS)"


def default_weights_note() -> str:
    """The confirmation after `USE_DEFAULT_WEIGHTS`."""
    return f"Predict, Evaluation and Home use {default_model_label()} again."


def model_card(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The figures the home page shows: AUROC (with interval and where it was measured), tier cut-offs with
    their validated sensitivity/specificity (and the test split's, `test_*`, where the weights record them, so
    the validation figures are not read as a promise), each tier's validation figures in Predict's words
    (`tier_validation`: with intervals and counts where recorded), training status, image size, and why the
    classifier is untrained (None when it is trained). A JSON block that is missing
    is left out; one of the wrong shape (hand-edited, another tool's) is left out too and named in
    `problems`, so the page says so in words instead of failing."""
    problems: list[str] = []
    auroc, ci, source = None, None, None
    for key, prefix in (("test_metrics", ""), ("val_metrics", "val_")):
        block = _block(meta, key, problems)
        name = f"{prefix}auroc" if f"{prefix}auroc" in block else "auroc"
        value = _number(block, name, f"{key}.{name}", problems)
        if value is not None:
            auroc, source = value, key.split("_")[0]
            interval = block.get(f"{name}_ci")
            if isinstance(interval, list) and len(interval) == 2 and all(is_number(v) for v in interval):
                ci = interval
            elif interval is not None:
                problems.append(f"field '{key}.{name}_ci' is not a pair of numbers: ignored")
            break
    tiers, validation = [], {}
    rechecked = _block(meta, "test_operating_points", problems)  # the same cut-offs, scored once on test
    for tier, point in _block(meta, "operating_points", problems).items():
        if not isinstance(point, dict):
            problems.append(f"field 'operating_points.{tier}' is not an object: ignored")
            continue
        figures = ("threshold", "sensitivity", "specificity")
        where = f"operating_points.{tier}"
        row = {"tier": tier, **{f: _number(point, f, f"{where}.{f}", problems) for f in figures}}
        if row["sensitivity"] is not None and row["specificity"] is not None:
            validation[tier] = validation_figures(row["sensitivity"], row["specificity"], point_counts(point))
        test = rechecked.get(tier)
        if isinstance(test, dict):
            for f in ("sensitivity", "specificity"):
                row[f"test_{f}"] = _number(test, f, f"test_operating_points.{tier}.{f}", problems)
        elif test is not None:
            problems.append(f"field 'test_operating_points.{tier}' is not an object: ignored")
        tiers.append(row)
    classes = meta.get("classes", [])
    if not isinstance(classes, list):
        problems.append("field 'classes' is not a list: ignored")
        classes = []
    fields = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    sizes = fields.get("member_image_sizes")
    shape = {k: meta[k] for k in ("image_size", "image_width") if k in meta} | {"model": {"member_image_sizes": sizes}}
    try:
        context = context_summary(meta)
    except ValueError as exc:
        problems.append(f"{exc}: the patient-context model is not described")
        context = None
    return {
        "auroc": auroc,
        "auroc_ci": ci,
        "auroc_split": source,
        "tiers": tiers,
        "tier_validation": validation,
        "classes": [str(c) for c in classes],
        "image_size": meta.get("image_size"),
        "input_sizes": input_sizes_text(shape if isinstance(sizes, list | None) else {}),
        "status": meta.get("status"),
        "temperature": meta.get("temperature") if is_number(meta.get("temperature")) else None,
        "ood": bool(meta.get("ood")),
        "context": context,
        "untrained": untrained_classifier(dict(meta)),
        "problems": problems,
    }


SERVING_FIGURES = (
    "val_auroc",
    "val_bacc",
    "temperature",
    "val_ece_malignant_uncalibrated",
    "val_ece_malignant",
    "n_val",
)


def serving_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The last calibration a run fitted on validation (its "serving" metrics record: the trainer's last step
    after fine-tuning, or an ensemble's), as {"status", "error", "complete", and SERVING_FIGURES}: these are
    the figures the weights are served with, whereas the per-epoch curves score the network alone. `complete`
    says every figure is a number (a record from an older version may lack some). None when the run fitted
    none (pretraining only, stopped, or still running)."""
    fitted = [r for r in records if r.get("kind") == "serving" and r.get("status") in ("fitted", "failed")]
    if not fitted:
        return None
    last = fitted[-1]
    figures = {k: last.get(k) for k in SERVING_FIGURES}
    complete = all(is_number(v) for v in figures.values())
    return {"status": last["status"], "error": last.get("error"), "complete": complete, **figures}


def context_summary(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The patient-context model in brief: each field's fitted weight, and its AUROC (test if scored, else
    validation; None when neither was recorded) beside the image-only one, and `unreliable` only for a fit on
    too few validation images (`context.weak_fit`); None without one. Raises ValueError naming the field when
    the block is of the wrong shape."""
    block = meta.get("context")
    if not block:
        return None
    fields = block.get("fields") if isinstance(block, dict) else None
    if not isinstance(fields, dict):
        raise ValueError("field 'context.fields' is missing or not an object")
    weights = {}
    for name, entry in fields.items():
        weight = entry.get("weight") if isinstance(entry, dict) else None
        if not is_number(weight):
            raise ValueError(f"field 'context.fields.{name}.weight' is missing or not a number")
        weights[name] = weight
    test_block = meta.get("test_metrics") if isinstance(meta.get("test_metrics"), dict) else {}
    test = test_block.get("context") if isinstance(test_block.get("context"), dict) else {}
    val = block.get("val_metrics") if isinstance(block.get("val_metrics"), dict) else {}
    if is_number(test.get("auroc")) and is_number(test_block.get("auroc")):
        auroc, image_only, split, n = test["auroc"], test_block["auroc"], "test", test.get("n_with_context")
    else:
        auroc, image_only, split = val.get("val_auroc"), val.get("val_auroc_image_only"), "val"
        n = val.get("n_val_with_context", val.get("n_val"))
    summary = {
        "weights": weights,
        "auroc": auroc if is_number(auroc) else None,
        "auroc_image_only": image_only if is_number(image_only) else None,
        "split": split,
        "n": n if is_number(n) else None,
    }
    if unreliable := weak_fit(meta):  # too few validation images: its AUROC is no result (`context_caption`)
        summary["unreliable"] = unreliable
    return summary


def context_caption(summary: Mapping[str, Any]) -> str:
    """Home's line on a patient-context model (`context_summary`): the fields it uses and its AUROC beside the
    image-only one. On validation those figures are in-sample (the field weights, temperature and cut-offs
    were fitted on the same images), so they are said to be optimistic rather than read as a result; on
    test they are the check. A fit on too few validation images (`context.weak_fit`) gets no figure at all."""

    def figure(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    used = ", ".join(f"{k} (weight {w:.2f})" for k, w in summary["weights"].items() if w > 0)
    offered = f"Optional patient context on the Predict page: {used or 'no field helped'}."
    if summary.get("unreliable"):  # a weak fit's AUROC would read as a result beside the image-only one
        return f"{offered} No AUROC is quoted for it: {summary['unreliable']}."
    text = (
        f"{offered} AUROC on the "
        f"{summary['split']} split {figure(summary['auroc_image_only'])} from the image alone, "
        f"{figure(summary['auroc'])} with the recorded context"
    )
    if summary["split"] != "val":
        return f"{text}."
    images = f"the same {summary['n']} validation images" if summary.get("n") else "the same validation images"
    return (
        f"{text}: fitted and measured on {images}, so optimistic (in-sample), not a check; `python -m dermai "
        "evaluate` scores it on the test split."
    )


def _block(meta: Mapping[str, Any], key: str, problems: list[str]) -> Mapping[str, Any]:
    """meta[key] when it is an object; {} when absent, and also when of another type (noted in `problems`)."""
    value = meta.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"field '{key}' is not an object: ignored")
        return {}
    return value


def _number(block: Mapping[str, Any], key: str, where: str, problems: list[str]) -> float | None:
    """block[key] when it is a number; None when absent, and also when not a number (noted in `problems`)."""
    value = block.get(key)
    if value is None or is_number(value):
        return value
    problems.append(f"field '{where}' is not a number: ignored")
    return None
