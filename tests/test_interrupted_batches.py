"""Interrupted and killed work keeps what it finished and leaves nothing that misleads: a batch stopped by
Ctrl-C or an error, a hard-killed process's cache temporaries, a half-renamed evaluation, a lock that could
not be written. Interruption is simulated by raising KeyboardInterrupt from a patched function."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from dermai import cli, jobs
from dermai.pixel_cache import load_pixels, prune_cache
from dermai.predict import Predictor
from tests.test_jobs import harmless
from tests.test_predict import lesion_like, png_bytes, weights_path  # noqa: F401 (weights_path is a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _clinic(folder: Path, n: int) -> list[Path]:
    """`n` lesion images in `folder`, named so that they are scored in this order."""
    folder.mkdir()
    images = [folder / f"{i}.png" for i in range(n)]
    for i, image in enumerate(images):
        image.write_bytes(png_bytes(lesion_like(120 + i)))
    return images


def _stop_at_call(monkeypatch: pytest.MonkeyPatch, n: int, error: BaseException) -> None:
    """Make the `n`-th `Predictor.predict` of the batch raise `error`, as a Ctrl-C or a crash there would."""
    real, calls = Predictor.predict, []

    def predict(self: Predictor, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == n:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict", predict)


@pytest.mark.parametrize(("error", "code"), [(KeyboardInterrupt(), 130), (RuntimeError("CUDA out of memory"), 2)])
def test_a_stopped_predict_batch_writes_the_rows_it_scored_as_a_partial_worklist(
    weights_path: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    code: int,
) -> None:
    images = _clinic(tmp_path / "clinic", 4)
    out = tmp_path / "worklist.csv"
    _stop_at_call(monkeypatch, 3, error)
    assert cli.main(["predict", str(tmp_path / "clinic"), "--weights", str(weights_path), "--csv", str(out)]) == code
    err = capsys.readouterr().err
    table = pd.read_csv(out)
    assert sorted(table["image"][:2]) == [str(images[0]), str(images[1])]
    assert table["p_malignant"][:2].notna().all() and list(table["rank"]) == [1, 2, 3, 4]
    assert list(table["image"][2:]) == [str(images[2]), str(images[3])]  # the ones it never reached
    assert list(table["tier"][2:]) == ["not scored"] * 2 and table["p_malignant"][2:].isna().all()
    assert table["notes"][3] == "the batch stopped before this image: rerun to score it"
    assert f"wrote {out}: PARTIAL worklist, 2 of 4 images" in err and "rerun" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clinic", "worklist.csv"]  # no temporary left behind


def test_a_batch_stopped_before_any_score_writes_no_worklist(
    weights_path: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _clinic(tmp_path / "clinic", 2)
    out = tmp_path / "worklist.csv"
    out.write_text("the user's earlier worklist\n")
    _stop_at_call(monkeypatch, 1, KeyboardInterrupt())
    assert cli.main(["predict", str(tmp_path / "clinic"), "--weights", str(weights_path), "--csv", str(out)]) == 130
    assert out.read_text() == "the user's earlier worklist\n"  # an empty table would replace it with nothing
    assert "PARTIAL" not in capsys.readouterr().err


def _aged(path: Path, size: int, age_s: float) -> Path:
    """A file of `size` bytes last written `age_s` seconds ago."""
    path.write_bytes(b"\0" * size)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_cache_temporaries_of_a_killed_decode_are_pruned_once_abandoned_never_while_fresh(tmp_path: Path) -> None:
    """A decode killed outright (SIGKILL, out of memory) left its `.pixels-….npy.XXXX.tmp`, which `prune_cache`
    (globbing `*.npy`) kept forever; one written a minute ago may be another process's decode in progress."""
    cache = tmp_path / "cache"
    cache.mkdir()
    day = 24 * 3600
    abandoned = _aged(cache / ".pixels-abc123-96px.npy.k3j2x9.tmp", 1000, 2 * day)
    abandoned_masks = _aged(cache / ".masks-abc123-96px.npy.q8w7e6.tmp", 1000, 2 * day)
    in_progress = _aged(cache / ".pixels-def456-96px.npy.a1b2c3.tmp", 1000, 60)
    not_ours = [_aged(cache / name, 10, 2 * day) for name in (".notes.tmp", "pixels-x.tmp", ".config.json.z9.tmp")]
    kept = _aged(cache / "pixels-abc123-64px.npy", 10, 2 * day)
    removed = prune_cache(cache, cache / "pixels-new-96px.npy", limit=10**9)
    assert sorted(removed) == sorted([abandoned, abandoned_masks])
    assert not abandoned.exists() and not abandoned_masks.exists()
    assert in_progress.exists() and kept.exists() and all(p.exists() for p in not_ours)


def test_a_new_pixel_cache_clears_a_killed_decodes_abandoned_temporary(tmp_path: Path) -> None:
    cache, images = tmp_path / "cache", _clinic(tmp_path / "clinic", 2)
    cache.mkdir()
    abandoned = _aged(cache / ".pixels-abc123-32px.npy.k3j2x9.tmp", 1000, 3 * 24 * 3600)
    pixels = load_pixels([str(p) for p in images], 32, cache_dir=cache)
    assert pixels.shape == (2, 32, 32, 3) and not abandoned.exists()
    assert [p.name.startswith("pixels-") for p in cache.iterdir()] == [True]


def test_a_job_lock_that_cannot_be_written_stops_the_trainer_it_would_have_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock was written after the trainer started: when that write failed, the trainer trained on behind an
    empty lock that no page could show, stop or cancel."""
    runs, started = tmp_path / "runs", []
    real_popen = subprocess.Popen

    def popen(*args: object, **kwargs: object) -> subprocess.Popen:
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    def full_disk(path: Path, payload: object) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: harmless(60))
    monkeypatch.setattr(jobs, "write_json_atomic", full_disk)
    try:
        refused = r"cannot record the job \(No space left on device\); its trainer was stopped at its start"
        with pytest.raises(jobs.JobError, match=refused):
            jobs.start_job("both", {"image_size": 64}, runs, name="unrecorded")
        assert len(started) == 1 and started[0].poll() is not None  # ended, not training untracked
    finally:
        for process in started:
            process.kill()
            process.wait()
    assert not (runs / jobs.LOCK_NAME).exists() and jobs.current_job(runs) is None
    assert "could not record this job" in (runs / "unrecorded" / jobs.LOG_NAME).read_text()
