"""What a writer killed outright (SIGKILL, out of memory) leaves: the temporary of an atomic write
(`safe_write.atomic_target`), which no clean-up code ran to remove. It is the writer's own file, not the user's, so it
must not make the next run refuse its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dermai.config import RunConfig
from dermai.experiment import _experiment_entry
from dermai.safe_write import atomic_leftover, atomic_target
from dermai.train import Trainer, TrainingError, clear_unsaved_run, foreign_entry, stopped_unsaved


def leftover(folder: Path, name: str) -> Path:
    path = folder / f".{name}.k3j2x9.tmp"  # the shape mkstemp gives it
    path.write_text('{"config": {"da')
    return path


def test_an_atomic_temporary_is_recognised_by_its_name(tmp_path: Path) -> None:
    with atomic_target(tmp_path / "config.json") as tmp:
        assert atomic_leftover(tmp.name)
    assert not any(map(atomic_leftover, ["config.json", ".owner", "notes.tmp", ".hidden", "job.log"]))


def test_a_new_run_starts_in_a_folder_a_killed_run_left_only_a_temporary_in(tmp_path: Path) -> None:
    """A run killed while writing its first file (config.json) left only `.config.json.XXXX.tmp`; rerunning
    the same command said ".config.json.k3j2x9.tmp: exists already … choose another --out folder"."""
    out = tmp_path / "run"
    out.mkdir()
    leftover(out, "config.json")
    assert foreign_entry(out) is None
    Trainer(RunConfig(), out)  # not refused
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match=rf"^{out / 'notes.txt'}: exists already"):
        Trainer(RunConfig(), out)


def test_a_run_killed_before_its_first_checkpoint_with_a_temporary_is_still_called_stopped(tmp_path: Path) -> None:
    """Killed while writing metrics.jsonl's temporary or the first checkpoint: the "stopped before its first
    checkpoint" advice (and an experiment's clean-up of such a run) applies as without the temporary."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"config": {}, "manifest_sha256": "0" * 64}))
    (out / "manifest.csv").write_text("")
    stray = leftover(out, "manifest.csv")
    assert stopped_unsaved(out)
    with pytest.raises(TrainingError, match="stopped before its first checkpoint"):
        Trainer(RunConfig(), out)
    assert clear_unsaved_run(out)
    assert not stray.exists() and list(out.iterdir()) == []


def test_an_experiment_takes_a_temporary_for_its_own_and_a_users_file_not(tmp_path: Path) -> None:
    assert _experiment_entry(".summary.csv.a1b2c3.tmp") and _experiment_entry("seed3")
    assert not _experiment_entry("notes.txt")
