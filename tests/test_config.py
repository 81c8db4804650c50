"""Config overrides from the command line and the app: KEY=VALUE items for an augmentation pipeline, read as
each field's type, checked as a whole, and refused with a message naming the flag, item and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermai import cli
from dermai.config import AugmentConfig, augment_overrides, override_augment, simclr_augment_config


def test_overrides_are_read_as_each_fields_type() -> None:
    cfg = override_augment(AugmentConfig(), ["hair_p=0.2", "crop_scale=0.5, 1.0", "color_constancy=true"])
    assert (cfg.hair_p, cfg.crop_scale, cfg.color_constancy) == (0.2, (0.5, 1.0), True)
    assert cfg.hue == AugmentConfig().hue  # untouched fields keep their defaults
    assert override_augment(cfg, ["color_constancy=off"]).color_constancy is False


@pytest.mark.parametrize("base", [AugmentConfig(), simclr_augment_config()])
def test_the_apps_items_rebuild_the_same_config(base: AugmentConfig) -> None:
    changed = override_augment(base, ["rotation_degrees=90", "blur_sigma=0.2,1.5", "vignette_p=0.35", "hue=0"])
    items = augment_overrides(changed, base)
    assert items == ["rotation_degrees=90.0", "hue=0.0", "blur_sigma=0.2,1.5", "vignette_p=0.35"]
    assert override_augment(base, items) == changed
    assert augment_overrides(base, base) == []


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("hair_p=1.5", "hair_p must be a probability in \\[0, 1\\], got 1.5"),
        ("hairp=0.2", "'hairp=0.2': unknown field 'hairp'"),
        ("hair_p", "'hair_p': expected KEY=VALUE"),
        ("hair_p=lots", "hair_p is a number, got 'lots'"),
        ("crop_scale=0.5", "crop_scale takes 2 comma-separated numbers"),
        ("crop_scale=0.9,0.5", "crop_scale must be two numbers 0 < low ≤ high"),
        ("crop_scale=0.5,1.5", "crop_scale is a fraction of the image area"),
        ("color_constancy=maybe", "color_constancy is true or false"),
        ("hue=0.7", "hue must be in \\[0, 0.5\\]"),
        ("brightness=-1", "brightness must be 0 or more"),
        ("brightness=nan", "brightness must be finite"),
        ("std=0.2,0,0.2", "std above 0"),
    ],
)
def test_bad_overrides_are_refused_by_name(item: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        override_augment(AugmentConfig(), [item], "--augment")


def test_the_cli_applies_each_pipelines_overrides_and_refuses_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli.build_parser().parse_args(
        ["train", "--out", str(tmp_path), "--augment", "hair_p=0.3", "--simclr-augment", "grayscale_p=0"]
    )
    cfg = cli._run_config(args, "both")
    assert cfg.augment.hair_p == 0.3 and cfg.simclr_augment.grayscale_p == 0.0
    assert cfg.simclr_augment.rotation_degrees == simclr_augment_config().rotation_degrees
    assert cli.main(["finetune", "--out", str(tmp_path / "run"), "--simclr-augment", "blur_p=2"]) == 2
    assert "--simclr-augment: blur_p must be a probability" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run folder is made
