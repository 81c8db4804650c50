"""A save's two files (tensors, JSON) carry one pair id, so a save interrupted between its two renames (new
tensors beside the old JSON: old classes, temperature, thresholds, OOD statistics) is refused on load instead
of being served; files from before pair ids, and JSON-only rewrites, keep loading."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dermai import weights as weights_module
from dermai.model import SimCLRResNet18
from dermai.safe_write import write_json_atomic
from dermai.weights import FORMAT, PAIR_ID, WeightsError, load_weights, save_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def tiny_meta(**changes: object) -> dict:
    return {"classes": CLASSES, "image_size": 32, "temperature": 1.0, **changes}


def header_id(path: Path) -> str | None:
    with safe_open(str(path), "pt") as handle:
        return (handle.metadata() or {}).get(PAIR_ID)


def json_of(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_weights(SimCLRResNet18(len(CLASSES)), tmp_path_factory.mktemp("a") / "model.safetensors", tiny_meta())


def copy_pair(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        shutil.copy(source.with_suffix(suffix), folder / f"model{suffix}")
    return folder / "model.safetensors"


def test_a_save_stamps_one_fresh_id_into_both_files(saved: Path, tmp_path: Path) -> None:
    pair_id = header_id(saved)
    assert pair_id and len(pair_id) == 32 and json_of(saved)[PAIR_ID] == pair_id
    loaded = load_weights(saved)
    assert loaded.meta[PAIR_ID] == pair_id and loaded.meta["temperature"] == 1.0
    # Re-saving loaded weights (meta carries the old id) gets a new id: reusing it would hide an interrupted re-save.
    again = save_weights(loaded.model, tmp_path / "model.safetensors", loaded.meta, half=True)
    assert header_id(again) == json_of(again)[PAIR_ID] != pair_id
    assert load_weights(again).meta[PAIR_ID] == header_id(again)


def test_tensors_of_another_save_beside_the_old_json_are_refused(saved: Path, tmp_path: Path) -> None:
    a = copy_pair(saved, tmp_path / "a")
    b = save_weights(load_weights(saved).model, tmp_path / "b" / "model.safetensors", tiny_meta(temperature=2.0))
    shutil.copy(b, a)  # B's tensors renamed in, A's JSON (temperature 1.0) still there
    with pytest.raises(WeightsError) as caught:
        load_weights(a)
    message = str(caught.value)
    assert message.startswith(f"{a.with_suffix('.json')}: does not belong to {a}")
    assert "pair ids" in message and "interrupted" in message and "re-save or restore both files" in message
    assert load_weights(b).meta["temperature"] == 2.0  # B's own pair is fine


def test_a_save_killed_between_its_two_renames_is_refused(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = copy_pair(saved, tmp_path / "w")
    loaded = load_weights(target)

    def killed(path: Path, payload: object) -> Path:
        raise KeyboardInterrupt  # the process dies after the tensors' rename, before the JSON's

    monkeypatch.setattr(weights_module, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        save_weights(loaded.model, target, tiny_meta(temperature=3.0), half=True)
    assert json_of(target)["temperature"] == 1.0 and header_id(target) != json_of(target)[PAIR_ID]
    with pytest.raises(WeightsError, match="does not belong to"):
        load_weights(target)


def test_files_from_before_pair_ids_still_load(saved: Path, tmp_path: Path) -> None:
    # An older JSON (no pair_id) beside new tensors: nothing to compare, loads as before.
    old_json = copy_pair(saved, tmp_path / "old_json")
    meta = json_of(old_json)
    del meta[PAIR_ID]
    old_json.with_suffix(".json").write_text(json.dumps(meta))
    assert PAIR_ID not in load_weights(old_json).meta
    # Older tensors (header with "format" only, as the committed weights/model.safetensors) beside a JSON with an id.
    old_tensors = copy_pair(saved, tmp_path / "old_tensors")
    save_file(load_file(str(old_tensors)), str(old_tensors), metadata={"format": FORMAT})
    assert header_id(old_tensors) is None and load_weights(old_tensors).meta[PAIR_ID] == header_id(saved)
    # Both old.
    shutil.copy(old_json.with_suffix(".json"), old_tensors.with_suffix(".json"))
    reference = load_weights(saved).model.state_dict()
    state = load_weights(old_tensors).model.state_dict()
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_a_json_only_rewrite_keeps_the_pair(saved: Path, tmp_path: Path) -> None:
    """As `serving.fit_context` and `ship_default`'s --add-context/--refresh-ood rewrite model.json: the
    loaded meta (pair id included) plus new fields, tensors untouched."""
    target = copy_pair(saved, tmp_path / "w")
    meta = {k: v for k, v in load_weights(target).meta.items() if k != "format"}
    meta["context"] = {"fields": {}, "temperature": 1.5}
    write_json_atomic(target.with_suffix(".json"), {"format": FORMAT, **meta})
    loaded = load_weights(target)
    assert loaded.meta["context"] == {"fields": {}, "temperature": 1.5} and loaded.meta[PAIR_ID] == header_id(target)


@pytest.fixture(scope="module")
def ship() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ship_default", ROOT / "scripts" / "ship_default.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ship_scripts_card_only_rewrite_keeps_the_pair(saved: Path, ship: ModuleType, tmp_path: Path) -> None:
    """`scripts/ship_default.py --card-only` rewrites model.json (and the card) beside the shipped tensors."""
    shipped = json.loads((ROOT / "weights" / "model.json").read_text())
    shipped["model"] = {k: v for k, v in shipped["model"].items() if k not in ("members", "member_image_sizes")}
    out = tmp_path / "weights"
    target = save_weights(load_weights(saved).model, out / "model.safetensors", shipped, half=True)
    shutil.copy(ROOT / "weights" / "test_report.json", out / "test_report.json")
    ship.rewrite_card(out)
    assert (out / "MODEL_CARD.md").is_file()
    assert load_weights(target).meta[PAIR_ID] == header_id(target)


def test_a_file_that_is_not_safetensors_is_named_as_such(tmp_path: Path) -> None:
    table = tmp_path / "metadata.csv"
    table.write_text("image_id,dx\n")
    with pytest.raises(WeightsError, match=r"metadata\.csv: not a weights file \(name a \.safetensors file"):
        load_weights(table)


@pytest.mark.parametrize("prior", [0, "", False, []])
def test_an_empty_or_false_log_prior_is_refused_not_taken_as_absent(saved: Path, tmp_path: Path, prior: object) -> None:
    """`if prior and …` let 0, "", false and [] through as "no prior": served without the balanced correction."""
    target = copy_pair(saved, tmp_path / "w")
    meta = json_of(target)
    target.with_suffix(".json").write_text(json.dumps({**meta, "log_prior": prior}))
    message = f"field 'log_prior' must list one number per class (7), got {prior}"
    with pytest.raises(WeightsError, match=re.escape(message)):
        load_weights(target)
    for accepted in (None, [0.0] * 7):  # null (no prior) and a real one still load
        target.with_suffix(".json").write_text(json.dumps({**meta, "log_prior": accepted}))
        assert load_weights(target).meta["log_prior"] == accepted


def test_weak_validation_names_chance_level_and_too_few_validation_images() -> None:
    """Weights whose cut-offs rest on a handful of validation images, or which rank no better than chance there,
    are named; well-validated weights and JSON that records neither figure are not."""
    weak = weights_module.weak_validation
    assert weak({"val_metrics": {"val_auroc": 0.913, "n_val": 1503}}) is None
    assert weak({}) is None and weak({"val_metrics": "garbled"}) is None
    few = weak({"val_metrics": {"val_auroc": 0.8, "n_val": 16}})
    assert few is not None and "only 16 validation images" in few and "chance" not in few
    chance = weak({"val_metrics": {"val_auroc": 0.491, "n_val": 1503}})
    assert chance is not None and "0.491, no better than chance" in chance and "only" not in chance
    both = weak({"val_metrics": {"val_auroc": 0.5, "n_val": weights_module.FEW_VALIDATION_IMAGES - 1}})
    assert both is not None and "chance" in both and "only 199" in both
    assert weak({"val_metrics": {"val_auroc": 0.51, "n_val": weights_module.FEW_VALIDATION_IMAGES}}) is None
