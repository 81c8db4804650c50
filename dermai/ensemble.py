"""Ensembles: several fine-tuned models served as one, their logits averaged.

Networks trained apart make partly independent errors, so the mean of their logits ranks images better and is
better calibrated than a single member (Lakshminarayanan et al. 2017). `EnsembleModel` offers the interface the
rest of the core uses for one model, so inference, calibration, the OOD gate, Grad-CAM and evaluation take it
unchanged:

- `features(x)`: the members' 512-d trunk features, concatenated (the OOD gate measures distances there);
- `classifier(features)`: each member's head on its own slice of those features, logits averaged;
- `forward(x)`: the averaged logits;
- `cam_layers`: every member's last block (pytorch-grad-cam averages their maps).

Members may take different input sizes (say one fine-tuned at 96 px and one at 128 px): the ensemble takes
the largest, and each smaller member sees that input resized to its own size with antialiasing, as its
training pipeline resized images. The JSON's `image_size` is then the largest, and `model.member_image_sizes`
lists each member's. A member may also be served at a size other than its training size (`image_sizes` of
`build_ensemble`, `--image-sizes` of `python -m dermai ensemble`); its entry then keeps `trained_image_size`.
A member trained at a non-square frame (`--image-width`) has the size [height, width]; the ensemble's input is
then the largest height by the largest width (`image_size`, `image_width`), and a square member sees it
squashed to its square, as it was trained.

An ensemble serves; it never trains, so its members keep no SimCLR projection heads. Members must have been
trained on the same split (same manifest checksum): a member that saw another's validation or test images
would leak them into every figure measured on the ensemble.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dermai.model import SimCLRResNet18
from dermai.preprocess import InputSize, input_frame, meta_input_size, size_label

# Fields every member must share: they decide what an input means and which images are held out.
SHARED_FIELDS = ("classes", "mode", "mean", "std", "manifest_sha256")
# Fields fitted for one model on validation; they do not carry over to the ensemble and are refitted.
PER_MODEL_FIELDS = (
    "format",
    "temperature",
    "operating_points",
    "ood",
    "serving",
    "val_metrics",
    "test_metrics",
    "test_operating_points",
    "tta_effect",
    "tta_recommended",
    "ood_acceptance",
    "history",
    "not_shipped",
    "recipe",
    "ensemble",
    "context",
)


class EnsembleError(ValueError):
    """Members that cannot be combined; the message names the file and the field."""


class EnsembleModel(nn.Module):
    """Two or more `SimCLRResNet18` members with the same classes, served as one model (mean logits).

    `image_sizes` holds each member's input size, a square's side or (height, width) (None: all take the
    input as it comes)."""

    def __init__(self, members: Sequence[SimCLRResNet18], image_sizes: Sequence[InputSize] | None = None) -> None:
        super().__init__()
        if len(members) < 2:
            raise EnsembleError(f"an ensemble needs at least two members, got {len(members)}")
        if image_sizes is not None and len(image_sizes) != len(members):
            raise EnsembleError(f"{len(image_sizes)} image sizes given for {len(members)} members")
        if len({m.num_classes for m in members}) != 1:
            raise EnsembleError(f"members predict different numbers of classes: {[m.num_classes for m in members]}")
        for member in members:
            member.projection = nn.Identity()  # unused when serving; dropping it keeps the file small
        self.members = nn.ModuleList(members)
        self.num_classes = members[0].num_classes
        self._feature_dims = [m.classifier.in_features for m in members]
        self.image_sizes = [as_input_size(s) for s in image_sizes] if image_sizes is not None else None

    def member_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input each member reads: `x` itself, or `x` resized (antialiased) to the member's own size. A
        portrait `x` (a quarter-turned test-time augmentation view) goes to the member's frame turned too."""
        if self.image_sizes is None:
            return [x] * len(self.members)
        portrait = x.shape[-2] > x.shape[-1]
        frames = [input_frame(size)[:: -1 if portrait else 1] for size in self.image_sizes]
        return [
            x
            if tuple(x.shape[-2:]) == frame
            else F.interpolate(x, size=frame, mode="bilinear", align_corners=False, antialias=True)
            for frame in frames
        ]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The members' trunk features side by side: (B, sum of feature dims)."""
        return torch.cat([m.features(xm) for m, xm in zip(self.members, self.member_inputs(x), strict=True)], dim=1)

    def classifier(self, features: torch.Tensor) -> torch.Tensor:
        """Mean of the members' logits, each head reading its own member's slice of `features`."""
        parts = features.split(self._feature_dims, dim=1)
        return torch.stack([m.classifier(p) for m, p in zip(self.members, parts, strict=True)]).mean(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    @property
    def cam_layers(self) -> list[nn.Module]:
        """Each member's last block: Grad-CAM averages the maps of all of them."""
        return [m.cam_layer for m in self.members]


def check_members(member_metas: Sequence[dict[str, Any]], member_paths: Sequence[str]) -> None:
    """Raise EnsembleError unless the models can be scored together: fine-tuned single models (not
    ensembles) with one split, class list and normalisation, each with a valid input size."""
    from dermai.weights import untrained_classifier  # weights.py imports this module, so import here

    first = member_metas[0]
    for field in SHARED_FIELDS:
        if field not in first:
            raise EnsembleError(f"{member_paths[0]}: its JSON has no {field!r}")
        for meta, path in zip(member_metas[1:], member_paths[1:], strict=True):
            if meta.get(field) != first[field]:
                raise EnsembleError(
                    f"{path}: {field} {_short(meta.get(field))} differs from {member_paths[0]}'s {_short(first[field])}"
                    + ("; members must be trained on the same split" if field == "manifest_sha256" else "")
                )
    for meta, path in zip(member_metas, member_paths, strict=True):
        if not is_image_size(meta.get("image_width", 1)):
            raise EnsembleError(f"{path}: its JSON has no valid 'image_width' ({_short(meta.get('image_width'))})")
        if meta.get("ensemble"):
            raise EnsembleError(f"{path}: is an ensemble already; list its members instead ({path}#1, {path}#2, …)")
        if "finetune" not in meta.get("stages", []):
            raise EnsembleError(
                f"{path}: not a fine-tuned model (stages {meta.get('stages')}); it has no trained classifier"
            )
        untrained = untrained_classifier(meta)
        if untrained:  # e.g. a run stopped while pretraining: its planned stages name finetune, yet its head is random
            raise EnsembleError(f"{path}: {untrained}; fine-tune it before combining")
    for meta, path in zip(member_metas, member_paths, strict=True):
        if not is_image_size(meta.get("image_size")):
            raise EnsembleError(f"{path}: its JSON has no valid 'image_size' ({_short(meta.get('image_size'))})")


def check_distinct_members(member_paths: Sequence[str]) -> None:
    """Raise EnsembleError naming a member given twice (as written, or another path to the same file): the
    ensemble would weigh that model double, or be one model presented as an ensemble. Checked where an ensemble
    is made (`combine`, `ensemble_meta`), not in `load_members`: scripts may score one member twice."""
    seen: dict[tuple[str, int | None], str] = {}
    for spec in member_paths:
        path, k = member_reference(spec)
        key = (os.path.realpath(path), k)
        if key in seen:
            also = "" if seen[key] == str(spec) else f" (also as {seen[key]})"
            raise EnsembleError(f"{spec}: given twice{also}; list each member once")
        seen[key] = str(spec)


def ensemble_meta(
    member_metas: Sequence[dict[str, Any]],
    member_paths: Sequence[str],
    command: str,
    image_sizes: Sequence[InputSize] | None = None,
) -> dict[str, Any]:
    """The ensemble's JSON: the members' shared fields, the first member's training config (for its split),
    and each member's provenance; per-model serving fields are left out for `fit_serving` to refit.

    `image_sizes` serves each member at a size of its own instead of the one it was trained at: a member
    trained on random crops has seen lesions larger than a whole image shows them, and may score better a
    little above its training size (Touvron et al. 2019, "Fixing the train-test resolution discrepancy").
    Choose them on validation. A size is a square's side or [height, width]."""
    check_distinct_members(member_paths)
    check_members(member_metas, member_paths)
    first = member_metas[0]
    trained_sizes = [as_input_size(meta_input_size(member)) for member in member_metas]
    sizes = list(trained_sizes) if image_sizes is None else list(image_sizes)
    if len(sizes) != len(member_metas):
        raise EnsembleError(f"{len(sizes)} input sizes given for {len(member_metas)} members; give one per member")
    for size in sizes:
        if not is_input_size(size):
            raise EnsembleError(
                f"input size {_short(size)} is not a positive whole number of pixels, nor [height, width] of them"
            )
    sizes = [as_input_size(size) for size in sizes]
    frames = [input_frame(size) for size in sizes]
    meta = {k: v for k, v in first.items() if k not in PER_MODEL_FIELDS and k != "image_width"}
    height, width = max(h for h, _ in frames), max(w for _, w in frames)
    meta["image_size"] = height
    if width != height:
        meta["image_width"] = width
    meta["model"] = {**first.get("model", {}), "members": len(member_metas), "init_checkpoint": None}
    if len(set(sizes)) > 1:
        meta["model"]["member_image_sizes"] = [json_size(size) for size in sizes]
    constancy = [bool((m.get("model") or {}).get("color_constancy")) for m in member_metas]
    if len(set(constancy)) > 1:  # each member keeps the colour constancy it was trained with
        meta["model"]["member_color_constancy"] = constancy
    meta["command"] = command
    meta["stages"] = ["finetune"]
    # a complete served model whatever its first member's run ended as: a "stopped" status copied from a member
    # (its val_metrics are refitted, so left out) would read as "stopped before fine-tuning" and be refused
    meta["status"] = "finished"
    meta["ensemble"] = [
        {
            "weights": str(path),
            "command": m.get("command"),
            "image_size": json_size(size),
            **({"trained_image_size": json_size(trained)} if trained != size else {}),
            "val_auroc": (m.get("val_metrics") or {}).get("val_auroc"),
        }
        for m, path, size, trained in zip(member_metas, member_paths, sizes, trained_sizes, strict=True)
    ]
    return meta


def is_image_size(value: Any) -> bool:
    """A JSON value that is a square input's side: a positive int (JSON's true/false are not sizes)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_input_size(value: Any) -> bool:
    """A JSON value that is an input size: a square's side, or [height, width] of positive ints."""
    return is_image_size(value) or (
        isinstance(value, list | tuple) and len(value) == 2 and all(is_image_size(v) for v in value)
    )


def as_input_size(value: Any) -> InputSize:
    """An input size in one form: an int for a square (also given as [s, s]), else (height, width)."""
    height, width = input_frame(value)
    return height if height == width else (height, width)


def json_size(size: InputSize) -> int | list[int]:
    """An input size as the JSON records it: an int, or [height, width]."""
    return size if isinstance(size, int) else [int(v) for v in size]


def image_sizes_arg(sizes: Sequence[InputSize]) -> str:
    """[96, (120, 160)] → '96,120x160': the `--image-sizes` text `parse_image_sizes` reads back."""
    return ",".join(size_label(size).replace("×", "x") for size in sizes)


def parse_image_sizes(text: str) -> list[InputSize]:
    """'96, 120' → [96, 120]; '96, 120x160' → [96, (120, 160)] (height × width): members' input sizes as a
    person types them (CLI and app)."""
    sizes: list[InputSize] = []
    for part in text.split(","):
        dims = re.split(r"\s*[x×]\s*", part.strip().lower())
        try:
            values = [int(v) for v in dims]
        except ValueError:
            raise EnsembleError(
                f"input sizes {text!r}: give whole numbers of pixels (or height x width) separated by commas"
            ) from None
        if len(values) > 2 or not all(is_image_size(v) for v in values):
            raise EnsembleError(f"input sizes {text!r}: each must be a positive number of pixels, or height x width")
        sizes.append(as_input_size(values[0] if len(values) == 1 else values))
    return sizes


def member_sizes(meta: dict[str, Any]) -> list[Any]:
    """The input size of each network in a weights file's JSON, in member order (a single model: one, as
    [height, width] when its JSON gives a width), as recorded (unchecked)."""
    recorded = (meta.get("model") or {}).get("member_image_sizes")
    if recorded:
        return recorded
    return [[meta.get("image_size"), meta["image_width"]] if "image_width" in meta else meta.get("image_size")]


def input_sizes(meta: dict[str, Any]) -> list[InputSize]:
    """The distinct input sizes of a weights file's network(s), smallest first ([] if the JSON has none): a
    square's side, or (height, width)."""
    valid = {as_input_size(s) for s in member_sizes(meta) if is_input_size(s)}
    return sorted(valid, key=lambda s: (input_frame(s)[0] * input_frame(s)[1], input_frame(s)))


def input_sizes_text(meta: dict[str, Any]) -> str:
    """The input size(s) for people: "96 px", "120×160 px" (height × width), or "96 and 128 px" for an
    ensemble of mixed members."""
    sizes = input_sizes(meta)
    return (" and ".join(size_label(s) for s in sizes) if sizes else "?") + " px"


def unpack_members(item: Any) -> list[Any]:
    """The networks inside loaded weights (`LoadedWeights`), each as a `LoadedWeights` of its own: a single
    model as it is; an ensemble's members in order, each with the ensemble's shared fields, its own training
    input size (the size it was served at is kept in `unpacked_from`), its colour constancy, and its
    provenance from the ensemble's record. Fields fitted for the ensemble as a whole (temperature,
    thresholds, OOD statistics) are left out, so a member scores uncalibrated.

    Why: a shipped ensemble is often all that is left of its members (run folders are not committed), and a
    new candidate member is judged beside them."""
    if not isinstance(item.model, EnsembleModel):
        return [item]
    fields = item.meta.get("model") or {}
    sizes = fields.get("member_image_sizes") or [json_size(meta_input_size(item.meta))] * len(item.model.members)
    records = item.meta.get("ensemble") or [{}] * len(item.model.members)
    # the ensemble's status is its own, not a member's (each was checked to be fine-tuned when it was built)
    shared = {k: v for k, v in item.meta.items() if k not in PER_MODEL_FIELDS and k not in ("image_width", "status")}
    base_fields = {
        k: v for k, v in fields.items() if k not in ("members", "member_image_sizes", "member_color_constancy")
    }
    unpacked = []
    for k, (network, size, record) in enumerate(zip(item.model.members, sizes, records, strict=True)):
        trained_height, trained_width = input_frame(record.get("trained_image_size", size))
        meta = {
            **shared,
            "image_size": trained_height,
            **({"image_width": trained_width} if trained_width != trained_height else {}),
            "model": {**base_fields, "color_constancy": bool(getattr(network, "color_constancy", False))},
            "command": record.get("command"),
            "unpacked_from": {
                "weights": str(item.path),
                "member": k + 1,
                "served_image_size": size,
                "weights_at_build": record.get("weights"),
            },
        }
        unpacked.append(type(item)(network, meta, {}, item.path))
    return unpacked


def member_reference(spec: str | os.PathLike[str]) -> tuple[Path, int | None]:
    """`FILE#K` → (FILE, K): member K (from 1) of the ensemble in FILE. Anything else, or a file whose name
    really ends in `#K`, is a whole weights file: (path, None)."""
    text = str(spec)
    match = re.fullmatch(r"(?P<path>.+)#(?P<k>\d+)", text)
    if match is None or Path(text).exists():
        return Path(text), None
    return Path(match["path"]), int(match["k"])


def load_members(member_paths: Sequence[str | os.PathLike[str]], unpack: bool = False) -> tuple[list[str], list[Any]]:
    """Member weights loaded (`LoadedWeights`) and checked to fit together (`check_members`), with a label
    for each. `FILE#K` names member K of the ensemble in FILE (see `unpack_members`); with `unpack`, a whole
    ensemble file stands for all its members, labelled `FILE#1`, `FILE#2`, …. Raises WeightsError or
    EnsembleError naming the file."""
    from dermai.weights import load_weights  # weights.py builds ensembles on load, so import here

    labels: list[str] = []
    loaded: list[Any] = []
    for spec in member_paths:
        path, k = member_reference(spec)
        item = load_weights(path)
        members = unpack_members(item) if unpack or k is not None else [item]
        if k is not None:
            if not 1 <= k <= len(members) or not isinstance(item.model, EnsembleModel):
                raise EnsembleError(f"{spec}: {path} holds no member {k} (it has {len(members)})")
            members = [members[k - 1]]
            labels.append(f"{path}#{k}")
        elif len(members) == 1:
            labels.append(str(path))
        else:
            labels += [f"{path}#{i}" for i in range(1, len(members) + 1)]
        loaded += members
    check_members([item.meta for item in loaded], labels)
    return labels, loaded


def combine(
    member_paths: Sequence[str | os.PathLike[str]], command: str, image_sizes: Sequence[InputSize] | None = None
) -> tuple[EnsembleModel, dict[str, Any]]:
    """Load members (weights files, or `FILE#K` for member K of an ensemble) and return the ensemble model
    and its metadata (nothing is written)."""
    check_distinct_members([str(spec) for spec in member_paths])  # before loading them, not after
    labels, loaded = load_members(member_paths)
    meta = ensemble_meta([item.meta for item in loaded], labels, command, image_sizes)
    return EnsembleModel([item.model for item in loaded], meta["model"].get("member_image_sizes")), meta


# What `write_ensemble` and `build_ensemble` write into their folder.
ENSEMBLE_FILES = ("model.safetensors", "model.json", "config.json", "metrics.jsonl")
# A training run's entries beside those (its checkpoints, its trainer's lock): an --out holding one is a run's.
RUN_ENTRIES = ("checkpoints", ".owner")


def check_new_out(out: Path) -> None:
    """Refuse an output folder named like a weights file (X/model.safetensors), or one that holds an ensemble or
    a training run, even one still in progress (its config, metrics, checkpoints or trainer's lock), naming what
    is there: writing would overwrite that run's files, and the clean-up after a failed fit would delete them.
    Any other file but a launcher's (the app's job log: `train.foreign_entry`) is refused too, as a training
    run's --out refuses it: the folder becomes a run, and deleting that run would take the file with it."""
    from dermai.train import foreign_entry  # train → ensemble: import here

    if out.suffix in (".safetensors", ".json"):  # it would become a folder of that name, holding model.safetensors
        raise EnsembleError(
            f"{out}: names a file, but the output is a folder (the ensemble's model.safetensors, model.json and "
            f"config.json are written into it); give the folder, such as {out.parent}"
        )
    for name in (*ENSEMBLE_FILES, *RUN_ENTRIES):
        if (out / name).exists():
            raise EnsembleError(f"{out / name}: exists already; choose another output folder (a new or empty one)")
    if (entry := foreign_entry(out)) is not None:
        raise EnsembleError(
            f"{entry}: exists already, and is not an ensemble's file; choose another output folder (a new or empty "
            "one): the ensemble becomes a run there, and deleting the run would delete it too"
        )


def remove_outputs(out: Path, made_folder: bool) -> None:
    """Undo a failed or cancelled write: the ensemble's files (`check_new_out` made sure none was there
    before, so all are this call's) and the folder, when this call made it and nothing else is in it."""
    for name in ENSEMBLE_FILES:
        (out / name).unlink(missing_ok=True)
    if made_folder:
        with contextlib.suppress(OSError):  # not empty: something else lives there now, keep it
            out.rmdir()


def write_ensemble(
    member_paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    command: str,
    image_sizes: Sequence[InputSize] | None = None,
) -> Path:
    """Combine members into `out_dir/model.safetensors` + `model.json`, with a `config.json` naming the
    command and members (what `scripts/ship_default.py` reads to record the recipe). Refuses a folder that
    holds an ensemble or a run (`check_new_out`); a write that fails removes what it wrote."""
    out = Path(out_dir)
    check_new_out(out)
    return _write_files(member_paths, out, command, image_sizes)


def _write_files(
    member_paths: Sequence[str | os.PathLike[str]], out: Path, command: str, image_sizes: Sequence[InputSize] | None
) -> Path:
    """`write_ensemble` once `out` is checked: a folder `build_ensemble` owns holds its own lock file, which
    `check_new_out` would take for a training run's."""
    from dermai.safe_write import make_folder, write_json_atomic
    from dermai.weights import save_weights

    model, meta = combine(member_paths, command, image_sizes)
    made_folder = not out.exists()
    make_folder(out)
    try:
        target = save_weights(model, out / "model.safetensors", meta)
        write_json_atomic(
            out / "config.json",
            {"command": command, "members": [str(p) for p in member_paths], "init_weights": None},
        )
    except BaseException:
        remove_outputs(out, made_folder)
        raise
    return target


def build_ensemble(
    member_paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    command: str,
    data_dir: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    tta: bool = False,
    image_sizes: Sequence[InputSize] | None = None,
) -> dict[str, Any]:
    """Write the ensemble and fit its serving (temperature, tiers, OOD gate) on validation, as one step: a
    fit that fails removes the files written here (and the folder, if made here and left empty), so no
    uncalibrated ensemble is left behind, and nothing that was there before is touched. The folder
    then reads like a finished run: metrics.jsonl holds a "serving" and a "status" record. Returns what
    `fit_serving` stored.

    The folder's owner lock (`train.run_lock`, a trainer's) is held throughout, wherever the command was
    started: while it scores images (minutes) the run reads as running, its half-made weights are not offered,
    and the app starts no job beside it nor deletes it."""
    from dermai.serving import fit_context_if_possible, fit_serving  # serving → weights → ensemble: import here
    from dermai.train import OWNER_FILE, run_lock  # train → ensemble: import here

    out = Path(out_dir)
    check_new_out(out)  # before taking the lock: a lock file found here is a training run's
    made_folder = not out.exists()
    with run_lock(out):
        try:
            target = _write_files(member_paths, out, command, image_sizes)
            fitted = fit_serving(target, data_dir, manifest=manifest, tta=tta)
            fitted["context"] = fit_context_if_possible(target, data_dir, manifest)
            _log_finished(out, target, fitted)
        except BaseException:
            # The lock file is this call's too (`check_new_out` found none): left, it would refuse a retry here.
            (out / OWNER_FILE).unlink(missing_ok=True)
            remove_outputs(out, made_folder)
            raise
    return fitted


def _log_finished(out: Path, target: Path, fitted: dict[str, Any]) -> None:
    """The "serving" and "status" records that make the folder read as a finished run; written inside
    `build_ensemble`'s cleanup, so a full disk or an interrupt here leaves no ensemble without them (which
    its --out would then refuse to a retry)."""
    from dermai.safe_write import append_json_lines

    serving = {"kind": "serving", "status": "fitted", "temperature": fitted["temperature"], **fitted["val_metrics"]}
    status = {"kind": "status", "status": "finished", "weights": str(target)}
    records = [
        {**serving, "context": fitted["context"]},
        {**status, "best_score": fitted["val_metrics"]["val_auroc"]},
    ]
    append_json_lines(out / "metrics.jsonl", [{"time": time.time(), **r} for r in records])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "…"
