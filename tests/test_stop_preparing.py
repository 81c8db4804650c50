"""A run's STOP file ends it while it still prepares its data (the pixel cache's first decode takes minutes on a
CPU): before training starts, with no half-written cache, reading "stopped", and the Training page offers that Stop
for a run started from the command line, whose process the app does not kill."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from dermai import cli, jobs, pixel_cache, run_status, run_table
from dermai.pixel_cache import PreparationStopped, load_pixels
from dermai.train import (
    JOB_LOG,
    OWNER_FILE,
    STOP_FILE,
    Trainer,
    foreign_entry,
    job_event_line,
    read_metrics,
    train,
)
from dermai.ui import runs_view
from tests.conftest import ham_rows, make_folder
from tests.test_app_pages import alerts, app_env, assert_clean, page  # noqa: F401 (app_env: a fixture)
from tests.test_jobs import held
from tests.test_train import tiny_config


def cache_files(folder: Path) -> list[str]:
    """What a cache folder holds, temporaries included."""
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def stop_after(run: Path, images: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the pixel decode write the run's STOP file once `images` images are decoded, as the page's Stop does
    while a first decode runs; the decoded paths are recorded."""
    decoded: list[str] = []
    real = pixel_cache.decode_image

    def decode(path: str, size: object) -> np.ndarray:
        decoded.append(path)
        if len(decoded) == images:
            (run / STOP_FILE).touch()
        return real(path, size)

    monkeypatch.setattr(pixel_cache, "decode_image", decode)
    return decoded


def test_a_stop_during_the_pixel_decode_leaves_no_cache_and_a_later_decode_completes(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "data", ham_rows(2, 1))
    paths = [str(p) for p in sorted((folder / "imgs" / "nested").glob("*.jpg"))]
    cache = tmp_path / "cache"
    asked: list[int] = []
    with pytest.raises(PreparationStopped, match="stopped after 3 of 14 images"):
        load_pixels(paths, 16, cache, workers=1, should_stop=lambda: asked.append(1) or len(asked) > 3)
    assert cache_files(cache) == []  # neither the cache file nor its temporary
    pixels = load_pixels(paths, 16, cache, workers=1, should_stop=lambda: False)
    assert pixels.shape == (14, 16, 16, 3) and pixels[-1].any()
    assert len(cache_files(cache)) == 1 and cache_files(cache)[0].startswith("pixels-")


def test_a_new_run_stopped_while_it_decodes_ends_before_training_and_its_folder_starts_again(
    ham_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run from a terminal (no job log): it ends "stopped" with nothing written, so its folder, made by the
    trainer, goes with it and the same command starts it again."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DERMAI_CACHE", str(cache))
    run = tmp_path / "runs" / "cli-run"
    decoded = stop_after(run, 5, monkeypatch)
    result = train(tiny_config(ham_root), run)
    assert (result.status, result.weights, result.best_score) == ("stopped", None, None)
    assert 5 <= len(decoded) < 64  # ended within the decode, not after it
    assert cache_files(cache) == []  # no half-written pixel cache, no temporary
    assert not run.exists()  # no config, manifest, metrics or STOP left: nothing to refuse a rerun
    assert Trainer(tiny_config(ham_root), run).run_dir == run  # the same --out is a new run folder again


def test_the_command_line_exits_as_for_a_stop_when_stopped_before_its_data_is_decoded(
    ham_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "early"
    run.mkdir()
    (run / STOP_FILE).touch()  # written while the process started
    argv = ["train", "--data", str(ham_root), "--out", str(run), "--limit", "64", "--image-size", "32", "--quiet"]
    assert cli.main(argv) == 3  # as a stop after a step: not finished
    out, err = capsys.readouterr()
    assert json.loads(out.splitlines()[-1])["status"] == "stopped"
    assert "stopped before training started (STOP file); nothing was trained" in err
    assert os.listdir(run) == []  # the STOP honoured, the folder (the user's) as it was before
    assert foreign_entry(run) is None


def test_an_app_job_stopped_before_training_reads_stopped_and_starts_again_by_its_name(
    ham_root: Path, tmp_path: Path
) -> None:
    """A job the app launched has a job log: the trainer notes the stop there, so the run reads "stopped" (by the
    user), not "failed", and its name may be started again."""
    runs = tmp_path / "runs"
    run = runs / "early"
    run.mkdir(parents=True)
    (run / JOB_LOG).write_bytes(job_event_line(jobs.STARTED))  # as `jobs._launch` writes it
    (run / STOP_FILE).touch()
    assert train(tiny_config(ham_root), run).status == "stopped"
    assert sorted(os.listdir(run)) == sorted([JOB_LOG, OWNER_FILE]) and read_metrics(run) == []
    status = run_status.run_status(run, runs)
    assert status.status == "stopped"
    assert (
        status.note
        == "Stopped by the user while it prepared its data: nothing was trained. Start it again by its name."
    )
    row = run_table.list_runs(runs).iloc[0]
    assert (row["status"], row["problem"]) == ("stopped", None)
    assert jobs._new_run_dir(runs, "early") == run  # the Training form may start it again under that name


def test_a_resumed_run_stopped_while_it_prepares_stays_stopped_and_resumable(ham_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "halfway"
    cfg = tiny_config(ham_root)
    first = train(cfg, run, callback=lambda record: record.get("kind") != "step")  # stopped at its first step
    assert first.status == "stopped"
    checkpoint = (run / "checkpoints" / "last.pt").read_bytes()
    (run / STOP_FILE).touch()
    again = train(cfg, run, resume=True)
    assert (again.status, again.weights) == ("stopped", run / "model.safetensors")
    last = read_metrics(run)[-1]
    assert (last["kind"], last["status"], last["before_training"]) == ("status", "stopped", True)
    assert (run / "checkpoints" / "last.pt").read_bytes() == checkpoint  # nothing trained, nothing saved over
    assert not (run / STOP_FILE).exists()  # honoured: the next resume does not stop on it again
    status = run_status.run_status(run, run.parent)
    assert (status.status, status.note) == ("stopped", None)
    assert jobs.resumable(run)


def test_the_training_page_stops_a_command_line_run_preparing_its_data(app_env: Path) -> None:  # noqa: F811
    """A terminal's trainer with no records yet had no control at all; it now has Stop, which writes its STOP
    file (the trainer ends before it trains) and signals no process."""
    runs = Path(jobs.runs_dir())
    run = runs / "cli-prep"
    run.mkdir(parents=True)
    holder = held(run)
    try:
        at = page("training").run()
        assert_clean(at)
        captions = [c.value for c in at.caption]
        assert f"Started from the command line (pid {holder.pid}): a job started here is refused until it ends." in (
            captions
        )
        assert "Preparing data (the first run at a new image size decodes the pixel cache)…" in captions
        assert "Cancel" not in [b.label for b in at.button]
        stop = next(b for b in at.button if b.label == "Stop")
        assert stop.help == runs_view.PREPARING_STOP_HELP
        stop.click()
        at.run()
        assert_clean(at)
        assert (run / STOP_FILE).exists()
        assert holder.poll() is None  # the app killed nothing: the trainer ends itself on its STOP
    finally:
        holder.kill()
        holder.wait()
    at.run()
    assert "No training job is running." in alerts(at)
